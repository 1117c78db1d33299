// Nodes: live or lost, labels, tools, load (active/max), last heartbeat, and the jobs on each.
// Heartbeats live in a key-value bucket, not in the event log, so this page reads them every
// few seconds; job changes arrive by the fleet feed.
import { api } from "../api.js";
import { badge, clear, debounce, errorBox, fmtTime, h } from "../dom.js";

const ACTIVE = ["assigned", "dispatched", "accepted", "running"];

export function nodesView({ main, onFeed }) {
  const body = h("div", { class: "nodes" });
  async function load() {
    try {
      const [{ nodes }, ...running] = await Promise.all([api("/api/v1/nodes"), ...ACTIVE.map((s) => api(`/api/v1/jobs?status=${s}&limit=200`))]);
      const jobsOn = new Map();
      for (const page of running) for (const j of page.jobs) if (j.node) (jobsOn.get(j.node) || jobsOn.set(j.node, []).get(j.node)).push(j);
      clear(
        body,
        nodes.length ? null : h("p", { class: "muted" }, "No node has registered yet."),
        nodes.map((n) => {
          const jobs = jobsOn.get(n.nodeId) || [];
          const load = n.maxJobs ? n.activeJobs / n.maxJobs : 0;
          return h(
            "article",
            { class: `card node ${n.live ? "live" : "lost"}`, dataset: { node: n.nodeId }, "aria-label": `Node ${n.nodeId}` },
            h(
              "h2",
              {},
              n.nodeId,
              " ",
              h("span", { class: `badge ${n.live ? "s-succeeded" : "s-lost"}` }, n.live ? "live" : "lost"),
              // Taken out of placement by an admin (`nexus nodes --drain`): no new job goes there.
              n.status === "drained" ? [" ", h("span", { class: "badge s-drained", title: "no new job goes to this node" }, "drained")] : null,
            ),
            h(
              "dl",
              { class: "facts" },
              h("dt", {}, "Load"),
              h("dd", {}, `${n.activeJobs}/${n.maxJobs}`, " ", h("meter", { min: 0, max: 1, value: load, "aria-label": "load" })),
              h("dt", {}, "Last heartbeat"),
              h("dd", {}, fmtTime(n.lastSeen) || "never"),
              h("dt", {}, "Tools"),
              h("dd", {}, (n.tools || []).join(", ")),
              h("dt", {}, "Labels"),
              h("dd", {}, Object.entries(n.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "none"),
              h("dt", {}, "Host"),
              h("dd", {}, `${n.hostname} ${n.version ? `(agent ${n.version})` : ""}`),
            ),
            h("h3", {}, `Running now: ${jobs.length}`),
            jobs.length ? h("ul", {}, jobs.map((j) => h("li", {}, h("a", { href: `#/jobs/${encodeURIComponent(j.jobId)}` }, j.jobId), " ", badge(j.status), " ", h("code", {}, j.command)))) : null,
            h("a", { href: `#/jobs?node=${encodeURIComponent(n.nodeId)}` }, `All jobs on ${n.nodeId}`),
          );
        }),
      );
    } catch (err) {
      clear(body, errorBox(err));
    }
  }
  const reload = debounce(load, 300);
  const off = onFeed((item) => item.entity === "job" && ["assigned", "exited", "succeeded", "failed", "lost", "cancelled", "timed_out"].includes(item.kind) && reload());
  const timer = setInterval(load, 5000);
  clear(main, h("h1", {}, "Nodes"), body);
  load();
  return () => {
    off();
    clearInterval(timer);
  };
}
