// Pipelines: the list, and one pipeline as a graph of steps (columns by dependency depth,
// edges for `needs`), each step's state, batches, gate and rollback live, its jobs one click away.
import { api } from "../api.js";
import { badge, clear, debounce, errorBox, fmtTime, h, TERMINAL } from "../dom.js";

export function pipelinesView({ main, onFeed }) {
  const tbody = h("tbody");
  const status = h("div", { role: "status" });
  async function load() {
    try {
      const list = await api("/api/v1/pipelines");
      clear(
        tbody,
        list.map((p) =>
          h(
            "tr",
            {},
            h("td", {}, h("a", { href: `#/pipelines/${encodeURIComponent(p.pipelineId)}` }, p.name || p.pipelineId)),
            h("td", {}, h("code", {}, p.pipelineId)),
            h("td", {}, badge(p.status)),
            h("td", {}, p.steps),
            h("td", {}, p.requestedBy || ""),
            h("td", {}, fmtTime(p.requestedAt)),
          ),
        ),
      );
      status.replaceChildren(list.length ? "" : h("p", { class: "muted" }, "No pipelines yet (nexus pipeline run FILE, or POST /api/v1/pipelines)."));
    } catch (err) {
      status.replaceChildren(errorBox(err));
    }
  }
  const reload = debounce(load, 200);
  const off = onFeed((item) => item.entity === "pipeline" && reload());
  clear(
    main,
    h("h1", {}, "Pipelines"),
    status,
    h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Id", "Status", "Steps", "Requested by", "Requested"].map((t) => h("th", { scope: "col" }, t)))), tbody)),
  );
  load();
  return off;
}

function levels(steps) {
  const byId = new Map(steps.map((s) => [s.stepId, s]));
  const depth = new Map();
  const visit = (s, seen = new Set()) => {
    if (depth.has(s.stepId)) return depth.get(s.stepId);
    if (seen.has(s.stepId)) return 0;
    seen.add(s.stepId);
    const d = Math.max(-1, ...(s.needs || []).map((n) => (byId.has(n) ? visit(byId.get(n), seen) : -1))) + 1;
    depth.set(s.stepId, d);
    return d;
  };
  const cols = [];
  for (const s of steps) (cols[visit(s)] ||= []).push(s);
  return cols;
}

export function pipelineView({ main, onFeed }, pipelineId) {
  const enc = encodeURIComponent(pipelineId);
  const head = h("section", { class: "card" });
  const graph = h("div", { class: "graph", role: "list", "aria-label": "Steps" });
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "edges");
  svg.setAttribute("aria-hidden", "true");
  const wrap = h("div", { class: "graph-wrap" }, svg, graph);
  const jobStatus = new Map();
  let pipeline = null;

  function specOf(stepId) {
    return (pipeline.spec?.steps || []).find((s) => s.id === stepId) || {};
  }

  function stepCard(s) {
    const spec = specOf(s.stepId);
    const jobs = (s.jobs || []).map((j) => {
      jobStatus.has(j.jobId) || jobStatus.set(j.jobId, null);
      const st = jobStatus.get(j.jobId);
      return h("li", {}, h("a", { href: `#/jobs/${encodeURIComponent(j.jobId)}`, dataset: { job: j.jobId } }, j.node ? `${j.node}` : j.jobId), " ", st ? badge(st) : null);
    });
    const extra = [];
    if (spec.strategy === "rolling") extra.push(`rolling, ${spec.batchSize || 1} per batch${s.batch >= 0 ? `, batch ${s.batch + 1}` : ""}`);
    if ((s.nodes || []).length > 1) extra.push(`fan-out to ${s.nodes.length} nodes`);
    if (spec.maxParallel) extra.push(`at most ${spec.maxParallel} at a time`);
    if (spec.when && spec.when !== "success") extra.push(`runs on ${spec.when}`);
    const gate = spec.approval
      ? s.approvedBy
        ? `gate: approved by ${s.approvedBy}`
        : s.deniedBy
          ? `gate: denied by ${s.deniedBy}`
          : s.approvalRequestedAt
            ? `gate: waiting for approval (until ${fmtTime(s.approvalDeadline)})`
            : "gate: approval before it starts"
      : null;
    return h(
      "article",
      { class: `step st-${s.status}`, role: "listitem", dataset: { step: s.stepId }, "aria-label": `Step ${s.stepId}: ${s.status}` },
      h("h3", {}, s.stepId, " ", badge(s.status)),
      spec.command ? h("code", { class: "cmd" }, spec.command) : null,
      (s.needs || []).length ? h("p", { class: "muted" }, `after ${s.needs.join(", ")}`) : null,
      extra.length ? h("p", {}, extra.join(" · ")) : null,
      gate ? h("p", { class: s.approvalRequestedAt && !s.approvedBy && !s.deniedBy ? "warn" : "" }, gate, s.approvalRequestedAt && !s.approvedBy && !s.deniedBy ? [" ", h("a", { href: "#/approvals" }, "open the inbox")] : null) : null,
      s.rollbackStatus ? h("p", { class: "warn" }, `rollback: ${s.rollbackStatus}${s.rollbackReason ? ` (${s.rollbackReason})` : ""}`) : null,
      s.reason ? h("p", { class: "muted" }, s.reason) : null,
      jobs.length ? h("ul", { class: "step-jobs", "aria-label": "Jobs" }, jobs) : null,
      (s.rollbacks || []).length ? h("p", {}, "rollback jobs: ", s.rollbacks.map((j) => [h("a", { href: `#/jobs/${encodeURIComponent(j.jobId)}` }, j.node || j.jobId), " "])) : null,
    );
  }

  function drawEdges() {
    const box = wrap.getBoundingClientRect();
    svg.setAttribute("width", wrap.scrollWidth);
    svg.setAttribute("height", wrap.scrollHeight);
    svg.replaceChildren();
    for (const s of pipeline?.steps || []) {
      const to = graph.querySelector(`[data-step="${CSS.escape(s.stepId)}"]`);
      for (const n of s.needs || []) {
        const from = graph.querySelector(`[data-step="${CSS.escape(n)}"]`);
        if (!from || !to) continue;
        const a = from.getBoundingClientRect();
        const b = to.getBoundingClientRect();
        const x1 = a.right - box.left, y1 = a.top + a.height / 2 - box.top;
        const x2 = b.left - box.left, y2 = b.top + b.height / 2 - box.top;
        const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
        const mid = (x1 + x2) / 2;
        path.setAttribute("d", `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`);
        svg.append(path);
      }
    }
  }

  function render() {
    clear(
      head,
      h("h1", {}, "Pipeline ", pipeline.name || pipelineId, " ", badge(pipeline.status)),
      h(
        "dl",
        { class: "facts" },
        [
          ["Id", pipelineId],
          ["Requested by", pipeline.requestedBy],
          ["Requested", fmtTime(pipeline.requestedAt)],
          ["Finished", fmtTime(pipeline.finishedAt)],
          ["Failed step", pipeline.failedStep],
          ["Reason", pipeline.reason],
          ["Rolled back", (pipeline.rolledBackSteps || []).join(", ")],
          ["Rollback failed", (pipeline.rollbackFailed || []).join(", ")],
        ]
          .filter(([, v]) => v)
          .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
      ),
    );
    clear(graph, levels(pipeline.steps).map((col, i) => h("div", { class: "col", "aria-label": `Stage ${i + 1}` }, col.map(stepCard))));
    requestAnimationFrame(drawEdges);
  }

  async function load() {
    try {
      pipeline = await api(`/api/v1/pipelines/${enc}`);
      render();
      // Jobs not known to have ended are read again: the feed may have told a newer status meanwhile,
      // in which case a read that was already under way does not override it.
      const open = [...jobStatus.keys()].filter((id) => !TERMINAL.has(jobStatus.get(id))).slice(0, 50);
      const before = new Map(open.map((id) => [id, jobStatus.get(id)]));
      const read = await Promise.all(open.map((id) => api(`/api/v1/jobs/${encodeURIComponent(id)}`).catch(() => null)));
      let changed = false;
      read.forEach((j, i) => {
        const id = open[i];
        if (j && jobStatus.get(id) === before.get(id) && j.status !== before.get(id)) {
          jobStatus.set(id, j.status);
          changed = true;
        }
      });
      if (changed) render();
    } catch (err) {
      clear(head, h("h1", {}, "Pipeline ", pipelineId), errorBox(err));
    }
  }
  const reload = debounce(load, 150);
  const off = onFeed((item) => {
    if (item.entity === "pipeline" && item.id === pipelineId) reload();
    else if (item.entity === "job" && jobStatus.has(item.id) && item.status) {
      jobStatus.set(item.id, item.status);
      reload();
    }
  });
  window.addEventListener("resize", drawEdges);
  clear(main, head, wrap);
  load();
  return () => {
    off();
    window.removeEventListener("resize", drawEdges);
  };
}
