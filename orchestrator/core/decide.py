"""Decisions: what the orchestrator publishes next for a job or a node.

Pure functions of the views, the live heartbeats and `now`. Each returns the
events to publish on the entity's subjects, in order; the adapter publishes
them with per-entity optimistic concurrency, so a stale decision is refused by
the server rather than applied twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from orchestrator.core import assertions
from orchestrator.core.policy import Policy
from orchestrator.core.views import ON_NODE, PLACEABLE, JobStatus, JobView, NodeView
from schemas import codec, msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import (
    Event,
    JobApprovalRequired,
    JobAssigned,
    JobCancel,
    JobCancelled,
    JobDispatch,
    JobFailed,
    JobLost,
    JobQueued,
    JobRejected,
    JobRequested,
    JobRolledBack,
    JobSucceeded,
    JobTested,
    JobTimedOut,
    JobValidated,
    NodeHeartbeat,
    NodeLost,
    NodeRegistered,
)
from schemas.limits import MAX_EVENT_BYTES
from schemas.values import NODE_TESTS, ExitCodeTest, Finding, JobTest, TestResult

SHELLS = frozenset({"bash", "sh", "zsh", "dash", "ksh"})


@dataclass
class Fleet:
    """What the decider knows about nodes right now."""

    views: Mapping[str, NodeView]
    heartbeats: Mapping[str, NodeHeartbeat]
    load: dict[str, int] = field(default_factory=dict)
    ttl_s: float = 10.0
    # Until one TTL after the orchestrator started (or got its NATS connection
    # back), a node we have not heard from may simply not have reached us yet:
    # wait, don't reject, don't declare anything lost.
    warming_until: datetime | None = None

    def warming(self, now: datetime) -> bool:
        return self.warming_until is not None and now < self.warming_until

    def is_live(self, node_id: str, now: datetime) -> bool:
        hb = self.heartbeats.get(node_id)
        return hb is not None and (now - hb.ts).total_seconds() <= self.ttl_s


@dataclass(frozen=True)
class Review:
    """The analysis of one command, as the decider needs it."""

    severity: str | None = None
    warnings: tuple[Finding, ...] = ()
    suggestions: tuple[str, ...] = ()
    duration_ms: float = 0.0


@dataclass(frozen=True)
class Context:
    """What a decision may depend on besides the job and the fleet."""

    policy: Policy = field(default_factory=Policy)
    review: Review | None = None
    # Status of each job named in this job's `after`, if known.
    statuses: Mapping[str, str] = field(default_factory=dict)
    # What the output tests found in the attempt's output (streamed: assertions.OutputScan),
    # or its whole text view; None when no test needs it or it cannot be read.
    output: assertions.OutputScan | str | None = None
    # The verification job of a later test run, once it exists.
    verification: JobView | None = None


def argv_for(tool: str, command: str) -> list[str]:
    """How the agent runs a command: shells interpret it, any other tool is a
    capability the node must have, and the command line runs under bash."""
    if tool in SHELLS:
        return [tool, "-c", command]
    return ["bash", "-c", command]


def decide_job(job: JobView, fleet: Fleet, now: datetime, ctx: Context | None = None) -> list[Outgoing]:
    ctx = ctx or Context()
    if job.terminal:
        return _retest(job, now, ctx) if job.retest else []
    if job.cancel_requested:
        if job.status in ("requested", "validated", "approval_required", "approved", "queued"):
            return [_out(job, JobCancelled(ts=now, reason="cancelled before it was dispatched"), "cancelled")]
        if job.status in ON_NODE and not job.cancel_sent and job.node is not None:
            cancel = JobCancel(ts=now, attempt=job.attempt)
            kill = Outgoing(subjects.cancel(job.job_id, job.node), cancel, msgids.job(job.job_id, "cancel", job.attempt))
            if job.status in ("assigned", "dispatched"):
                # Not accepted yet: once the cancel is in the log the agent's `accepted`
                # (which expects the dispatch to be the job's last event) can never be
                # stored, so the command will not run; the job ends here.
                return [kill, _out(job, JobCancelled(ts=now, reason="cancelled before the agent took it"), "cancelled")]
            return [kill]
    if job.status == "requested":
        return _analyse(job, fleet, now, ctx)
    if job.status == "approved" and not ctx.policy.may_approve(job.approved_by):
        reason = f"{job.approved_by!r} may not approve this job; waiting for an approver"
        hold = JobApprovalRequired(ts=now, reason=reason, approvers=ctx.policy.approvers)
        return [Outgoing(subjects.job(job.job_id, "approval_required"), hold, msgids.job(job.job_id, "approval_required", job.last_seq))]
    if job.status in PLACEABLE:
        waiting = _dependencies(job, now, ctx)
        if waiting is not None:
            return waiting
        return _place(job, fleet, now)
    if job.status == "exited":
        if job.tests and job.killed_by is None and job.exit_code is not None:
            results = assertions.evaluate(job.tests, job.exit_code, ctx.output, job.checks)
            passed = all(r.passed for r in results)
            tested = _out(job, JobTested(ts=now, attempt=job.attempt, passed=passed, results=results), "tested")
            # Without an explicit exit_code test, "exited as expected" still means exit 0.
            exit_ok = job.exit_code == 0 or any(isinstance(t, ExitCodeTest) for t in job.tests)
            if not (passed and exit_ok):
                problems = [] if exit_ok else [f"exit code {job.exit_code}"]
                failed = ", ".join(f"{r.type} (expected {r.expected}, got {r.actual})" for r in results if not r.passed)
                if failed:
                    problems.append(f"tests failed: {failed}")
                failure = JobFailed(ts=now, attempt=job.attempt, reason="; ".join(problems), exit_code=job.exit_code)
                return [tested, _out(job, failure, "failed")]
            return [tested, _out(job, JobSucceeded(ts=now, attempt=job.attempt, exit_code=job.exit_code), "succeeded")]
        return [_verdict(job, now)]
    if job.status == "assigned" and job.node is not None and fleet.is_live(job.node, now):
        # The dispatch of this attempt never reached the log (the publish after
        # `assigned` failed): send it again, same message id. Had it been stored,
        # the job's last sequence would have moved and the server refuses this.
        dispatch = _dispatch(job, job.attempt, now)
        return [Outgoing(subjects.dispatch(job.job_id, job.node), dispatch, msgids.job(job.job_id, "dispatch", job.attempt))]
    if job.status in ON_NODE and job.node is not None:
        why: str | None = None
        hb = fleet.heartbeats.get(job.node)
        if not fleet.is_live(job.node, now):
            if fleet.warming(now):
                return []
            why = f"node {job.node} stopped sending heartbeats; the command's outcome is unknown"
        elif job.status in ("accepted", "running") and hb and job.instance and hb.instance != job.instance:
            why = f"the agent on {job.node} restarted while the job ran; the command's outcome is unknown"
        if why:
            retry = job.idempotent and job.attempt <= job.retries
            if retry:
                why += f"; retrying as attempt {job.attempt + 1} (declared idempotent, retries={job.retries})"
            lost = JobLost(ts=now, node=job.node, attempt=job.attempt, reason=why, will_retry=retry)
            return [_out(job, lost, "lost")]
    return []


def rollback_done(job: JobView, now: datetime) -> Outgoing | None:
    """When a rollback job succeeds, the job it undid is marked `rolled_back`."""
    target = job.metadata.get("rollback_of")
    if job.status != "succeeded" or not isinstance(target, str) or not subjects.is_valid_id(target):
        return None
    ev = JobRolledBack(ts=now, rollback_job=job.job_id)
    return Outgoing(subjects.job(target, "rolled_back"), ev, msgids.job(target, "rolled_back", job.job_id))


def _retest(job: JobView, now: datetime, ctx: Context) -> list[Outgoing]:
    """Tests on a finished job: node-side ones through a verification job on its node."""
    node_tests: list[JobTest] = [t for t in job.retest if isinstance(t, NODE_TESTS)]
    checks: list[TestResult] = []
    if node_tests:
        child = ctx.verification
        if child is None:
            if job.node is None or job.retest_job is None:
                results = [TestResult(type="node", passed=False, expected="a node to check on", actual="the job never ran on a node")]
                return [_out(job, JobTested(ts=now, attempt=job.attempt, passed=False, results=results), "tested")]
            req = JobRequested(
                command="true", node=job.node, tests=node_tests, parent=job.job_id, metadata={"verifies": job.job_id}, ts=now
            )
            return [Outgoing(subjects.job(job.retest_job, "requested"), req, msgids.job_request(job.retest_job))]
        if not child.terminal:
            return []
        checks = [r for r in child.test_results if r.type in ("file_exists", "http_ok", "command")] or list(child.checks)
    results = assertions.evaluate(job.retest, job.exit_code, ctx.output, checks)
    tested = JobTested(ts=now, attempt=job.attempt, passed=all(r.passed for r in results), results=results)
    return [Outgoing(subjects.job(job.job_id, "tested"), tested, msgids.job(job.job_id, "tested", job.last_seq))]


def _targets(job: JobView, fleet: Fleet, now: datetime) -> list[dict[str, str]]:
    """Label sets of the nodes the job could land on (for policy checks)."""
    if job.requested_node is not None:
        hb = fleet.heartbeats.get(job.requested_node)
        view = fleet.views.get(job.requested_node)
        return [dict(hb.labels if hb else view.labels if view else {})]
    found = [
        dict(hb.labels)
        for n, hb in fleet.heartbeats.items()
        if fleet.is_live(n, now) and job.tool in hb.tools and all(hb.labels.get(k) == v for k, v in job.labels.items())
    ]
    return found or [dict(job.labels)]


def _analyse(job: JobView, fleet: Fleet, now: datetime, ctx: Context) -> list[Outgoing]:
    """Phase 1: permissions, deny/allow rules, risk findings, approval for production."""
    policy = ctx.policy
    if not policy.may_submit(job.requested_by):
        return reject(job, now, "permission_denied", f"user {job.requested_by!r} may not submit jobs")
    targets = _targets(job, fleet, now)
    denial = policy.denial(job.command, job.tool, targets)
    if denial is not None:
        return reject(job, now, "policy_denied", denial)
    problem = unplaceable(job, fleet)
    if problem is not None:
        # Never ask a human to approve what no node can run; after a restart, first
        # give the nodes a TTL to be heard from.
        return [] if fleet.warming(now) else reject(job, now, *problem)
    size = len(codec.encode(_dispatch(job, 1, now)))
    if size > MAX_EVENT_BYTES:
        return reject(job, now, "too_large", f"the job's dispatch would be {size} bytes, over the limit of {MAX_EVENT_BYTES}")
    review = ctx.review or Review()
    production = any(policy.is_production(t) for t in targets) or policy.is_production(job.labels)
    approval = policy.needs_approval(review.severity, production)
    validated = JobValidated(
        ts=now,
        severity=review.severity,  # type: ignore[arg-type]
        warnings=list(review.warnings),
        suggestions=list(review.suggestions),
        duration_ms=review.duration_ms,
        approval_needed=approval,
    )
    first = _out(job, validated, "validated")
    if approval:
        worst = next((w.message for w in review.warnings if w.severity == review.severity), review.severity)
        reason = f"{review.severity} command on a production node needs approval: {worst}"
        return [first, _out(job, JobApprovalRequired(ts=now, reason=reason, approvers=policy.approvers), "approval_required")]
    # Place in the same decision when possible, so a job costs one round trip.
    after = _with_status(job, JobStatus.VALIDATED)
    rest = _dependencies(after, now, ctx)
    return [first, *(rest if rest is not None else _place(after, fleet, now))]


def _with_status(job: JobView, status: JobStatus) -> JobView:
    return msgspec.structs.replace(job, status=status)


def _dependencies(job: JobView, now: datetime, ctx: Context) -> list[Outgoing] | None:
    """None when every job in `after` succeeded; else the events (maybe none) for waiting or giving up."""
    if not job.after:
        return None
    failed = [j for j in job.after if ctx.statuses.get(j) in ("rejected", "denied", "failed", "timed_out", "cancelled", "lost")]
    if failed:
        return reject(job, now, "dependency_failed", f"job(s) it depends on did not succeed: {', '.join(failed)}")
    pending = [j for j in job.after if ctx.statuses.get(j) != "succeeded"]
    if not pending:
        return None
    if job.status == "queued":
        return []
    return [_out(job, JobQueued(ts=now, reason=f"waiting for job(s) {', '.join(pending)} to succeed"), "queued")]


def unplaceable(job: JobView, fleet: Fleet) -> tuple[str, str] | None:
    """Why no node known to us, live or not, could ever take the job: (code, reason);
    None when one could, now or once it is heard from again."""
    known = {n: (v.tools, v.labels) for n, v in fleet.views.items()}
    known.update({n: (hb.tools, hb.labels) for n, hb in fleet.heartbeats.items()})
    if job.requested_node is not None:
        target = job.requested_node
        if target not in known:
            return "unknown_node", f"node {target!r} is not registered"
        if job.tool not in known[target][0]:
            return "tool_missing", f"tool {job.tool!r} is not installed on node {target!r}"
        return None
    if any(job.tool in tools and all(labels.get(k) == v for k, v in job.labels.items()) for tools, labels in known.values()):
        return None
    sel = f" with labels {job.labels}" if job.labels else ""
    return "no_capable_node", f"no node{sel} has tool {job.tool!r}"


def _place(job: JobView, fleet: Fleet, now: datetime) -> list[Outgoing]:
    if job.requested_node is not None:
        target = job.requested_node
        candidates = [target] if fleet.is_live(target, now) and job.tool in fleet.heartbeats[target].tools else []
        waiting = f"node {target!r} is not heard from (offline); waiting for it to come back"
    else:
        candidates = capable_nodes(fleet, job.tool, job.labels, now)
        sel = f" with labels {job.labels}" if job.labels else ""
        waiting = f"no live node{sel} has tool {job.tool!r}; waiting for one to come back"
    if not candidates:
        if fleet.warming(now):
            return []
        problem = unplaceable(job, fleet)
        if problem is not None:
            return reject(job, now, *problem)
        # A node that was live a moment ago and is merely not heard from (a broker
        # restart, a network blip) makes the job wait, not fail.
        return [] if job.status == "queued" else [_out(job, JobQueued(ts=now, reason=waiting), "queued")]
    free = [n for n in candidates if fleet.load.get(n, 0) < fleet.heartbeats[n].max_jobs]
    if not free:
        if job.status == "queued":
            return []
        reason = f"all {len(candidates)} capable node(s) are at their max concurrent jobs"
        return [_out(job, JobQueued(ts=now, reason=reason), "queued")]
    ranked = rank_nodes(fleet, free, job.prefer)
    chosen = ranked[0]
    attempt = job.attempt + 1
    why = "requested node" if job.requested_node else explain_choice(fleet, ranked, job.prefer)
    fleet.load[chosen] = fleet.load.get(chosen, 0) + 1
    assigned = JobAssigned(ts=now, node=chosen, attempt=attempt, candidates=candidates, reason=why)
    return [
        _out(job, assigned, "assigned", attempt),
        Outgoing(subjects.dispatch(job.job_id, chosen), _dispatch(job, attempt, now), msgids.job(job.job_id, "dispatch", attempt)),
    ]


def _dispatch(job: JobView, attempt: int, now: datetime) -> JobDispatch:
    return JobDispatch(
        ts=now,
        attempt=attempt,
        tool=job.tool,
        command=job.command,
        argv=argv_for(job.tool, job.command),
        working_dir=job.working_dir,
        env=job.env,
        timeout_s=job.timeout_s,
        tests=[t for t in job.tests if isinstance(t, NODE_TESTS)],
    )


def capable_nodes(fleet: Fleet, tool: str, labels: Mapping[str, str], now: datetime) -> list[str]:
    """Live nodes that have the tool and match the label selector, by name."""
    return sorted(
        n
        for n, hb in fleet.heartbeats.items()
        if fleet.is_live(n, now) and tool in hb.tools and all(hb.labels.get(k) == v for k, v in labels.items())
    )


def _cost(labels: Mapping[str, str]) -> float:
    try:
        return float(labels.get("cost", "inf"))
    except ValueError:
        return float("inf")


def rank_nodes(fleet: Fleet, nodes: list[str], prefer: Mapping[str, str]) -> list[str]:
    """Best first: lowest load (active / max), then matching the preferred labels
    (location, e.g. region), then lowest `cost` label, then name."""

    def key(n: str) -> tuple[float, int, float, str]:
        hb = fleet.heartbeats[n]
        load = fleet.load.get(n, 0) / max(hb.max_jobs, 1)
        misses = sum(hb.labels.get(k) != v for k, v in prefer.items())
        return (load, misses, _cost(hb.labels), n)

    return sorted(nodes, key=key)


def explain_choice(fleet: Fleet, ranked: list[str], prefer: Mapping[str, str]) -> str:
    def describe(n: str) -> str:
        hb = fleet.heartbeats[n]
        extra = [f"{k}={hb.labels[k]}" for k in (*prefer, "cost") if k in hb.labels]
        return f"{n} ({fleet.load.get(n, 0)}/{hb.max_jobs}{', ' + ', '.join(extra) if extra else ''})"

    rest = ", ".join(describe(n) for n in ranked[1:4]) + (", ..." if len(ranked) > 4 else "")
    return f"least loaded, then preferred labels, then cost: {describe(ranked[0])}" + (f" over {rest}" if rest else "")


def optimal_node(fleet: Fleet, tool: str, labels: Mapping[str, str], prefer: Mapping[str, str], now: datetime) -> tuple[str | None, str]:
    """The node a job with this tool and selector would get now, and why (for `nodes --optimal`)."""
    candidates = capable_nodes(fleet, tool, labels, now)
    if not candidates:
        return None, f"no live node has tool {tool!r}" + (f" with labels {dict(labels)}" if labels else "")
    free = [n for n in candidates if fleet.load.get(n, 0) < fleet.heartbeats[n].max_jobs]
    if not free:
        return None, f"all {len(candidates)} capable node(s) are busy; a job would be queued"
    ranked = rank_nodes(fleet, free, prefer)
    return ranked[0], explain_choice(fleet, ranked, prefer)


def _verdict(job: JobView, now: datetime) -> Outgoing:
    a = job.attempt
    if job.killed_by == "timeout":
        return _out(job, JobTimedOut(ts=now, attempt=a, timeout_s=job.timeout_s), "timed_out")
    if job.killed_by == "cancel":
        return _out(job, JobCancelled(ts=now, reason="cancelled while running"), "cancelled")
    if job.exit_code is None:
        reason = job.reason or (f"killed by signal {job.signal}" if job.signal else "did not exit normally")
        return _out(job, JobFailed(ts=now, attempt=a, reason=reason), "failed")
    expected = next((t.expected for t in job.tests if isinstance(t, ExitCodeTest)), 0)
    if job.exit_code != expected:
        reason = f"exit code {job.exit_code}" + (f", expected {expected}" if expected else "")
        return _out(job, JobFailed(ts=now, attempt=a, reason=reason, exit_code=job.exit_code), "failed")
    return _out(job, JobSucceeded(ts=now, attempt=a, exit_code=job.exit_code), "succeeded")


def reject(job: JobView, now: datetime, code: str, reason: str) -> list[Outgoing]:
    """The job will not run: `code` for machines, `reason` for people."""
    return [_out(job, JobRejected(ts=now, code=code, reason=reason), "rejected")]


def _out(job: JobView, ev: Event, kind: str, attempt: int | None = None) -> Outgoing:
    a = job.attempt if attempt is None else attempt
    return Outgoing(subjects.job(job.job_id, kind), ev, msgids.job(job.job_id, kind, a))


def decide_node(
    view: NodeView | None, hb: NodeHeartbeat | None, now: datetime, ttl_s: float, since: datetime
) -> list[Outgoing]:
    """Register a new or changed node; declare a silent one lost.

    `since` is when this orchestrator started: a node is not declared lost
    before it has had a full TTL to send a heartbeat to us.
    """
    if hb is not None and (now - hb.ts).total_seconds() <= ttl_s:
        node_id = hb.node
        changed = (
            view is None
            or view.status != "online"
            or sorted(view.tools) != sorted(hb.tools)
            or view.labels != hb.labels
            or view.max_jobs != hb.max_jobs
        )
        if not changed:
            return []
        seq = view.last_seq if view else 0
        ev = NodeRegistered(
            ts=now, tools=hb.tools, labels=hb.labels, max_jobs=hb.max_jobs, hostname=hb.hostname, version=hb.version
        )
        return [Outgoing(subjects.node(node_id, "registered"), ev, msgids.node(node_id, "registered", seq))]
    if view is None or view.status != "online":
        return []
    last = hb.ts if hb is not None else since
    if (now - max(last, since)).total_seconds() <= ttl_s:
        return []
    ev_lost = NodeLost(ts=now, reason=f"no heartbeat for more than {ttl_s:g}s", last_seen=hb.ts if hb else None)
    return [Outgoing(subjects.node(view.node_id, "lost"), ev_lost, msgids.node(view.node_id, "lost", view.last_seq))]
