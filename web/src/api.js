// Talking to the API: the bearer token lives in sessionStorage and travels in the
// Authorization header only (never in a URL); live feeds are Server-Sent Events read
// with fetch() streaming, since EventSource cannot send that header.

const TOKEN_KEY = "nexus.token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const t = token.get();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

export async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, headers: headers(), signal, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) onUnauthorized();
  if (!res.ok) {
    let problem = null;
    try {
      problem = await res.json();
    } catch {
      /* not JSON */
    }
    throw new ApiError(res.status, problem);
  }
  if (res.status === 204) return null;
  return res.json();
}

// Follow an SSE endpoint; reconnects after a drop with Last-Event-ID, so nothing is
// missed or repeated. Returns { close() }. `onMessage(data, id)` gets parsed JSON. An answer
// that asking again cannot change (400: an id that can never be valid, 403) ends it: `onError(err)`.
const FINAL = new Set([400, 403]);
export function follow(path, { onMessage, onState = () => {}, onError = () => {}, lastEventId = null } = {}) {
  let closed = false;
  let controller = null;
  let lastId = lastEventId;
  let retryMs = 1000;

  async function once() {
    controller = new AbortController();
    const h = headers({ Accept: "text/event-stream" });
    if (lastId) h["Last-Event-ID"] = lastId;
    const res = await fetch(path, { headers: h, signal: controller.signal, cache: "no-store" });
    if (res.status === 401) {
      onUnauthorized();
      closed = true;
      return;
    }
    if (res.status === 204) {
      closed = true; // the stream was complete
      return;
    }
    if (!res.ok) {
      let problem = null;
      try {
        problem = await res.json();
      } catch {
        /* not JSON */
      }
      const err = new ApiError(res.status, problem);
      if (FINAL.has(res.status)) {
        closed = true;
        onError(err);
        return;
      }
      throw err;
    }
    onState("live");
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let data = "";
        let id = null;
        for (const line of block.split("\n")) {
          if (line.startsWith("data:")) data += line.slice(5).trimStart();
          else if (line.startsWith("id:")) id = line.slice(3).trim();
          else if (line.startsWith("retry:")) retryMs = Number(line.slice(6)) || retryMs;
        }
        if (id !== null) lastId = id;
        if (data) onMessage(JSON.parse(data), id);
        if (id && id.endsWith(":done")) {
          closed = true;
          controller.abort();
          return;
        }
      }
    }
  }

  (async () => {
    while (!closed) {
      try {
        await once();
      } catch (err) {
        if (closed) break;
        onState("reconnecting");
      }
      if (closed) break;
      onState("reconnecting");
      await new Promise((r) => setTimeout(r, retryMs));
    }
    onState("closed");
  })();

  return {
    close() {
      closed = true;
      controller?.abort();
    },
    get lastId() {
      return lastId;
    },
  };
}
