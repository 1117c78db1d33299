"""Phase 1's vocabulary: a job as submitted, the nodes it could land on, and the verdict. Pure.

`orchestrator.core.judge.judge(submission, policy, nodes)` is the one function that turns a
`Submission` into a `Judgement`; the orchestrator's phase 1, `nexus validate` and
`POST /api/v1/jobs/validate` all call it, so they cannot disagree. This module only holds
the types, so that the decider (which reads a `Judgement`) does not depend on the judge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

from orchestrator.core.risk_types import SEVERITY_RANK, Severity
from schemas.values import Finding, JobTest

Denial = Literal["permission_denied", "policy_denied"]
Unplaceable = Literal["unknown_node", "tool_missing", "no_capable_node"]


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """What admission needs to know of a node: its labels, its tools, whether it is live."""

    labels: Mapping[str, str]
    tools: Sequence[str]
    live: bool

    def matches(self, selectors: Mapping[str, str]) -> bool:
        return all(self.labels.get(k) == v for k, v in selectors.items())


class Companion(msgspec.Struct, frozen=True, kw_only=True):
    """Another command run for the same job or step, with its tool, env and working directory:
    a pipeline step's `health_check` or `rollback`. Its findings count for the job."""

    role: str
    command: str


class Submission(msgspec.Struct, frozen=True, kw_only=True):
    """A job as phase 1 judges it: what runs (command, tool, env, tests, working directory),
    where (named nodes, else label selectors) and for whom.

    A job names at most one node; `nexus validate` and the API's validate may name several
    ("would this be allowed on each of them"). `secrets` names env entries whose values are
    secret besides those the redaction patterns match: they are never read by the analysis.
    """

    command: str
    tool: str = "bash"
    env: dict[str, str] = {}
    secrets: list[str] = []
    tests: list[JobTest] = []
    working_dir: str | None = None
    timeout_s: float | None = None
    nodes: list[str] = []
    labels: dict[str, str] = {}
    user: str | None = None
    companions: list[Companion] = []
    job_id: str | None = None
    after: list[str] = []


class Judgement(msgspec.Struct, frozen=True, kw_only=True):
    """The one verdict on a submission.

    `invalid`: the request can never run as given (an empty command, a NUL byte, an env name
    no process can have, a job waiting for itself: `reason` says which); nothing else was
    judged. `denied`: refused by the policy (`reason` says why). `unplaceable`: no known node could
    ever take it (`reason` too); None when the fleet was not consulted. `findings` are the
    analysis of everything that would run (the argv built for the tool, test commands,
    companions, code in `env`), their messages true for this job's targets; `node_findings`
    describe the named nodes (unknown, offline, missing the tool) and never decide approval.
    """

    invalid: str | None = None
    denied: Denial | None = None
    unplaceable: Unplaceable | None = None
    reason: str | None = None
    findings: list[Finding] = []
    node_findings: list[Finding] = []
    suggestions: list[str] = []
    parsed: bool = True
    production: bool = False
    approval_needed: bool = False
    approval_reason: str | None = None

    @property
    def severity(self) -> Severity | None:
        """The worst finding of the analysis (node findings excluded)."""
        return worst(self.findings)

    @property
    def valid(self) -> bool:
        """Runnable, not refused, placeable, and no critical finding (of the analysis or of the named nodes)."""
        critical = any(f.severity == "critical" for f in (*self.findings, *self.node_findings))
        return self.invalid is None and self.denied is None and self.unplaceable is None and not critical


def placement_problem(
    named: Sequence[str], selectors: Mapping[str, str], tool: str, nodes: Mapping[str, Candidate]
) -> tuple[Unplaceable, str] | None:
    """Why no node known (live or not) could ever take the job: (code, reason); None when one could,
    now or once it is heard from again."""
    for target in named:
        node = nodes.get(target)
        if node is None:
            return "unknown_node", f"node {target!r} is not registered"
        if tool not in node.tools:
            return "tool_missing", f"tool {tool!r} is not installed on node {target!r}"
        if not node.matches(selectors):
            return "no_capable_node", lacks_labels(target, node, selectors)
    if named or any(tool in n.tools and n.matches(selectors) for n in nodes.values()):
        return None
    sel = f" with labels {dict(selectors)}" if selectors else ""
    return "no_capable_node", f"no node{sel} has tool {tool!r}"


def lacks_labels(node_id: str, node: Candidate, selectors: Mapping[str, str]) -> str:
    """Why a named node cannot take a job whose label selectors it does not match."""
    missing = sorted(k for k, v in selectors.items() if node.labels.get(k) != v)
    wanted = ", ".join(f"{k}={selectors[k]}" for k in missing)
    has = ", ".join(f"{k}={node.labels[k]}" for k in missing if k in node.labels)
    return f"node {node_id!r} does not have the labels {wanted}" + (f" (it has {has})" if has else "")


def worst(findings: Sequence[Finding]) -> Severity | None:
    if not findings:
        return None
    return max((f.severity for f in findings), key=SEVERITY_RANK.__getitem__)
