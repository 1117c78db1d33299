// The job list: newest first, filtered by status, node and user, a page at a time
// (`before` cursor: 10,000 jobs are never all in the page), updated live by the fleet feed.
import { api } from "../api.js";
import { badge, clear, debounce, errorBox, fmtDuration, fmtTime, h, jobDuration, TERMINAL } from "../dom.js";

const PAGE = 100;
const STATUSES = [
  "requested", "validated", "approval_required", "approved", "denied", "rejected", "queued", "assigned",
  "dispatched", "accepted", "running", "exited", "succeeded", "failed", "timed_out", "cancelled", "lost",
];

export function jobsView({ main, params, onFeed }) {
  const filters = { status: params.get("status") || "", node: params.get("node") || "", user: params.get("user") || "" };
  const rows = new Map(); // job id -> { job, tr }
  let next = null;
  let loading = false;

  const tbody = h("tbody");
  const more = h("button", { type: "button", hidden: true, onclick: () => load(false) }, "Load more");
  const status = h("p", { class: "muted", role: "status", "aria-live": "polite" });
  const statusSel = h(
    "select",
    { id: "f-status", onchange: () => apply() },
    h("option", { value: "" }, "any"),
    STATUSES.map((s) => h("option", { value: s, selected: s === filters.status }, s)),
  );
  const nodeIn = h("input", { id: "f-node", value: filters.node, placeholder: "node id", oninput: debounce(() => apply(), 300) });
  const userIn = h("input", { id: "f-user", value: filters.user, placeholder: "user", oninput: debounce(() => apply(), 300) });

  function apply() {
    filters.status = statusSel.value;
    filters.node = nodeIn.value.trim();
    filters.user = userIn.value.trim();
    const q = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    history.replaceState(null, "", `#/jobs${q.size ? `?${q}` : ""}`);
    load(true);
  }

  function matches(job) {
    return (
      (!filters.status || job.status === filters.status) &&
      (!filters.node || job.node === filters.node) &&
      (!filters.user || job.requestedBy === filters.user)
    );
  }

  function row(job) {
    const link = h("a", { href: `#/jobs/${encodeURIComponent(job.jobId)}` }, job.jobId);
    return h(
      "tr",
      { dataset: { job: job.jobId } },
      h("td", {}, link),
      h("td", { class: "st" }, badge(job.status)),
      h("td", { class: "cmd" }, h("code", {}, job.command)),
      h("td", { class: "node" }, job.node || job.requestedNode || ""),
      h("td", {}, job.requestedBy || ""),
      h("td", { class: "dur" }, fmtDuration(jobDuration(job))),
      h("td", {}, fmtTime(job.requestedAt)),
    );
  }

  function put(job, { top }) {
    const old = rows.get(job.jobId);
    const tr = row(job);
    if (old) old.tr.replaceWith(tr);
    else if (top) tbody.prepend(tr);
    else tbody.append(tr);
    rows.set(job.jobId, { job, tr });
  }

  async function load(reset) {
    if (loading) return;
    loading = true;
    const q = new URLSearchParams({ limit: PAGE });
    for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
    if (!reset && next) q.set("before", next);
    try {
      const page = await api(`/api/v1/jobs?${q}`);
      if (reset) {
        rows.clear();
        tbody.replaceChildren();
      }
      for (const job of page.jobs) put(job, { top: false });
      next = page.nextBefore;
      more.hidden = !next;
      status.textContent = `${rows.size} jobs shown${next ? " (more below)" : ""}`;
    } catch (err) {
      status.replaceChildren(errorBox(err));
    } finally {
      loading = false;
    }
  }

  const refetch = new Map();
  const latest = new Map(); // job id -> the last status the feed told, with its sequence
  async function refresh(id) {
    try {
      const job = await api(`/api/v1/jobs/${encodeURIComponent(id)}`);
      // The read model may trail the feed by a few events: the feed's status is then the newer one.
      const told = latest.get(id);
      if (told && job.lastSeq < told.seq) job.status = told.status;
      else latest.delete(id);
      if (matches(job)) put(job, { top: !rows.has(id) });
      else if (rows.has(id)) {
        rows.get(id).tr.remove();
        rows.delete(id);
      }
    } catch {
      /* the job is not readable yet; the next event tries again */
    }
  }

  const off = onFeed((item) => {
    if (item.entity !== "job") return;
    if (item.status) latest.set(item.id, { seq: item.seq, status: item.status });
    const known = rows.get(item.id);
    if (!known && item.kind !== "requested") return;
    if (known && item.status) {
      known.job = { ...known.job, status: item.status, node: item.node || known.job.node };
      const tr = row(known.job);
      known.tr.replaceWith(tr);
      known.tr = tr;
    }
    // New jobs, and ends (duration, exit code), read the job's row once the burst settles.
    if (!known || TERMINAL.has(item.status) || item.kind === "assigned") {
      clearTimeout(refetch.get(item.id));
      refetch.set(item.id, setTimeout(() => refresh(item.id), known ? 150 : 50));
    }
  });
  const tick = setInterval(() => {
    for (const { job, tr } of rows.values()) if (!TERMINAL.has(job.status) && job.startedAt) tr.querySelector(".dur").textContent = fmtDuration(jobDuration(job));
  }, 1000);

  clear(
    main,
    h("h1", {}, "Jobs"),
    h(
      "form",
      { class: "filters", role: "search", "aria-label": "Filter jobs", onsubmit: (e) => e.preventDefault() },
      h("label", { for: "f-status" }, "Status"),
      statusSel,
      h("label", { for: "f-node" }, "Node"),
      nodeIn,
      h("label", { for: "f-user" }, "User"),
      userIn,
    ),
    status,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "jobs" },
        h("caption", { class: "sr-only" }, "Jobs, newest first"),
        h("thead", {}, h("tr", {}, ["Job", "Status", "Command", "Node", "Requested by", "Duration", "Requested"].map((t) => h("th", { scope: "col" }, t)))),
        tbody,
      ),
    ),
    more,
  );
  load(true);
  return () => {
    off();
    clearInterval(tick);
    for (const t of refetch.values()) clearTimeout(t);
  };
}
