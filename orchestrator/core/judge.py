"""The one verdict of phase 1: validity, findings and whether a job needs approval. Pure.

`judge(submission, policy, nodes)` is called, and the answer used as it is, by the
orchestrator's phase 1 (`orchestrator.service` hands it to the decider), `nexus validate`
and `POST /api/v1/jobs/validate`. Nothing else in `orchestrator/` calls the analysis or
applies the approval rule (tests/unit/test_judge.py checks the imports).

What is analysed is what will run, not what the request says:

- the argv the agent gets (`decide.dispatch_for`): a shell tool runs the command, any other
  tool is a capability and the command runs under bash, so `tool: psql` is checked as the
  shell line bash runs, not as SQL;
- every `command` test (the agent runs it under bash on the node), and the job's companions
  (a pipeline step's health check and rollback);
- with the job's `env` written out (`job_env.expand`): `$CMD` with `CMD` in `env` is checked as
  its value; env entries the shell or the loader run (`BASH_FUNC_x%%`, `PROMPT_COMMAND`,
  `BASH_ENV`, `LD_PRELOAD`, ...) are checked as code, or fail closed when they name a file.

Before any of that, a request that can never run as given is `invalid` (`invalid_request`
below): an empty command, a command longer than a request may carry, a NUL byte or an env
name no process can take (schemas.runnable), shell text bash would refuse to parse
(`shell_parse.syntax_error`: `echo "hello`, `if true; then echo x`), a job whose `after`
names itself, a test that could never be judged (an output_contains pattern RE2 refuses:
`assertions.tests_problem`). Such a job is rejected; it never reaches a node.

The worst finding of all of them is the job's. A finding holds the job when the policy says
so for its targets (`Policy.needs_approval`), and its message says what is true for this job:
"requires approval" when it holds it, "requires approval on production nodes" when only
production would, "review before running" otherwise.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

import msgspec

from orchestrator.core import decide, job_env
from orchestrator.core.admission import Candidate, Companion, Judgement, Submission, lacks_labels, placement_problem, worst
from orchestrator.core.analysis import analyze
from orchestrator.core.assertions import tests_problem
from orchestrator.core.policy import Policy
from orchestrator.core.risk_types import SEVERITY_RANK, Severity
from orchestrator.core.shell_parse import syntax_error
from orchestrator.core.views import JobView
from schemas import runnable
from schemas.limits import MAX_COMMAND_CHARS
from schemas.secrets import MASK, is_sealed
from schemas.values import CommandTest, Finding

# dispatch_for stamps a time on the dispatch; nothing judged depends on it.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The agent runs a `command` test as `bash -c TEST` (agent/checks.py).
_TEST_SHELL = "bash"
# Shells whose grammar bashlex reads (zsh, ksh and fish accept forms it does not).
_CHECKED_SHELLS = frozenset({"bash", "sh", "dash"})
_HOLDS = " - requires approval"
_HOLDS_ON_PRODUCTION = " - requires approval on production nodes"
_REVIEW = " - review before running"


class _Run(NamedTuple):
    """One piece of code that will run for the job: who runs it, the text as submitted and as expanded."""

    role: str  # "" for the job's own command
    text: str
    interpreter: str
    expanded: str


def judge(sub: Submission, policy: Policy, nodes: Mapping[str, Candidate] | None, secrets: Mapping[str, str] | None = None) -> Judgement:
    """The verdict on `sub` under `policy`. `nodes`: every node known (live or not), or None when
    the fleet is not at hand (`nexus validate` offline: the selectors stand for the target).
    `secrets`: the clear values of secret env entries the submission holds masked or sealed
    (the orchestrator opens them); those it holds in clear are used as they are."""
    if (why := invalid(sub)) is not None:
        return Judgement(invalid=why, reason=why, findings=[Finding(type="invalid_request", severity="critical", message=why)])
    targets = _targets(sub, nodes)
    production = any(policy.is_production(t) for t in targets) or policy.is_production(sub.labels)
    values = job_env.readable(sub.env, sub.secrets)
    runs = list(_runs(sub, values))

    found: list[Finding] = []
    suggestions: list[str] = []
    parsed = True
    for run in runs:
        result = analyze(run.expanded, run.interpreter, sub.working_dir)
        parsed &= result.parsed
        found += [_in(run.role, f) for f in result.findings]
        suggestions += [s for s in result.suggestions if s not in suggestions]
    found += _unreadable_code(sub, values)
    found += _with_secrets(sub, values, runs, secrets or {}, worst(found))
    findings = [_truthful(f, policy, production) for f in dict.fromkeys(found)]

    held = [f for f in findings if policy.needs_approval(f.severity, production)]
    reason = None
    if held:
        severity = worst(held)
        top = next(f for f in held if f.severity == severity)
        where = " on a production node" if production else ""
        reason = f"{severity} command{where} needs approval: {top.message}"
    verdict = Judgement(
        findings=findings,
        node_findings=_node_findings(sub, nodes) if nodes is not None else [],
        suggestions=suggestions,
        parsed=parsed,
        production=production,
        approval_needed=bool(held),
        approval_reason=reason,
    )
    # A job that will not run needs no approval: refused, or no node could ever take it.
    refused = msgspec.structs.replace(verdict, approval_needed=False, approval_reason=None)
    if not policy.may_submit(sub.user):
        return msgspec.structs.replace(
            refused,
            denied="permission_denied",
            reason=f"user {sub.user!r} may not submit jobs"
            if sub.user is not None
            else "an unsigned request (no user) may not submit jobs where the policy lists users",
        )
    for run in runs:
        denial = policy.denial(
            run.text, sub.tool, targets, interpreter=run.interpreter, expanded=run.expanded, env_path=sub.env.get("PATH")
        )
        if denial is not None:
            return msgspec.structs.replace(refused, denied="policy_denied", reason=f"{_label(run.role)}{denial}")
    if nodes is not None and (problem := placement_problem(sub.nodes, sub.labels, sub.tool, nodes)) is not None:
        code, why = problem
        shown = verdict.node_findings if sub.nodes else [Finding(type=code, severity="critical", message=why)]
        return msgspec.structs.replace(refused, unplaceable=code, reason=why, node_findings=shown)
    return verdict


def invalid(sub: Submission) -> str | None:
    """Why `sub` can never run as given; None when it could."""
    return unrunnable(sub) or syntax_problem(sub)


def unrunnable(sub: Submission) -> str | None:
    """Why no process could take `sub` (empty, too long, a NUL byte, a bad env name, waiting for itself)."""
    if not sub.command.strip():
        return "the command is empty (or only white space): there is nothing to run"
    if sub.job_id is not None and sub.job_id in sub.after:
        return f"the job waits for itself: its `after` names its own id {sub.job_id!r}, so it could never start"
    if len(sub.command) > MAX_COMMAND_CHARS:
        return f"the command is {len(sub.command):,} characters long; a job's command may be at most {MAX_COMMAND_CHARS:,}"
    texts = [("the command", sub.command), ("the tool", sub.tool), ("the working directory", sub.working_dir or "")]
    texts += [("a test command", t.command) for t in sub.tests if isinstance(t, CommandTest)]
    texts += [(f"the {c.role}", c.command) for c in sub.companions]
    for what, text in texts:
        if (problem := runnable.holds_nul(what, text)) is not None:
            return problem
    return runnable.env_problem(sub.env) or tests_problem(sub.tests)


def syntax_problem(sub: Submission) -> str | None:
    """A shell text that bash would refuse before running any of it: the job can only fail."""
    shell = sub.tool if sub.tool in decide.SHELLS else _TEST_SHELL
    texts = [("the command", sub.command, shell)] if shell in _CHECKED_SHELLS else []
    texts += [("a test command", t.command, _TEST_SHELL) for t in sub.tests if isinstance(t, CommandTest)]
    texts += [(f"the {c.role}", c.command, shell) for c in sub.companions if shell in _CHECKED_SHELLS]
    for what, text, program in texts:
        if (error := syntax_error(text)) is not None:
            return f"{what} is not valid {program} syntax: {error}"
    return None


def submission_of(job: JobView, companions: Sequence[Companion] = ()) -> Submission:
    """A requested job as phase 1 judges it (its env as the view holds it: secrets masked)."""
    return Submission(
        command=job.command,
        tool=job.tool,
        env=dict(job.env),
        secrets=list(job.secrets),
        tests=list(job.tests),
        working_dir=job.working_dir,
        timeout_s=job.timeout_s,
        nodes=[job.requested_node] if job.requested_node is not None else [],
        labels=dict(job.labels),
        user=job.requested_by,
        companions=list(companions),
        job_id=job.job_id,
        after=list(job.after),
    )


# ---------------------------------------------------------------- what runs


def _runs(sub: Submission, values: Mapping[str, str]) -> Iterator[_Run]:
    yield _reader("", decide.dispatch_for(sub, 1, _EPOCH).argv, values)
    for test in sub.tests:
        if isinstance(test, CommandTest):
            yield _Run("test command", test.command, _TEST_SHELL, job_env.expand(test.command, values))
    for companion in sub.companions:
        twin = msgspec.structs.replace(sub, command=companion.command, tests=[])
        yield _reader(companion.role, decide.dispatch_for(twin, 1, _EPOCH).argv, values)
    for code in job_env.executed(sub.env):
        if code.kind == "text" and code.name in values:
            yield _Run(f"env {code.name}", code.value, _TEST_SHELL, code.value)


def _reader(role: str, argv: list[str], values: Mapping[str, str]) -> _Run:
    """The code in an argv and the program that reads it: `SHELL -c TEXT` is TEXT read by
    SHELL; any other argv is what bash would run if handed it as a line."""
    if len(argv) == 3 and argv[1] == "-c" and posixpath.basename(argv[0]) in decide.SHELLS:
        return _Run(role, argv[2], argv[0], job_env.expand(argv[2], values))
    line = shlex.join(argv)
    return _Run(role, line, "bash", line)


def _with_secrets(
    sub: Submission, values: Mapping[str, str], runs: list[_Run], opened: Mapping[str, str], seen: Severity | None
) -> list[Finding]:
    """The code judged again with the secret env values written out: `rm -rf $DIR_TOKEN` with
    `DIR_TOKEN=/` is what `rm -rf $DIR` with `DIR=/` is. What that finds never reaches a finding
    (findings are stored in the log): only its severity does, when it is worse than what was
    seen without the secrets. (Env entries run as code are judged apart: a secret one fails
    closed, `_unreadable_code`.)"""
    hidden = {n: v for n, v in sub.env.items() if n not in values and v != MASK and not is_sealed(v)}
    hidden.update((n, v) for n, v in opened.items() if n in sub.env and n not in values)
    if not hidden:
        return []
    worse: tuple[Severity, str] | None = None
    for before, run in zip(runs, _runs(sub, {**values, **hidden}), strict=False):
        if run.role.startswith("env ") or run.expanded == before.expanded:
            continue
        severity = worst(analyze(run.expanded, run.interpreter, sub.working_dir).findings)
        if severity is not None and (worse is None or SEVERITY_RANK[severity] > SEVERITY_RANK[worse[0]]):
            worse = (severity, run.role)
    if worse is None or (seen is not None and SEVERITY_RANK[worse[0]] <= SEVERITY_RANK[seen]):
        return []
    severity, role = worse
    message = (f"the {role or 'command'} is {severity} with its secret env values written out (what it would do "
               f"is not shown: that would show the secrets){_HOLDS}")  # fmt: skip
    return [Finding(type="secret_value", severity=severity, message=message)]


def _unreadable_code(sub: Submission, values: Mapping[str, str]) -> list[Finding]:
    """Env entries run as code that the analysis cannot read: fail closed."""
    found = []
    for code in job_env.executed(sub.env):
        if code.kind == "text" and code.name in values:
            continue
        what = f"'{code.value[:200]}'" if code.name in values else "a secret value"
        runs = "names code the shell or the dynamic loader loads" if code.kind == "file" else "is run as shell code"
        message = f"env {code.name} {runs} ({what}); it cannot be checked{_HOLDS}"
        found.append(Finding(type="unresolved_command", severity="critical", message=message, command=f"{code.name}=..."))
    return found


def _in(role: str, f: Finding) -> Finding:
    return f if not role else msgspec.structs.replace(f, message=f"{_label(role)}{f.message}")


def _label(role: str) -> str:
    return f"{role[0].upper()}{role[1:]}: " if role else ""


def _truthful(f: Finding, policy: Policy, production: bool) -> Finding:
    """The finding's message, saying what this job's policy and targets make true."""
    if policy.needs_approval(f.severity, production):
        tail = _HOLDS
    elif policy.needs_approval(f.severity, True):
        tail = _HOLDS_ON_PRODUCTION
    else:
        tail = _REVIEW
    for claim in (_HOLDS_ON_PRODUCTION, _HOLDS, _REVIEW):
        if f.message.endswith(claim):
            return f if claim == tail else msgspec.structs.replace(f, message=f.message[: -len(claim)] + tail)
    return f


# ---------------------------------------------------------------- where it runs


def _targets(sub: Submission, nodes: Mapping[str, Candidate] | None) -> list[dict[str, str]]:
    """Label sets of the nodes the job could land on: the named nodes', else every live node
    with the tool whose labels match the selectors, else the selectors themselves."""
    known = nodes or {}
    if sub.nodes:
        return [dict(known[n].labels) if n in known else {} for n in sub.nodes]
    found = [dict(n.labels) for n in known.values() if n.live and sub.tool in n.tools and n.matches(sub.labels)]
    return found or [dict(sub.labels)]


def _node_findings(sub: Submission, nodes: Mapping[str, Candidate]) -> list[Finding]:
    found: list[Finding] = []
    for node_id in sub.nodes:
        node = nodes.get(node_id)
        if node is None:
            found.append(Finding(type="unknown_node", severity="critical", message=f"node {node_id!r} is not registered"))
        elif not node.live:
            found.append(Finding(type="node_offline", severity="warning", message=f"node {node_id!r} is offline (no heartbeat)"))
        elif sub.tool not in node.tools:
            message = f"tool {sub.tool!r} is not installed on node {node_id!r}"
            found.append(Finding(type="tool_missing", severity="critical", message=message))
        if node is not None and not node.matches(sub.labels):
            found.append(Finding(type="no_capable_node", severity="critical", message=lacks_labels(node_id, node, sub.labels)))
    return found
