// The approvals inbox: jobs held by analysis and pipeline steps at their gate, with the
// command, its findings and the target; approve or deny with a reason (admins only: the
// API refuses anyone else whatever this page shows).
import { api } from "../api.js";
import { clear, debounce, errorBox, fmtTime, h } from "../dom.js";

// Feed kinds that may add a card or take one away, whichever job or pipeline they concern.
export const INBOX_KINDS = ["approval_required", "approved", "denied", "approval_refused", "approval_expired"];

// What became of a decision, in the orchestrator's words (DecisionRecorded / StepDecisionRecorded).
export function answerLine(said, label) {
  const done = said.decision === "approved" ? "Approved" : "Denied";
  if (said.outcome === "refused") return h("p", { class: "error", role: "alert" }, `Refused: ${label}: ${said.reason || `${said.decision} by ${said.by} does not count`}`);
  if (said.outcome === "pending") return h("p", { class: "warn" }, `${done}: ${label} (recorded; the orchestrator has not acted on it yet)`);
  return h("p", {}, `${done}: ${label}${said.status ? ` · now ${said.status.replace("_", " ")}` : ""}`);
}

export function approvalsView({ main, session, onFeed }) {
  const list = h("div", { class: "inbox" });
  const msg = h("div", { role: "status", "aria-live": "polite" });

  function decisionForm(label, path) {
    const id = `reason-${label.replace(/[^a-z0-9]/gi, "-")}`;
    const reason = h("input", { id, placeholder: "why (recorded with the decision)" });
    const decide = async (what) => {
      try {
        // The answer is the orchestrator's: it may refuse the decision (not among the approvers).
        const said = await api(`${path}/${what}`, { method: "POST", body: reason.value ? { reason: reason.value } : {} });
        msg.replaceChildren(answerLine(said, label));
      } catch (err) {
        msg.replaceChildren(errorBox(err));
      }
      load();
    };
    if (!session.canApprove) return h("p", { class: "muted" }, "Only an admin can approve or deny.");
    return h(
      "div",
      { class: "decide" },
      h("label", { for: id }, "Reason"),
      reason,
      h("button", { type: "button", class: "primary", onclick: () => decide("approve") }, "Approve"),
      h("button", { type: "button", class: "danger", onclick: () => decide("deny") }, "Deny"),
    );
  }

  function mayApprove(approvers) {
    return h("p", { class: "approvers" }, `May approve: ${approvers?.length ? approvers.join(", ") : "any approver (the policy's roles decide)"}`);
  }

  function findings(warnings) {
    if (!warnings.length) return null;
    return h("ul", { class: "findings" }, warnings.map((w) => h("li", { class: `sev-${w.severity}` }, h("strong", {}, `${w.severity} ${w.type}: `), w.message)));
  }

  async function load() {
    try {
      const inbox = await api("/api/v1/approvals");
      const cards = [
        ...inbox.jobs.map((j) =>
          h(
            "article",
            { class: "card held", dataset: { job: j.jobId }, "aria-label": `Job ${j.jobId}` },
            h("h2", {}, "Job ", h("a", { href: `#/jobs/${encodeURIComponent(j.jobId)}` }, j.jobId), ` · severity ${j.severity || "none"}`),
            h("pre", { class: "command" }, j.command),
            h("p", {}, `Target: ${j.requestedNode || Object.entries(j.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "any node"}`, ` · requested by ${j.requestedBy || "?"} at ${fmtTime(j.requestedAt)}`),
            findings(j.warnings),
            mayApprove(j.approvers),
            decisionForm(j.jobId, `/api/v1/jobs/${encodeURIComponent(j.jobId)}`),
          ),
        ),
        ...inbox.steps.map((s) =>
          h(
            "article",
            { class: "card held", dataset: { pipeline: s.pipelineId, step: s.stepId }, "aria-label": `Pipeline ${s.pipelineId} step ${s.stepId}` },
            h("h2", {}, "Pipeline ", h("a", { href: `#/pipelines/${encodeURIComponent(s.pipelineId)}` }, s.pipelineName || s.pipelineId), ` · step ${s.stepId}`),
            s.commands.map((c) => h("pre", { class: "command" }, c)),
            h("p", {}, `Target: ${s.targets.join(", ") || "any node"}`, s.deadline ? ` · gate closes ${fmtTime(s.deadline)}` : ""),
            mayApprove(s.approvers),
            decisionForm(`${s.pipelineId}-${s.stepId}`, `/api/v1/pipelines/${encodeURIComponent(s.pipelineId)}/steps/${encodeURIComponent(s.stepId)}`),
          ),
        ),
      ];
      shown = new Set([...inbox.jobs.map((j) => j.jobId), ...inbox.steps.map((s) => s.pipelineId)]);
      clear(list, cards.length ? cards : h("p", { class: "muted" }, "Nothing waits for approval."));
    } catch (err) {
      clear(list, errorBox(err));
    }
  }

  // Anything that happens to a card's job (a cancel, its end) or pipeline may take it out of the inbox.
  let shown = new Set();
  const reload = debounce(load, 150);
  const off = onFeed((item) => {
    if (INBOX_KINDS.includes(item.kind) || item.entity === "pipeline" || shown.has(item.id)) reload();
  });
  clear(main, h("h1", {}, "Approvals"), msg, list);
  load();
  return off;
}
