// One job: its output in a real terminal emulator (xterm.js: colours, \r progress bars, cursor
// moves), live and resumed without gaps after a drop (the stream's Last-Event-ID), then its
// history, findings, test results and the actions the caller's role allows.
import { Terminal } from "@xterm/xterm";
import "@xterm/xterm/css/xterm.css";
import { api, follow } from "../api.js";
import { badge, clear, debounce, errorBox, fmtDuration, fmtTime, h, jobDuration, TERMINAL } from "../dom.js";
import { answerLine } from "./approvals.js";

const MAX_ROWS = 32;

function b64bytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function jobView({ main, session, onFeed }, jobId) {
  const enc = encodeURIComponent(jobId);
  const term = new Terminal({
    // The agent keeps output byte-exact (its PTY does not turn \n into \r\n); a terminal on a
    // tty would have seen \r\n, so the emulator does that conversion.
    convertEol: true,
    disableStdin: true,
    cursorBlink: false,
    rows: 10, // grows with the output, up to MAX_ROWS; the rest scrolls
    cols: 100,
    scrollback: 10000,
    fontSize: 13,
    theme: { background: "#111418", foreground: "#e6e6e6" },
    // Binary output is shown as it comes; xterm.js would log a parsing error per odd byte.
    logLevel: "off",
  });
  const output = []; // raw bytes, for the download
  const head = h("section", { class: "card", "aria-labelledby": "job-title" });
  const actions = h("div", { class: "actions", role: "group", "aria-label": "Job actions" });
  const msg = h("div", { role: "status", "aria-live": "polite" });
  const termBox = h("div", { class: "terminal", role: "region", "aria-label": "Job output", tabindex: "0" });
  const streamState = h("span", { class: "muted", id: "stream-state" }, "connecting");
  const historyList = h("ol", { class: "history" });
  const findings = h("section", { class: "card", "aria-labelledby": "findings-title" });
  const tests = h("section", { class: "card", "aria-labelledby": "tests-title" });
  let job = null;
  // History by log sequence: the stream tells events as they come while the job runs; the API's
  // history (GET .../history) tells them all, those after the job ended too (re-tests, rollbacks).
  const history = new Map();
  let streamStopped = false;

  clear(
    main,
    head,
    actions,
    msg,
    h("section", { "aria-labelledby": "out-title" }, h("h2", { id: "out-title" }, "Output ", streamState), termBox),
    findings,
    tests,
    h("section", { class: "card", "aria-labelledby": "hist-title" }, h("h2", { id: "hist-title" }, "History"), historyList),
  );
  term.open(termBox);
  window.__nexusTerm = term; // tests read the emulator's buffer

  const probe = h("span", { class: "xterm-probe", "aria-hidden": "true" }, "W".repeat(50));
  function fit() {
    probe.style.cssText = `position:absolute;visibility:hidden;white-space:pre;font-family:${term.options.fontFamily};font-size:${term.options.fontSize}px`;
    document.body.append(probe);
    const cell = probe.getBoundingClientRect().width / 50 || 7.8;
    probe.remove();
    const cols = Math.max(20, Math.min(250, Math.floor((termBox.clientWidth - 16) / cell)));
    if (cols !== term.cols) term.resize(cols, term.rows);
  }
  fit();
  window.addEventListener("resize", fit);

  function renderHead() {
    const dur = jobDuration(job);
    clear(
      head,
      h("h1", { id: "job-title" }, "Job ", h("code", {}, jobId), " ", badge(job.status)),
      h("pre", { class: "command" }, job.command),
      h(
        "dl",
        { class: "facts" },
        [
          ["Node", job.node || job.requestedNode || "(not placed)"],
          ["Requested by", job.requestedBy || ""],
          ["Approved by", job.approvedBy],
          ["Exit code", job.exitCode ?? (TERMINAL.has(job.status) ? "none" : "")],
          ["Reason", job.reason],
          ["Duration", fmtDuration(dur)],
          ["Requested", fmtTime(job.requestedAt)],
          ["Attempt", job.attempt || ""],
          ["Labels", Object.entries(job.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ")],
          ["Parent", job.parent ? h("a", { href: `#/jobs/${encodeURIComponent(job.parent)}` }, job.parent) : null],
          ["Rolled back by", job.rollbackJob ? h("a", { href: `#/jobs/${encodeURIComponent(job.rollbackJob)}` }, job.rollbackJob) : null],
        ]
          .filter(([, v]) => v !== null && v !== undefined && v !== "")
          .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
      ),
    );
    renderActions();
    renderFindings();
  }

  function renderActions() {
    const ended = TERMINAL.has(job.status);
    const can = session.canSubmit;
    const btn = (label, handler, enabled, title) =>
      h("button", { type: "button", onclick: handler, disabled: !enabled, title: enabled ? null : title }, label);
    const why = can ? "not in this state" : "needs the operator role";
    const ran = job.exitedAt != null; // tests judge what a run left: a job that never ran has nothing to test
    const held = job.status === "approval_required" && !job.cancelRequested;
    clear(
      actions,
      btn("Cancel", cancel, can && !ended && !job.cancelRequested, why),
      btn("Re-run", rerun, can, why),
      btn("Test", test, can && ended && ran, can && ended ? "the job never ran: nothing to test" : why),
      btn("Roll back", rollback, can && job.status === "succeeded", why),
      session.canApprove && held ? [btn("Approve", () => decide("approve"), true), btn("Deny", () => decide("deny"), true)] : null,
      h("button", { type: "button", onclick: download }, "Download output"),
    );
  }

  function renderFindings() {
    const warnings = job.warnings || [];
    clear(
      findings,
      h("h2", { id: "findings-title" }, "Analysis"),
      h("p", {}, `Severity: ${job.severity || "none"}`),
      warnings.length
        ? h("ul", { class: "findings" }, warnings.map((w) => h("li", { class: `sev-${w.severity}` }, h("strong", {}, `${w.severity} ${w.type}: `), w.message)))
        : h("p", { class: "muted" }, noFindings()),
      (job.suggestions || []).length ? h("ul", {}, job.suggestions.map((s) => h("li", {}, s))) : null,
    );
  }

  // Only a finished analysis can say it found nothing; a job refused or ended before it says less.
  function noFindings() {
    if (job.validatedAt || job.severity) return "No findings.";
    return TERMINAL.has(job.status) ? "No findings recorded." : "Not analysed yet.";
  }

  function renderHistory() {
    clear(
      historyList,
      [...history.values()]
        .sort((a, b) => a.seq - b.seq)
        .map((e) =>
          h(
            "li",
            { class: `lvl-${e.level}`, dataset: { seq: e.seq } },
            h("time", { datetime: e.ts }, fmtTime(e.ts)),
            " ",
            h("strong", {}, e.kind),
            " ",
            e.message,
            e.by ? h("span", { class: "muted" }, ` (${e.by})`) : null,
            e.counted === false ? h("em", {}, " (not counted)") : null,
          ),
        ),
    );
  }

  async function loadHistory() {
    try {
      const res = await api(`/api/v1/jobs/${enc}/history`);
      for (const e of res.events) history.set(e.seq, e);
      renderHistory();
    } catch {
      /* the stream's events stay; the job's facts say what failed */
    }
  }

  async function loadTests() {
    try {
      const res = await api(`/api/v1/jobs/${enc}/test-results`);
      clear(
        tests,
        h("h2", { id: "tests-title" }, "Tests"),
        res.pending
          ? h("p", { class: "warn" }, "A test run is in progress: its results show here when it ends.")
          : res.passed === null
            ? h("p", { class: "muted" }, "No tests ran.")
            : h("p", {}, res.passed ? "All tests passed." : "Some tests failed."),
        res.results.length
          ? h(
              "table",
              {},
              h("thead", {}, h("tr", {}, ["Test", "Passed", "Expected", "Actual"].map((t) => h("th", { scope: "col" }, t)))),
              h("tbody", {}, res.results.map((r) => h("tr", {}, h("td", {}, r.type), h("td", {}, r.passed ? "yes" : "no"), h("td", {}, r.expected), h("td", {}, r.actual)))),
            )
          : null,
      );
    } catch (err) {
      clear(tests, h("h2", { id: "tests-title" }, "Tests"), errorBox(err));
    }
  }

  async function reload() {
    try {
      job = await api(`/api/v1/jobs/${enc}`);
      renderHead();
      loadHistory();
      if (TERMINAL.has(job.status)) loadTests();
    } catch (err) {
      clear(head, h("h1", { id: "job-title" }, "Job ", h("code", {}, jobId)), errorBox(err));
    }
  }

  async function act(fn) {
    try {
      const said = await fn(); // a line of text, or a decision's answer already laid out
      msg.replaceChildren(said instanceof Node ? said : h("p", {}, said));
    } catch (err) {
      msg.replaceChildren(errorBox(err));
    }
    reload();
  }
  const cancel = () => act(async () => (await api(`/api/v1/jobs/${enc}/cancel`, { method: "POST", body: {} }), "Cancel requested."));
  const decide = (what) => act(async () => answerLine(await api(`/api/v1/jobs/${enc}/${what}`, { method: "POST", body: {} }), jobId));
  const rerun = () =>
    act(async () => {
      // The server sends the job's stored request again (its env too, secrets still sealed): the
      // new job runs as this one did. Nothing is rebuilt here from the view, which hides the env.
      const created = await api(`/api/v1/jobs/${enc}/rerun`, { method: "POST" });
      location.hash = `#/jobs/${encodeURIComponent(created.jobId)}`;
      return "Submitted again.";
    });
  const test = () =>
    act(async () => {
      const list = job.tests?.length ? job.tests : [{ type: "exit_code", expected: 0 }];
      const res = await api(`/api/v1/jobs/${enc}/test`, { method: "POST", body: { tests: list } });
      loadTests();
      // A test with a verification job is judged when that job ends (the feed reloads this page then).
      if (res.pending) return "Test run started.";
      return res.passed ? "Tests passed." : "Tests failed.";
    });
  const rollback = () =>
    act(async () => {
      const started = await api(`/api/v1/jobs/${enc}/rollback`, { method: "POST", body: {} });
      location.hash = `#/jobs/${encodeURIComponent(started.jobId)}`;
      return "Rollback started.";
    });
  function download() {
    const blob = new Blob(output, { type: "application/octet-stream" });
    const a = h("a", { href: URL.createObjectURL(blob), download: `${jobId}.out` });
    document.body.append(a);
    a.click();
    setTimeout(() => (URL.revokeObjectURL(a.href), a.remove()), 1000);
  }

  const stream = follow(`/api/v1/jobs/${enc}/stream`, {
    onState: (s) => (streamState.textContent = s === "live" ? "(live)" : s === "closed" ? (streamStopped ? "(stopped)" : "(complete)") : `(${s})`),
    onError: (err) => {
      streamStopped = true; // e.g. an id that can never be valid: asking again would not help
      msg.replaceChildren(errorBox(err));
    },
    onMessage: (m) => {
      if (m.type === "output_chunk") {
        const bytes = b64bytes(m.dataB64);
        output.push(bytes);
        term.write(bytes, () => {
          const need = Math.min(MAX_ROWS, term.buffer.active.length);
          if (need > term.rows) term.resize(term.cols, need);
        });
      } else if (m.type === "status") {
        if (!history.has(m.seq)) {
          history.set(m.seq, { seq: m.seq, ts: m.ts, kind: m.category, message: m.message, level: m.level });
          renderHistory();
        }
        if (job && m.status !== job.status) {
          job.status = m.status;
          renderHead();
        }
      } else if (m.type === "done") {
        termBox.dataset.done = "true";
        setTimeout(reload, 200);
      }
    },
  });
  // Whatever happens to the job, during its run or after (tests, a rollback), shows without a reload.
  const later = debounce(reload, 200);
  const off = onFeed((item) => {
    if (item.entity === "job" && item.id === jobId) later();
  });
  reload();
  return () => {
    stream.close();
    off();
    window.removeEventListener("resize", fit);
    term.dispose();
  };
}
