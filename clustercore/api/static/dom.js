// Building DOM nodes from data without ever parsing data as HTML: every string becomes a
// text node or an attribute value (never innerHTML), so a host, workload or event carrying
// markup shows it as text.

const PROPERTIES = new Set(["checked", "disabled", "value", "selected", "hidden"]);

/** el("button", {class: "x", dataset: {host: "h1"}, onclick: f}, "text", child...) */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") {
      for (const [name, v] of Object.entries(value)) node.dataset[name] = String(v);
    } else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (PROPERTIES.has(key)) node[key] = value;
    else if (value !== false) node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Replace the children of ``parent`` with ``nodes``, keeping the focus on the element of
 * the same id when there was one (a re-render does not throw the keyboard user out). */
export function replace(parent, ...nodes) {
  const focused = document.activeElement;
  const id = focused && parent.contains(focused) ? focused.id : "";
  parent.replaceChildren(...nodes.flat(Infinity));
  if (id) document.getElementById(id)?.focus();
}

/** Seconds since the epoch as a local date and time. */
export function when(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  const d = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
    + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
