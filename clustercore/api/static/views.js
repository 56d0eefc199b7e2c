// The dashboard's views: plain functions from the API's lists to DOM nodes. ``ctx`` says
// what the signed-in role may do (ctx.may.operate, ctx.may.admin), keeps what the operator
// chose between two renders (ctx.ui) and carries the actions (ctx.act).

import { el, when } from "./dom.js";

// Host states from which each action is possible (clustercore.lifecycle's table).
const MAINTENANCE_FROM = new Set(["Up", "NonOperational", "InstallFailed", "Down"]);
const ACTIVATE_FROM = new Set(["Maintenance", "NonOperational"]);
const CANCELLABLE_KINDS = new Set(["maintenance", "migrate", "upgrade"]);
const DONE = new Set(["Succeeded", "Failed", "Cancelled"]);
export const OPERATIONS_SHOWN = 30;

const badge = (state, extra = {}) => el("span", { class: "state", dataset: { state }, ...extra }, state);

function denied(ctx, needs) {
  return `needs role ${needs} (signed in as ${ctx.role})`;
}

/** A button that runs ``action`` once at a time, disabled when the role may not. */
function actionButton(ctx, { id, label, action, allowed, needs, data, run, title }) {
  const busy = ctx.ui.busy.has(id);
  return el("button", {
    type: "button", id, class: "action", dataset: { action, ...data },
    disabled: !allowed || busy, title: allowed ? title : denied(ctx, needs),
    onclick: () => run(),
  }, busy ? `${label}…` : label);
}

export function hostsView(hosts, ctx) {
  if (!hosts.length) return el("p", { class: "empty" }, "No hosts.");
  const head = el("tr", {}, ["Host", "State", "Reason", "Workloads", "Actions"].map((t) => el("th", { scope: "col" }, t)));
  const rows = hosts.map((host) => {
    const name = host.name;
    const actions = [];
    if (MAINTENANCE_FROM.has(host.state)) {
      const boxId = `stop-unmovable-${name}`;
      actions.push(actionButton(ctx, {
        id: `maintenance-${name}`, label: "Maintenance", action: "maintenance", allowed: ctx.may.operate,
        needs: "operator", data: { host: name }, title: `drain ${name} into Maintenance`,
        run: () => ctx.act.maintenance(name, ctx.ui.stopUnmovable.has(name)),
      }));
      actions.push(el("label", { class: "check", for: boxId },
        el("input", {
          type: "checkbox", id: boxId, dataset: { option: "stop-unmovable", host: name },
          checked: ctx.ui.stopUnmovable.has(name), disabled: !ctx.may.operate,
          onchange: (e) => (e.target.checked ? ctx.ui.stopUnmovable.add(name) : ctx.ui.stopUnmovable.delete(name)),
        }), "stop unmovable"));
    }
    if (host.state === "PreparingForMaintenance") {
      actions.push(actionButton(ctx, {
        id: `cancel-maintenance-${name}`, label: "Cancel maintenance", action: "cancel-maintenance",
        allowed: ctx.may.operate, needs: "operator", data: { host: name }, title: `bring ${name} back Up`,
        run: () => ctx.act.cancelMaintenance(name),
      }));
    }
    if (ACTIVATE_FROM.has(host.state)) {
      actions.push(actionButton(ctx, {
        id: `activate-${name}`, label: "Activate", action: "activate", allowed: ctx.may.admin, needs: "admin",
        data: { host: name }, title: `bring ${name} back into service`, run: () => ctx.act.activate(name),
      }));
    }
    const workloads = host.workloads || [];
    return el("tr", { dataset: { host: name, state: host.state } },
      el("th", { scope: "row" }, name),
      el("td", { dataset: { field: "state" } }, badge(host.state, { title: `since ${when(host.since)}` })),
      el("td", { dataset: { field: "reason" }, class: "reason" }, host.reason || ""),
      el("td", { dataset: { field: "workloads" } }, workloads.length ? workloads.join(", ") : "—"),
      el("td", { class: "actions" }, actions.length ? actions : el("span", { class: "hint" }, "—")));
  });
  return el("table", { class: "grid", id: "hosts-table" }, el("thead", {}, head), el("tbody", {}, rows));
}

function migrateControls(workload, hosts, ctx) {
  const name = workload.name;
  const here = workload.placement?.host;
  const selectId = `migrate-target-${name}`;
  const chosen = ctx.ui.targets.get(name) ?? "";
  const options = [el("option", { value: "", selected: chosen === "" }, "scheduler picks")];
  for (const host of hosts) {
    if (host.name === here || host.state !== "Up") continue;
    options.push(el("option", { value: host.name, selected: chosen === host.name }, host.name));
  }
  const running = workload.placement?.state === "Running";
  return [
    el("label", { class: "sr-only", for: selectId }, `migration target for ${name}`),
    el("select", {
      id: selectId, dataset: { option: "migrate-target", workload: name }, disabled: !ctx.may.operate || !running,
      onchange: (e) => ctx.ui.targets.set(name, e.target.value),
    }, options),
    actionButton(ctx, {
      id: `migrate-${name}`, label: "Migrate", action: "migrate", allowed: ctx.may.operate && running,
      needs: "operator", data: { workload: name }, title: `move ${name} (running on ${here})`,
      run: () => ctx.act.migrate(name, ctx.ui.targets.get(name) || null),
    }),
  ];
}

export function workloadsView(workloads, hosts, ctx) {
  if (!workloads.length) return el("p", { class: "empty" }, "No workloads.");
  const groups = new Map(hosts.map((h) => [h.name, []]));
  const unplaced = [];
  for (const w of workloads) {
    const host = w.placement?.host;
    if (host && groups.has(host)) groups.get(host).push(w);
    else if (host) groups.set(host, [w]);
    else unplaced.push(w);
  }
  const states = new Map(hosts.map((h) => [h.name, h.state]));
  const sections = [];
  const section = (key, title, list) => {
    const rows = list.map((w) => {
      const p = w.placement;
      const where = p ? [p.target ? `→ ${p.target}` : "", p.reason || ""].filter(Boolean).join(" · ") : "not placed";
      return el("tr", { dataset: { workload: w.name, host: p?.host ?? "", state: p?.state ?? "Stopped" } },
        el("th", { scope: "row" }, w.name),
        el("td", {}, w.flavor),
        el("td", { dataset: { field: "placement" } }, badge(p?.state ?? "Stopped", { title: p ? `since ${when(p.since)}` : "" })),
        el("td", { class: "reason", title: where }, where),
        el("td", { class: "actions" }, migrateControls(w, hosts, ctx)));
    });
    sections.push(el("section", { class: "group", dataset: { group: key } },
      el("h3", {}, title, key && states.has(key) ? [" ", badge(states.get(key))] : [],
        el("span", { class: "count" }, ` ${list.length} workload${list.length === 1 ? "" : "s"}`)),
      list.length ? el("table", { class: "grid" }, el("tbody", {}, rows)) : el("p", { class: "empty" }, "none")));
  };
  for (const [host, list] of groups) section(host, host, list);
  if (unplaced.length) section("", "not placed", unplaced);
  return sections;
}

export function operationsView(operations, ctx) {
  if (!operations.length) return el("p", { class: "empty" }, "No operations yet.");
  const shown = operations.slice(-OPERATIONS_SHOWN).reverse();
  const head = el("tr", {}, ["Operation", "State", "Progress", "Step", "Outcome", ""].map((t) => el("th", { scope: "col" }, t)));
  const rows = shown.map((op) => {
    const percent = Math.max(0, Math.min(100, Math.round(Number(op.progress) || 0)));
    const open = !DONE.has(op.state);
    const cancellable = open && CANCELLABLE_KINDS.has(op.kind);
    const outcome = op.error || op.result || "";
    return el("tr", { dataset: { operation: op.id, kind: op.kind, target: op.target, state: op.state } },
      el("th", { scope: "row", title: `${op.id} by ${op.by} at ${when(op.created)}` }, `${op.kind} ${op.target}`),
      el("td", { dataset: { field: "state" } }, badge(op.state)),
      el("td", { class: "progress" },
        el("progress", { max: "100", value: String(percent), "aria-label": `${op.kind} ${op.target}: ${percent}%` }),
        el("span", { class: "percent", dataset: { field: "percent" } }, `${percent}%`)),
      el("td", { dataset: { field: "step" }, class: "reason" }, op.step || ""),
      el("td", { dataset: { field: "outcome" }, class: op.error ? "reason failed" : "reason" }, outcome),
      el("td", { class: "actions" }, cancellable
        ? actionButton(ctx, {
          id: `cancel-${op.id}`, label: op.cancel ? "Cancelling" : "Cancel", action: "cancel-operation",
          allowed: ctx.may.operate && !op.cancel, needs: "operator", data: { operation: op.id },
          title: op.cancel ? "cancel requested" : `stop this ${op.kind}`, run: () => ctx.act.cancelOperation(op.id),
        })
        : ""));
  });
  return el("table", { class: "grid", id: "operations-table" }, el("thead", {}, head), el("tbody", {}, rows));
}

export function eventItem(event) {
  const change = event.old || event.new ? `${event.old || "∅"} → ${event.new || "∅"}` : "";
  return el("li", { dataset: { revision: event.revision, kind: event.kind, subject: event.subject } },
    el("time", {}, when(event.time)),
    el("span", { class: "kind" }, event.kind),
    el("span", { class: "subject" }, event.subject),
    el("span", { class: "change" }, change),
    el("span", { class: "reason" }, event.reason || ""));
}
