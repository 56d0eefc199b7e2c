// The operator's dashboard: sign in with an API token, then hosts, workloads by host,
// operations and live events, refreshed on every event (debounced) and by polling as a
// fallback; the actions the signed-in role may take. No framework, no build step.

import { Api, ApiError, EventFollower } from "./api.js";
import { el, replace } from "./dom.js";
import { eventItem, hostsView, operationsView, workloadsView } from "./views.js";

const TOKEN_KEY = "clustercore.token";
const EVENTS_SHOWN = 200;
const DEBOUNCE_MS = 250;
const POLL_MS = 5000; // the fallback when events do not come
const POLL_OPEN_MS = 1000; // while an operation runs: its progress is not an event
const RANK = { viewer: 0, operator: 1, admin: 2 };
const $ = (id) => document.getElementById(id);

const state = {
  api: null, me: null, follower: null, hosts: [], workloads: [], operations: [],
  shown: { hosts: "", workloads: "", operations: "" }, debounce: 0, poll: 0,
  refreshing: false, again: false,
};
const ui = { stopUnmovable: new Set(), targets: new Map(), busy: new Set() };

function say(text, kind = "info") {
  const line = $("message");
  line.textContent = text;
  line.dataset.kind = kind;
  line.hidden = !text;
}

function fail(error) {
  if (error instanceof ApiError && error.status === 401) {
    signOut(`Signed out: ${error.describe()}`);
    return;
  }
  say(error instanceof ApiError ? error.describe() : `Error: ${error.message}`, "error");
}

function context() {
  const rank = RANK[state.me?.role] ?? -1;
  return {
    role: state.me?.role ?? "nobody", ui,
    may: { operate: rank >= RANK.operator, admin: rank >= RANK.admin },
    act: {
      maintenance: (host, stopUnmovable) => act(`maintenance-${host}`, "POST", `/hosts/${enc(host)}/maintenance`,
        { stop_unmovable: stopUnmovable }, (op) => `Maintenance of ${host} requested (operation ${short(op.id)})`),
      cancelMaintenance: (host) => act(`cancel-maintenance-${host}`, "DELETE", `/hosts/${enc(host)}/maintenance`,
        undefined, () => `Maintenance of ${host} cancelled`),
      activate: (host) => act(`activate-${host}`, "POST", `/hosts/${enc(host)}/activate`, undefined,
        (h) => `${host} activated: ${h.state}`),
      migrate: (workload, target) => act(`migrate-${workload}`, "POST", `/workloads/${enc(workload)}/migrate`,
        target ? { target } : {}, (op) => `Migration of ${workload} to ${target || "the scheduler's choice"} `
          + `requested (operation ${short(op.id)})`),
      cancelOperation: (id) => act(`cancel-${id}`, "POST", `/operations/${enc(id)}/cancel`, undefined,
        (op) => `Cancel of ${op.kind} ${op.target} requested`),
    },
  };
}

const enc = encodeURIComponent;
const short = (id) => String(id).slice(0, 8);

/** Run one action (its button disabled meanwhile); the API's refusal goes to the message line. */
async function act(busyId, method, path, body, describe) {
  if (ui.busy.has(busyId)) return;
  ui.busy.add(busyId);
  render(true);
  try {
    const answer = await state.api.call(method, path, body);
    say(describe(answer || {}), "ok");
  } catch (error) {
    fail(error);
  } finally {
    ui.busy.delete(busyId);
    render(true);
    refresh();
  }
}

function render(force = false) {
  const ctx = context();
  const parts = [
    ["hosts", state.hosts, () => hostsView(state.hosts, ctx)],
    ["workloads", [state.workloads, state.hosts], () => workloadsView(state.workloads, state.hosts, ctx)],
    ["operations", state.operations, () => operationsView(state.operations, ctx)],
  ];
  for (const [id, data, view] of parts) {
    const key = JSON.stringify(data);
    if (!force && key === state.shown[id]) continue; // unchanged: keep the DOM (and the focus, the choices)
    state.shown[id] = key;
    replace($(id), view());
  }
}

async function refresh() {
  if (!state.api) return;
  if (state.refreshing) {
    state.again = true;
    return;
  }
  state.refreshing = true;
  const api = state.api;
  try {
    const [hosts, workloads, operations] = await Promise.all([
      api.call("GET", "/hosts"), api.call("GET", "/workloads"), api.call("GET", "/operations")]);
    if (api !== state.api) return; // signed out meanwhile
    state.hosts = hosts.hosts;
    state.workloads = workloads.workloads;
    state.operations = operations.operations;
    render();
  } catch (error) {
    if (api === state.api) fail(error);
  } finally {
    state.refreshing = false;
    if (state.again) {
      state.again = false;
      soon();
    }
    schedulePoll();
  }
}

/** A refresh shortly: a burst of events makes one. */
function soon() {
  clearTimeout(state.debounce);
  state.debounce = setTimeout(refresh, DEBOUNCE_MS);
}

function schedulePoll() {
  clearTimeout(state.poll);
  if (!state.api) return;
  const open = state.operations.some((op) => !["Succeeded", "Failed", "Cancelled"].includes(op.state));
  state.poll = setTimeout(refresh, open ? POLL_OPEN_MS : POLL_MS);
}

function showEvent(event) {
  const list = $("events");
  list.prepend(eventItem(event));
  while (list.children.length > EVENTS_SHOWN) list.lastElementChild.remove();
}

function live(on, text) {
  const badge = $("live");
  badge.dataset.live = on ? "on" : "off";
  badge.textContent = text;
}

async function follow(api) {
  let recent = [];
  try {
    recent = (await api.call("GET", `/events?limit=${EVENTS_SHOWN}`)).events;
  } catch (error) {
    fail(error);
  }
  if (api !== state.api) return;
  replace($("events"), recent.slice().reverse().map(eventItem));
  const last = recent[recent.length - 1];
  state.follower = new EventFollower(api, {
    onEvent: (event) => { showEvent(event); soon(); },
    onStatus: live,
    onRefused: (error) => { if (api === state.api) fail(error); },
    onReconnected: soon,
  });
  state.follower.start(last?.revision ?? 0, last?.time ?? 0);
}

async function signIn(token, remembered = false) {
  const api = new Api(token);
  $("signin-button").disabled = true;
  try {
    const me = await api.call("GET", "/whoami");
    sessionStorage.setItem(TOKEN_KEY, token);
    state.api = api;
    state.me = me;
    $("token").value = "";
    $("whoami").replaceChildren(el("span", { id: "me-name" }, me.name), " ",
      el("span", { id: "me-role", class: "role", dataset: { role: me.role } }, me.role));
    $("whoami").hidden = false;
    $("signout").hidden = false;
    $("signin-box").hidden = true;
    $("dashboard").hidden = false;
    say(remembered ? "" : `Signed in as ${me.name} (${me.role})`, "ok");
    state.shown = { hosts: "", workloads: "", operations: "" };
    await refresh();
    follow(api);
  } catch (error) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("signin-box").hidden = false;
    say(error instanceof ApiError ? `Sign-in refused: ${error.describe()}` : `Sign-in failed: ${error.message}`,
      "error");
  } finally {
    $("signin-button").disabled = false;
  }
}

function signOut(message = "") {
  state.follower?.stop();
  clearTimeout(state.poll);
  clearTimeout(state.debounce);
  Object.assign(state, { api: null, me: null, follower: null, hosts: [], workloads: [], operations: [] });
  ui.stopUnmovable.clear();
  ui.targets.clear();
  sessionStorage.removeItem(TOKEN_KEY);
  for (const id of ["hosts", "workloads", "operations", "events"]) $(id).replaceChildren();
  $("whoami").hidden = true;
  $("signout").hidden = true;
  $("dashboard").hidden = true;
  $("signin-box").hidden = false;
  live(false, "not connected");
  say(message, message ? "error" : "info");
  $("token").focus();
}

$("signin").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (token) signIn(token);
});
$("signout").addEventListener("click", () => signOut());
document.addEventListener("visibilitychange", () => { if (!document.hidden) soon(); });

const kept = sessionStorage.getItem(TOKEN_KEY);
if (kept) {
  $("signin-box").hidden = true; // until the kept token is checked (shown again if refused)
  say("Signing in…");
  signIn(kept, true);
} else {
  $("token").focus();
}
