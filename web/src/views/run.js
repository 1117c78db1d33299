// Run a command: target (node, labels, prefer), timeout and tests; the analysis verdict
// (POST /api/v1/jobs/validate, the orchestrator's own judge) is shown as you type.
import { api } from "../api.js";
import { clear, debounce, errorBox, h } from "../dom.js";

// "k=v, k2=v2" as an object; a part without "=" or without a key is refused, never taken as a
// label named "env prod" with an empty value.
function pairs(text, what) {
  const out = {};
  for (const part of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    const [k, ...v] = part.split("=");
    if (!v.length || !k.trim()) throw new Error(`${what}: ${JSON.stringify(part)} is not key=value (separate pairs with commas)`);
    out[k.trim()] = v.join("=").trim();
  }
  return out;
}

export function runView({ main, session }) {
  const field = (id, label, input, hint) => h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("small", { id: `${id}-hint` }, hint) : null);
  const command = h("textarea", { id: "r-command", rows: 3, required: true, spellcheck: "false", "aria-describedby": "verdict" });
  const tool = h("input", { id: "r-tool", value: "bash" });
  const node = h("select", { id: "r-node" }, h("option", { value: "" }, "any node (the scheduler picks)"));
  const labels = h("input", { id: "r-labels", placeholder: "env=prod, role=web", "aria-describedby": "r-labels-hint" });
  const prefer = h("input", { id: "r-prefer", placeholder: "zone=a", "aria-describedby": "r-prefer-hint" });
  const timeout = h("input", { id: "r-timeout", type: "number", min: 1, step: 1, placeholder: "seconds" });
  const exitCode = h("input", { id: "r-exit", type: "number", placeholder: "e.g. 0" });
  const contains = h("input", { id: "r-contains", placeholder: "regex the output must match" });
  const verdict = h("section", { id: "verdict", class: "card verdict", "aria-live": "polite", "aria-labelledby": "verdict-title" });
  const result = h("div", { role: "status", id: "r-result" });
  const submit = h("button", { type: "submit", class: "primary", disabled: !session.canSubmit }, "Run");

  function body() {
    const b = { command: command.value, tool: tool.value.trim() || "bash", labels: pairs(labels.value, "Labels"), tests: [] };
    if (node.value) b.node = node.value;
    if (exitCode.value !== "") b.tests.push({ type: "exit_code", expected: Number(exitCode.value) });
    if (contains.value) b.tests.push({ type: "output_contains", pattern: contains.value });
    return b;
  }

  let asked = 0;
  const analyse = debounce(async () => {
    const mine = ++asked;
    if (!command.value.trim()) {
      clear(verdict, h("h2", { id: "verdict-title" }, "Analysis"), h("p", { class: "muted" }, "Type a command to see its verdict."));
      return;
    }
    try {
      const v = await api("/api/v1/jobs/validate", { method: "POST", body: body() }); // body() refuses bad labels
      if (mine !== asked) return;
      verdict.dataset.severity = v.severity || "none";
      clear(
        verdict,
        h("h2", { id: "verdict-title" }, "Analysis"),
        h(
          "p",
          { class: "verdict-line" },
          h("strong", {}, v.denied ? "Denied" : v.approvalRequired ? "Needs approval" : v.valid ? "Would run" : "Invalid"),
          ` · severity ${v.severity || "none"}`,
          v.estimatedDuration != null ? ` · usually takes ${Math.round(v.estimatedDuration)} ms` : "",
        ),
        v.denied ? h("p", { class: "error" }, v.denied) : null,
        v.approvalRequired ? h("p", { class: "warn" }, "An admin must approve this job before it runs.") : null,
        v.warnings.length ? h("ul", { class: "findings" }, v.warnings.map((w) => h("li", { class: `sev-${w.severity}` }, h("strong", {}, `${w.severity} ${w.type}: `), w.message))) : null,
        v.suggestions.length ? [h("h3", {}, "Suggestions"), h("ul", {}, v.suggestions.map((s) => h("li", {}, s)))] : null,
      );
    } catch (err) {
      if (mine === asked) clear(verdict, h("h2", { id: "verdict-title" }, "Analysis"), errorBox(err));
    }
  }, 250);

  async function run(e) {
    e.preventDefault();
    try {
      const b = body();
      b.prefer = pairs(prefer.value, "Prefer");
      if (timeout.value) b.timeoutSeconds = Number(timeout.value);
      const created = await api("/api/v1/jobs", { method: "POST", body: b });
      location.hash = `#/jobs/${encodeURIComponent(created.jobId)}`;
    } catch (err) {
      result.replaceChildren(errorBox(err));
    }
  }

  for (const el of [command, tool, node, labels, exitCode, contains]) el.addEventListener("input", analyse);
  prefer.addEventListener("input", () => result.replaceChildren());
  clear(
    main,
    h("h1", {}, "Run a command"),
    session.canSubmit ? null : h("p", { class: "warn" }, `Your role (${session.role}) may analyse commands but not run them.`),
    h(
      "div",
      { class: "two" },
      h(
        "form",
        { class: "card", onsubmit: run, "aria-label": "Run a command" },
        field("r-command", "Command", command),
        field("r-tool", "Tool", tool),
        field("r-node", "Node", node),
        field("r-labels", "Labels (node selector)", labels, "key=value, comma separated: only nodes with all of them"),
        field("r-prefer", "Prefer", prefer, "key=value: soft preference among the candidates"),
        field("r-timeout", "Timeout (s)", timeout),
        h("fieldset", {}, h("legend", {}, "Tests"), field("r-exit", "Exit code must be", exitCode), field("r-contains", "Output must contain", contains)),
        submit,
        result,
      ),
      verdict,
    ),
  );
  analyse();
  api("/api/v1/nodes")
    .then((list) => node.append(...list.nodes.map((n) => h("option", { value: n.nodeId }, `${n.nodeId}${n.live ? "" : " (lost)"}`))))
    .catch(() => {});
  command.focus();
  return () => {};
}
