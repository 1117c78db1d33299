// The console's shell: who is logged in, the fleet feed every view listens to, and routing
// by the URL's fragment (#/jobs, #/jobs/<id>, ...), so the server serves one page at /.
import "./style.css";
import { api, follow, token, whenUnauthorized } from "./api.js";
import { clear, debounce, h } from "./dom.js";
import { jobsView } from "./views/jobs.js";
import { jobView } from "./views/job.js";
import { runView } from "./views/run.js";
import { approvalsView, INBOX_KINDS } from "./views/approvals.js";
import { pipelinesView, pipelineView } from "./views/pipelines.js";
import { nodesView } from "./views/nodes.js";
import { metricsView } from "./views/metrics.js";

const main = document.getElementById("main");
export const session = { user: null, role: null, auth: null, canSubmit: false, canApprove: false };

// Fleet feed: one SSE connection, fanned out to whichever view is shown.
const listeners = new Set();
let feed = null;
export function onFeed(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
function startFeed() {
  feed?.close();
  feed = follow("/api/v1/feed", {
    onMessage: (item) => {
      for (const fn of listeners) fn(item);
      // A held job cancelled or ended elsewhere leaves the inbox too.
      if (INBOX_KINDS.includes(item.kind) || waiting.has(item.id)) refreshInbox();
    },
  });
}

let waiting = new Set(); // the jobs and pipelines the count is made of
const refreshInbox = debounce(async () => {
  try {
    const inbox = await api("/api/v1/approvals");
    waiting = new Set([...inbox.jobs.map((j) => j.jobId), ...inbox.steps.map((s) => s.pipelineId)]);
    const n = inbox.jobs.length + inbox.steps.length;
    document.getElementById("inbox-count").textContent = n ? `(${n})` : "";
  } catch {
    /* shown on the approvals page */
  }
}, 150);

let cleanup = null;
function route() {
  cleanup?.();
  cleanup = null;
  if (!session.user) return;
  const [path, query = ""] = (location.hash.slice(1) || "/jobs").split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean);
  for (const a of document.querySelectorAll("nav a")) {
    a.toggleAttribute("aria-current", a.getAttribute("href") === `#/${parts[0]}`);
    if (a.hasAttribute("aria-current")) a.setAttribute("aria-current", "page");
  }
  const ctx = { main, params, session, onFeed };
  clear(main);
  if (parts[0] === "jobs" && parts[1]) cleanup = jobView(ctx, decodeURIComponent(parts[1]));
  else if (parts[0] === "run") cleanup = runView(ctx);
  else if (parts[0] === "approvals") cleanup = approvalsView(ctx);
  else if (parts[0] === "pipelines" && parts[1]) cleanup = pipelineView(ctx, decodeURIComponent(parts[1]));
  else if (parts[0] === "pipelines") cleanup = pipelinesView(ctx);
  else if (parts[0] === "nodes") cleanup = nodesView(ctx);
  else if (parts[0] === "metrics") cleanup = metricsView(ctx);
  else cleanup = jobsView(ctx);
}

function loginView(message) {
  apiDocsLink("tokens"); // only --auth asks for a login
  document.getElementById("who").textContent = "";
  document.getElementById("logout").hidden = true;
  const input = h("input", { id: "token", type: "password", autocomplete: "current-password", required: true, minlength: 16 });
  const form = h(
    "form",
    {
      class: "card login",
      "aria-labelledby": "login-title",
      onsubmit: async (e) => {
        e.preventDefault();
        token.set(input.value.trim());
        input.value = "";
        await start();
      },
    },
    h("h1", { id: "login-title" }, "Log in"),
    h("p", {}, "This API runs with --auth: paste your bearer token. It is kept in this browser tab only."),
    message ? h("p", { class: "error", role: "alert" }, message) : null,
    h("label", { for: "token" }, "Token"),
    input,
    h("button", { type: "submit", class: "primary" }, "Log in"),
  );
  clear(main, form);
  input.focus();
}

async function start() {
  try {
    // Without a token, ask the public /health whether the API wants one: a whoami without a
    // token would be a 401, which the browser logs as an error on every first visit.
    if (!token.get() && (await api("/health")).auth === "tokens") {
      loginView(null);
      return;
    }
    const me = await api("/api/v1/whoami");
    Object.assign(session, me);
  } catch (err) {
    session.user = null;
    feed?.close();
    const hadToken = Boolean(token.get());
    token.clear();
    loginView(hadToken ? "That token was not accepted." : null);
    return;
  }
  document.getElementById("who").textContent = `${session.user} (${session.role}${session.auth === "open" ? ", open mode" : ""})`;
  document.getElementById("logout").hidden = session.auth === "open";
  apiDocsLink(session.auth);
  document.body.dataset.role = session.role;
  startFeed();
  refreshInbox();
  route();
}

// With --auth, /schema wants the token, which a plain link cannot send (it lives in this tab's
// sessionStorage, never in a cookie or URL): the link then fetches the OpenAPI document with
// the token and saves it, instead of opening Swagger UI on a 401.
const apiDocs = document.getElementById("api-docs");
async function downloadSchema(e) {
  e.preventDefault();
  try {
    const doc = await api("/schema/openapi.json");
    const a = h("a", { href: URL.createObjectURL(new Blob([JSON.stringify(doc, null, 2)], { type: "application/json" })), download: "nexus-openapi.json" });
    document.body.append(a);
    a.click();
    setTimeout(() => (URL.revokeObjectURL(a.href), a.remove()), 1000);
  } catch {
    /* a 401 logs out; nothing else to say here */
  }
}
function apiDocsLink(auth) {
  const tokens = auth === "tokens";
  apiDocs.textContent = tokens ? "API schema" : "API docs";
  apiDocs.title = tokens ? "Download the OpenAPI document (Swagger UI at /schema/swagger needs a token a link cannot send)" : "";
  apiDocs.href = tokens ? "/schema/openapi.json" : "/schema/swagger";
  apiDocs.onclick = tokens ? downloadSchema : null;
}

whenUnauthorized(() => {
  if (session.user && session.auth === "tokens") {
    session.user = null;
    token.clear();
    feed?.close();
    loginView("Your session ended: log in again.");
  }
});

document.getElementById("logout").addEventListener("click", () => {
  token.clear();
  session.user = null;
  feed?.close();
  cleanup?.();
  loginView(null);
});
window.addEventListener("hashchange", () => {
  route();
  // Keyboard and screen reader users land on the new view, unless it focused a field itself.
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
});
start();
