// The API of this manager, called with the signed-in bearer token; the event stream read
// with fetch (EventSource cannot send an Authorization header).

export const PREFIX = "/api/v1";

/** A failed call: the API's {error, message, field}, or what the network said. */
export class ApiError extends Error {
  constructor(status, kind, message, field = null) {
    super(message);
    this.status = status;
    this.kind = kind;
    this.field = field;
  }

  /** One line for the message bar. */
  describe() {
    const field = this.field ? ` (field ${this.field})` : "";
    return `${this.kind}: ${this.message}${field}`;
  }
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  headers(extra = {}) {
    return { Authorization: `Bearer ${this.token}`, ...extra };
  }

  /** The JSON answer of ``method path`` (null for 204); an ApiError otherwise. */
  async call(method, path, body = undefined) {
    const init = { method, cache: "no-store", headers: this.headers({ Accept: "application/json" }) };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(PREFIX + path, init);
    } catch (exc) {
      throw new ApiError(0, "NetworkError", `the manager cannot be reached (${exc.message})`);
    }
    if (response.status === 204) return null;
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (response.ok) return data;
    if (data && typeof data.error === "string") {
      throw new ApiError(response.status, data.error, String(data.message ?? ""), data.field ?? null);
    }
    throw new ApiError(response.status, `HTTP ${response.status}`, text.slice(0, 200) || response.statusText);
  }
}

/** Split server-sent event text into events ({id, data}); returns [events, rest]. */
export function parseEvents(buffer) {
  const held = buffer.endsWith("\r") ? "\r" : ""; // perhaps half of a CRLF: wait for the rest
  const blocks = buffer.slice(0, buffer.length - held.length).replace(/\r\n?/g, "\n").split("\n\n");
  const rest = blocks.pop() + held;
  const events = [];
  for (const block of blocks) {
    let id = null;
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue; // a comment: the server's keep-alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }
    if (data.length) events.push({ id, data: data.join("\n") });
  }
  return [events, rest];
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
});

/**
 * Follows /events/stream: ``onEvent(event)`` for each event, ``onStatus(live, text)`` as
 * the connection comes and goes. It reconnects with a backoff (1 s doubling to 30 s, with
 * jitter). The API resumes by time (``since``), not by Last-Event-ID, so a reconnection asks
 * for the events since the last one seen, and those already seen (by store revision) are
 * dropped. ``onRefused(error)`` when the token is refused (401): it stops then.
 */
export class EventFollower {
  constructor(api, { onEvent, onStatus, onRefused, onReconnected }) {
    this.api = api;
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.onRefused = onRefused;
    this.onReconnected = onReconnected;
    this.controller = new AbortController();
    this.lastRevision = 0;
    this.lastTime = null;
  }

  /** Start after the events already shown (the newest of them: its revision and time). */
  start(lastRevision = 0, lastTime = null) {
    this.lastRevision = lastRevision;
    this.lastTime = lastTime;
    this.run();
  }

  stop() {
    this.controller.abort();
  }

  seen(event) {
    if (typeof event.revision !== "number" || event.revision <= this.lastRevision) return false;
    this.lastRevision = event.revision;
    if (typeof event.time === "number") this.lastTime = event.time;
    return true;
  }

  async run() {
    const signal = this.controller.signal;
    let backoff = 1000;
    let connections = 0;
    while (!signal.aborted) {
      try {
        const query = this.lastTime !== null ? `?since=${encodeURIComponent(this.lastTime)}` : "";
        const response = await fetch(`${PREFIX}/events/stream${query}`, {
          cache: "no-store", signal, headers: this.api.headers({ Accept: "text/event-stream" }),
        });
        if (response.status === 401) {
          const body = await response.json().catch(() => ({}));
          this.onStatus(false, "not connected");
          this.onRefused(new ApiError(401, body.error || "Unauthorized", body.message || "token refused"));
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        connections += 1;
        backoff = 1000;
        this.onStatus(true, "live");
        if (connections > 1) this.onReconnected();
        await this.read(response.body, signal);
        if (!signal.aborted) this.onStatus(false, "stream ended");
      } catch (exc) {
        if (signal.aborted) return;
        this.onStatus(false, `stream lost (${exc.message})`);
      }
      if (signal.aborted) return;
      const wait = backoff * (0.75 + Math.random() * 0.5);
      this.onStatus(false, `reconnecting in ${Math.round(wait / 1000)} s`);
      await sleep(wait, signal);
      backoff = Math.min(backoff * 2, 30000);
    }
  }

  async read(body, signal) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    signal.addEventListener("abort", () => reader.cancel().catch(() => {}), { once: true });
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      if (buffer.length > 4 << 20) throw new Error("an event over 4 MiB");
      const [events, rest] = parseEvents(buffer);
      buffer = rest;
      for (const raw of events) {
        let event;
        try {
          event = JSON.parse(raw.data);
        } catch {
          continue;
        }
        if (event && typeof event === "object" && this.seen(event)) this.onEvent(event);
      }
    }
  }
}
