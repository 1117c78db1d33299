// Metrics: the per-phase figures of GET /api/v1/metrics/pipeline now, and as charts over time
// (GET /api/v1/metrics/history), with the same `since` choice as `nexus metrics --since`.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { api } from "../api.js";
import { clear, errorBox, fmtDuration, h } from "../dom.js";

const SINCE = [
  ["15m", 15 * 60],
  ["1h", 3600],
  ["6h", 6 * 3600],
  ["24h", 86400],
  ["7d", 7 * 86400],
  ["all", null],
];
const COLORS = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];

export function metricsView({ main, params }) {
  const since = h(
    "select",
    { id: "m-since", onchange: () => load() },
    SINCE.map(([label]) => h("option", { value: label, selected: label === (params.get("since") || "1h") }, label === "all" ? "all time" : `last ${label}`)),
  );
  const summary = h("section", { class: "card", "aria-labelledby": "sum-title" });
  const charts = h("div", { class: "charts" });
  const plots = [];

  function chart(title, xs, series, unit) {
    const fig = h("figure", { class: "chart card", "aria-label": title });
    fig.append(h("figcaption", {}, title));
    charts.append(fig);
    const width = Math.max(240, fig.clientWidth - 34);
    const opts = {
      width,
      height: 200,
      series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true }))],
      axes: [{}, { label: unit, size: 60 }],
      legend: { live: false },
      scales: { x: { time: true } },
    };
    plots.push(new uPlot(opts, [xs, ...series.map((s) => s.values)], fig));
  }

  async function load() {
    const chosen = SINCE.find(([l]) => l === since.value);
    const from = chosen[1] ? new Date(Date.now() - chosen[1] * 1000).toISOString() : null;
    const q = from ? `?since=${encodeURIComponent(from)}` : "";
    history.replaceState(null, "", `#/metrics?since=${since.value}`);
    try {
      const [now, hist] = await Promise.all([api(`/api/v1/metrics/pipeline${q}`), api(`/api/v1/metrics/history${q}${q ? "&" : "?"}buckets=30`)]);
      for (const p of plots.splice(0)) p.destroy();
      clear(
        summary,
        h("h2", { id: "sum-title" }, "Now"),
        h(
          "dl",
          { class: "facts wide" },
          [
            ["Jobs ended", now.execution?.totalJobs],
            ["Success rate", now.execution ? `${Math.round(now.execution.successRate * 100)}%` : ""],
            ["Queue depth", now.coordination?.queueDepth],
            ["Held for approval", now.coordination?.awaitingApproval],
            ["Validation failures", now.analysis?.validationFailures],
            ["Deploys", now.deploy?.totalDeployments],
            ["Deploy success", now.deploy ? `${Math.round(now.deploy.successRate * 100)}%` : ""],
            ["Mean rollback", now.deploy ? fmtDuration(now.deploy.avgRollbackTime) : ""],
          ]
            .filter(([, v]) => v !== undefined)
            .map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]),
        ),
      );
      clear(charts);
      const b = hist.buckets;
      const xs = b.map((x) => new Date(x.start).getTime() / 1000);
      const col = (f) => b.map(f);
      chart("Jobs: rate and outcomes (per bucket)", xs, [
        { label: "requested", values: col((x) => x.requested) },
        { label: "succeeded", values: col((x) => x.succeeded) },
        { label: "failed", values: col((x) => x.failed) },
      ], "jobs");
      chart("Lifecycle steps p50 (ms)", xs, hist.steps.map((s) => ({ label: s.replaceAll("_", " "), values: col((x) => x.steps[s]?.p50_ms ?? null) })), "ms");
      chart("Lifecycle steps p95 (ms)", xs, hist.steps.map((s) => ({ label: s.replaceAll("_", " "), values: col((x) => x.steps[s]?.p95_ms ?? null) })), "ms");
      chart("Queue depth", xs, [{ label: "queued", values: col((x) => x.queueDepth) }], "jobs");
      chart("Validation failures", xs, [{ label: "rejected by analysis or critical", values: col((x) => x.validationFailures) }], "jobs");
      chart("Deploys", xs, [
        { label: "ended", values: col((x) => x.deploys) },
        { label: "succeeded", values: col((x) => x.deploysSucceeded) },
      ], "pipelines");
      chart("Rollback time (ms)", xs, [{ label: "mean rollback", values: col((x) => x.rollbackMs) }], "ms");
    } catch (err) {
      clear(summary, errorBox(err));
    }
  }
  clear(
    main,
    h("h1", {}, "Metrics"),
    h("form", { class: "filters", onsubmit: (e) => e.preventDefault() }, h("label", { for: "m-since" }, "Since"), since),
    summary,
    charts,
  );
  load();
  return () => plots.forEach((p) => p.destroy());
}
