"""Decisions: what the orchestrator publishes next for a job or a node.

Pure functions of the views, the live heartbeats and `now`. Each returns the
events to publish on the entity's subjects, in order; the adapter publishes
them with per-entity optimistic concurrency, so a stale decision is refused by
the server rather than applied twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, assert_never

import msgspec

from orchestrator.core import assertions
from orchestrator.core.admission import Candidate, Judgement, placement_problem
from orchestrator.core.outgoing import out, reject
from orchestrator.core.policy import Policy
from orchestrator.core.verdicts import exited, retest
from orchestrator.core.views import TERMINAL, JobStatus, JobView, NodeView
from schemas import codec, msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import (
    JobApprovalRequired,
    JobAssigned,
    JobCancel,
    JobCancelled,
    JobDispatch,
    JobLost,
    JobQueued,
    JobValidated,
    NodeHeartbeat,
)
from schemas.limits import DISPATCH_TTL_S, MAX_EVENT_BYTES
from schemas.values import NODE_TESTS, JobTest

S = JobStatus
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
    # How far behind the heartbeats stored the orchestrator has read (0: caught up): a node
    # may have beaten in that time without our knowing yet, so its silence is counted without it.
    lag_s: float = 0.0
    # How long after a node's last heartbeat the jobs that need it wait for it to come back (a
    # restart, a network blip); past that it is gone, and they are rejected rather than held for ever.
    offline_grace_s: float = 300.0

    def warming(self, now: datetime) -> bool:
        return self.warming_until is not None and now < self.warming_until

    def is_live(self, node_id: str, now: datetime) -> bool:
        hb = self.heartbeats.get(node_id)
        return hb is not None and (now - hb.ts).total_seconds() - self.lag_s <= self.ttl_s

    def takes_jobs(self, node_id: str, now: datetime) -> bool:
        """Live, and its agent has not said it stopped: a node whose agent is being stopped (a
        restart, an upgrade) is given no new job, which would wait there, or be declared lost
        once the heartbeat is old. What it already holds is judged by `is_live` as before."""
        hb = self.heartbeats.get(node_id)
        return hb is not None and not hb.stopped and self.is_live(node_id, now) and not self.drained(node_id)

    def drained(self, node_id: str) -> bool:
        """Taken out of placement by an operator (`node.drained`): no new job goes there."""
        view = self.views.get(node_id)
        return view is not None and view.drained

    def last_heard(self, node_id: str) -> datetime | None:
        """The node's last heartbeat, else when it was last known to be there (lost, registered)."""
        hb = self.heartbeats.get(node_id)
        if hb is not None:
            return hb.ts
        view = self.views.get(node_id)
        return None if view is None else view.lost_at or view.registered_at

    def gone(self, node_id: str, now: datetime) -> bool:
        """Not heard from for longer than `offline_grace_s`: jobs stop waiting for it."""
        heard = self.last_heard(node_id)
        return heard is None or (now - heard).total_seconds() - self.lag_s > self.offline_grace_s


@dataclass(frozen=True)
class Review:
    """Phase 1's verdict on a requested job and how long it took to reach. The verdict comes
    from orchestrator.core.judge.judge, the one function `nexus validate` and the API's
    validate call too; a requested job is not decided without it."""

    judgement: Judgement
    duration_ms: float = 0.0


class CannotSeal(Exception):
    """A job's secrets cannot be sealed for a node (its request is unreadable, or sealed to another key)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Sealer(Protocol):
    """Seals one job's secret env values to a node's public key. The values and the
    cryptography stay outside the pure core (orchestrator.secrets builds it)."""

    def seal_for(self, node_key: str) -> Mapping[str, str]:
        """Each secret entry's value sealed to `node_key` (`sealed:v1:...`); raises CannotSeal."""
        ...


@dataclass(frozen=True)
class Context:
    """What a decision may depend on besides the job and the fleet."""

    policy: Policy = field(default_factory=Policy)
    review: Review | None = None
    # Status of each job named in this job's `after` that was requested before it (log order).
    # A job named there but not here never will be: it is unknown, or it came after (which is
    # also what makes a cycle of jobs waiting for each other impossible).
    statuses: Mapping[str, str] = field(default_factory=dict)
    # What the output tests found in the attempt's output (streamed: assertions.OutputScan),
    # or its whole text view; None when no test needs it or it cannot be read.
    output: assertions.OutputScan | str | None = None
    # The verification job of a later test run, once it exists.
    verification: JobView | None = None
    # Seals the job's secrets for the chosen node; None: not at hand now (a job with
    # secrets then waits for the next decision).
    sealer: Sealer | None = None


def argv_for(tool: str, command: str) -> list[str]:
    """How the agent runs a command: shells interpret it, any other tool is a
    capability the node must have, and the command line runs under bash."""
    if tool in SHELLS:
        return [tool, "-c", command]
    return ["bash", "-c", command]


def decide_job(job: JobView, fleet: Fleet, now: datetime, ctx: Context | None = None) -> list[Outgoing]:
    """What to publish next for one job: one function per status, matched exhaustively."""
    ctx = ctx or Context()
    if job.terminal:
        return retest(job, now, ctx.verification, ctx.output) if job.retest else []
    if job.cancel_requested and (cancel := _cancel(job, now)) is not None:
        return cancel
    state = job.state
    match state:
        case S.REQUESTED:
            return _analyse(job, fleet, now, ctx)
        case S.VALIDATED | S.APPROVED | S.QUEUED:
            return _placeable(job, fleet, now, ctx)
        case S.APPROVAL_REQUIRED:
            return []  # a person decides
        case S.ASSIGNED | S.DISPATCHED | S.ACCEPTED | S.RUNNING:
            return _on_node(job, fleet, now, ctx.sealer)
        case S.EXITED:
            return exited(job, now, ctx.output)
        case S.DENIED | S.REJECTED | S.SUCCEEDED | S.FAILED | S.TIMED_OUT | S.CANCELLED | S.LOST:
            return []  # terminal: handled above
        case _:
            assert_never(state)


def _cancel(job: JobView, now: datetime) -> list[Outgoing] | None:
    """A cancel the job has not had yet; None when there is nothing (more) to send."""
    if job.state.before_dispatch:
        return [out(job, JobCancelled(ts=now, reason="cancelled before it was dispatched"), "cancelled")]
    if not job.on_node or job.cancel_sent or job.node is None:
        return None
    cancel = JobCancel(ts=now, attempt=job.attempt)
    kill = Outgoing(subjects.cancel(job.job_id, job.node), cancel, msgids.job(job.job_id, "cancel", job.attempt))
    if job.status in (S.ASSIGNED, S.DISPATCHED):
        # Not accepted yet: once the cancel is in the log the agent's `accepted`
        # (which expects the dispatch to be the job's last event) can never be
        # stored, so the command will not run; the job ends here.
        return [kill, out(job, JobCancelled(ts=now, reason="cancelled before the agent took it"), "cancelled")]
    return [kill]


def _hold(reason: str, now: datetime, policy: Policy) -> JobApprovalRequired:
    """A hold for approval, naming who may decide it as the policy says now."""
    return JobApprovalRequired(ts=now, reason=reason, approvers=policy.approvers, deciders=policy.deciders())


def _placeable(job: JobView, fleet: Fleet, now: datetime, ctx: Context) -> list[Outgoing]:
    if job.status == S.APPROVED and not ctx.policy.may_approve(job.approved_by):
        reason = f"{job.approved_by!r} may not approve this job; waiting for an approver"
        hold = _hold(reason, now, ctx.policy)
        return [Outgoing(subjects.job(job.job_id, "approval_required"), hold, msgids.job(job.job_id, "approval_required", job.last_seq))]
    waiting = _dependencies(job, now, ctx)
    return waiting if waiting is not None else _place(job, fleet, now, ctx.sealer)


def _on_node(job: JobView, fleet: Fleet, now: datetime, sealer: Sealer | None = None) -> list[Outgoing]:
    """Re-send a dispatch that never reached the log; declare an attempt lost when its node or agent went away."""
    if job.node is None:
        return []
    if job.status == S.ASSIGNED and fleet.is_live(job.node, now):
        # The dispatch of this attempt never reached the log (the publish after
        # `assigned` failed): send it again, same message id. Had it been stored,
        # the job's last sequence would have moved and the server refuses this.
        try:
            dispatch = _sealed_dispatch(job, job.attempt, now, fleet.heartbeats[job.node], sealer)
        except CannotSeal as exc:
            return reject(job, now, "secret_unreadable", exc.reason)
        if dispatch is None:
            return []
        return [Outgoing(subjects.dispatch(job.job_id, job.node), dispatch, msgids.job(job.job_id, "dispatch", job.attempt))]
    hb = fleet.heartbeats.get(job.node)
    if not fleet.is_live(job.node, now):
        if fleet.warming(now):
            return []
        why = f"node {job.node} stopped sending heartbeats; the command's outcome is unknown"
    elif job.status in (S.ACCEPTED, S.RUNNING) and hb and job.instance and hb.instance != job.instance:
        why = f"the agent on {job.node} restarted while the job ran; the command's outcome is unknown"
    else:
        return []
    retry = job.idempotent and job.attempt <= job.retries
    if retry:
        why += f"; retrying as attempt {job.attempt + 1} (declared idempotent, retries={job.retries})"
    lost = out(job, JobLost(ts=now, node=job.node, attempt=job.attempt, reason=why, will_retry=retry), "lost")
    if job.status == S.ASSIGNED:
        return [lost]  # never dispatched: nothing to kill
    # Then a kill for the attempt, after the verdict (chained: never sent unless the loss is stored):
    # an agent that was only paused or cut off reads it when it is back and ends the process, whose
    # outcome no longer counts, instead of letting it run beside a retry elsewhere.
    kill = Outgoing(
        subjects.cancel(job.job_id, job.node), JobCancel(ts=now, attempt=job.attempt), msgids.job(job.job_id, "cancel", job.attempt)
    )
    return [lost, kill]


def candidates(fleet: Fleet, now: datetime) -> dict[str, Candidate]:
    """Every node we know, as admission sees it: labels and tools from its latest heartbeat
    (else its registration), and whether it is live now."""
    out = {n: Candidate(labels=v.labels, tools=v.tools, live=False) for n, v in fleet.views.items()}
    for n, hb in fleet.heartbeats.items():
        out[n] = Candidate(labels=hb.labels, tools=hb.tools, live=fleet.is_live(n, now))
    return out


def _analyse(job: JobView, fleet: Fleet, now: datetime, ctx: Context) -> list[Outgoing]:
    """Phase 1: the judgement's verdict (permissions, deny/allow rules, findings, approval), as published."""
    if ctx.review is None:
        return []  # not judged yet: the adapter judges every requested job before deciding it
    verdict = ctx.review.judgement
    found = (verdict.severity, verdict.findings)  # carried by a rejection, as `validated` would have
    if verdict.invalid is not None:
        return reject(job, now, "invalid_request", verdict.invalid, found)
    if verdict.denied is not None:
        return reject(job, now, verdict.denied, verdict.reason or verdict.denied, found)
    if verdict.unplaceable is not None:
        # Never ask a human to approve what no node can run; after a restart, first
        # give the nodes a TTL to be heard from.
        return [] if fleet.warming(now) else reject(job, now, verdict.unplaceable, verdict.reason or verdict.unplaceable, found)
    size = len(codec.encode(dispatch_for(job, 1, now)))
    if size > MAX_EVENT_BYTES:
        return reject(job, now, "too_large", f"the job's dispatch would be {size} bytes, over the limit of {MAX_EVENT_BYTES}", found)
    validated = JobValidated(
        ts=now,
        severity=verdict.severity,
        warnings=[msgspec.structs.replace(f, command=None) for f in verdict.findings],
        suggestions=list(verdict.suggestions),
        duration_ms=ctx.review.duration_ms,
        approval_needed=verdict.approval_needed,
    )
    first = out(job, validated, "validated")
    if verdict.approval_needed:
        reason = verdict.approval_reason or "the analysis holds this job for approval"
        return [first, out(job, _hold(reason, now, ctx.policy), "approval_required")]
    # Place in the same decision when possible, so a job costs one round trip.
    after = _with_status(job, JobStatus.VALIDATED)
    rest = _dependencies(after, now, ctx)
    return [first, *(rest if rest is not None else _place(after, fleet, now, ctx.sealer))]


def _with_status(job: JobView, status: JobStatus) -> JobView:
    return msgspec.structs.replace(job, status=status)


def _dependencies(job: JobView, now: datetime, ctx: Context) -> list[Outgoing] | None:
    """None when every job in `after` succeeded; else the events (maybe none) for waiting or giving up."""
    if not job.after:
        return None
    unknown = [j for j in job.after if j not in ctx.statuses]
    if unknown:
        why = f"it waits for job(s) not requested before it: {', '.join(unknown)}; a job can wait only for jobs already in the log"
        return reject(job, now, "dependency_unknown", why)
    failed = [j for j in job.after if ctx.statuses.get(j) in TERMINAL and ctx.statuses.get(j) != S.SUCCEEDED]
    if failed:
        return reject(job, now, "dependency_failed", f"job(s) it depends on did not succeed: {', '.join(failed)}")
    pending = [j for j in job.after if ctx.statuses.get(j) != "succeeded"]
    if not pending:
        return None
    if job.status == "queued":
        return []
    return [out(job, JobQueued(ts=now, reason=f"waiting for job(s) {', '.join(pending)} to succeed"), "queued")]


def unplaceable(job: JobView, fleet: Fleet) -> tuple[str, str] | None:
    """Why no node known to us, live or not, could ever take the job: (code, reason);
    None when one could, now or once it is heard from again."""
    named = [job.requested_node] if job.requested_node is not None else []
    return placement_problem(named, job.labels, job.tool, _Known(fleet))


def _gone(job: JobView, fleet: Fleet, now: datetime) -> tuple[str, str] | None:
    """Why the job stops waiting for nodes not heard from: the one it is pinned to, or every
    known node that could take it, silent past the fleet's `offline_grace_s`; None while one may come back."""
    grace = f"jobs wait at most {fleet.offline_grace_s:g}s after a node's last heartbeat"
    target = job.requested_node
    if target is not None:
        if not fleet.gone(target, now):
            return None
        heard = fleet.last_heard(target)
        when = f"since {heard.isoformat().replace('+00:00', 'Z')}" if heard is not None else "ever"
        return "node_offline", f"node {target!r} is offline: not heard from {when} ({grace})"
    if placement_problem([], job.labels, job.tool, _Known(fleet, not_gone_at=now)) is None:
        return None
    sel = f" with labels {job.labels}" if job.labels else ""
    return "no_capable_node", f"no node{sel} with tool {job.tool!r} has been heard from lately ({grace})"


class _Known(Mapping[str, Candidate]):
    """Every node known, live or not, as admission sees it (its last heartbeat's tools and labels,
    else its registration's), each made when asked for: a job that waits for a slot usually finds
    a capable node among the first. Made in full for every waiting job, 5,000 nodes for each of a
    fan-out's 5,000 jobs, this was a fifth of the orchestrator's CPU (bench/fleet.py --nodes 5000)."""

    def __init__(self, fleet: Fleet, not_gone_at: datetime | None = None) -> None:
        self._fleet = fleet
        self._now = not_gone_at  # only the nodes not gone (Fleet.gone) at this time

    def __getitem__(self, node: str) -> Candidate:
        hb = self._fleet.heartbeats.get(node)
        if hb is not None:
            return Candidate(labels=hb.labels, tools=hb.tools, live=False)
        view = self._fleet.views[node]
        return Candidate(labels=view.labels, tools=view.tools, live=False)

    def __iter__(self) -> Iterator[str]:
        fleet, now = self._fleet, self._now
        for n in itertools.chain(fleet.heartbeats, (n for n in fleet.views if n not in fleet.heartbeats)):
            if now is None or not fleet.gone(n, now):
                yield n

    def __len__(self) -> int:
        if self._now is None:
            return len(self._fleet.heartbeats.keys() | self._fleet.views.keys())
        return sum(1 for _ in self)


def _fits(job: JobView, hb: NodeHeartbeat) -> bool:
    """The node has the job's tool and the labels it selects."""
    return job.tool in hb.tools and all(hb.labels.get(k) == v for k, v in job.labels.items())


def _place(job: JobView, fleet: Fleet, now: datetime, sealer: Sealer | None = None) -> list[Outgoing]:
    if job.requested_node is not None:
        target = job.requested_node
        candidates = [target] if fleet.takes_jobs(target, now) and job.tool in fleet.heartbeats[target].tools else []
        waiting = f"node {target!r} is not heard from (offline); waiting for it to come back"
        drained_only = False
        if fleet.drained(target) and fleet.is_live(target, now):
            waiting = f"node {target!r} is drained (no new jobs); waiting until it is undrained"
            if not candidates and job.tool in fleet.heartbeats[target].tools:
                return [] if job.status == "queued" and job.reason == waiting else [out(job, JobQueued(ts=now, reason=waiting), "queued")]
    else:
        candidates = capable_nodes(fleet, job.tool, job.labels, now)
        sel = f" with labels {job.labels}" if job.labels else ""
        waiting = f"no live node{sel} has tool {job.tool!r}; waiting for one to come back"
        # Only those the job could have had: a drained node outside its selector is no reason to wait.
        drained = sorted(n for n, hb in fleet.heartbeats.items() if fleet.drained(n) and fleet.is_live(n, now) and _fits(job, hb))
        drained_only = bool(drained)
        if drained:
            waiting = f"no node{sel} that takes jobs has tool {job.tool!r} (drained: {', '.join(drained)}); waiting for one"
    if not candidates:
        if fleet.warming(now):
            return []
        problem = unplaceable(job, fleet) or _gone(job, fleet, now)
        if problem is not None:
            return reject(job, now, *problem)
        # A node that was live a moment ago and is merely not heard from (a broker
        # restart, a network blip) makes the job wait, not fail: up to the grace.
        if not drained_only:  # a drained node beats on: the job waits for it until it is undrained
            waiting += f" (at most {fleet.offline_grace_s:g}s after its last heartbeat, then the job is rejected)"
        return [] if job.status == "queued" else [out(job, JobQueued(ts=now, reason=waiting), "queued")]
    if job.secrets:
        keyed = [n for n in candidates if fleet.heartbeats[n].sealing_key]
        if not keyed:
            reason = (
                f"the job has secrets ({', '.join(job.secrets)}) and no capable node advertises a sealing key "
                f"to receive them ({', '.join(candidates)}: an agent older than the secrets support?)"
            )
            return reject(job, now, "no_sealing_key", reason)
        candidates = keyed
    free = [n for n in candidates if fleet.load.get(n, 0) < fleet.heartbeats[n].max_jobs]
    if not free:
        if job.status == "queued":
            return []
        reason = f"all {len(candidates)} capable node(s) are at their max concurrent jobs"
        return [out(job, JobQueued(ts=now, reason=reason), "queued")]
    ranked = rank_nodes(fleet, free, job.prefer)
    chosen = ranked[0]
    attempt = job.attempt + 1
    why = "requested node" if job.requested_node else explain_choice(fleet, ranked, job.prefer)
    try:
        dispatch = _sealed_dispatch(job, attempt, now, fleet.heartbeats[chosen], sealer)
    except CannotSeal as exc:
        return reject(job, now, "secret_unreadable", exc.reason)
    if dispatch is None:
        return []  # its secrets are not at hand now: the next decision places it
    fleet.load[chosen] = fleet.load.get(chosen, 0) + 1
    assigned = JobAssigned(ts=now, node=chosen, attempt=attempt, candidates=candidates, reason=why)
    return [
        out(job, assigned, "assigned", attempt),
        Outgoing(subjects.dispatch(job.job_id, chosen), dispatch, msgids.job(job.job_id, "dispatch", attempt)),
    ]


class Runnable(Protocol):
    """What a dispatch is built from: a job's view, or the request it starts from."""

    @property
    def tool(self) -> str: ...
    @property
    def command(self) -> str: ...
    @property
    def working_dir(self) -> str | None: ...
    @property
    def env(self) -> dict[str, str]: ...
    @property
    def timeout_s(self) -> float | None: ...
    @property
    def tests(self) -> list[JobTest]: ...


def dispatch_for(
    job: Runnable, attempt: int, now: datetime, sealed_env: Mapping[str, str] | None = None, *, tty: bool = True
) -> JobDispatch:
    """The command for the agent, as this job's attempt will get it (also used to size it up front).
    `sealed_env`: the job's secret entries, sealed to the node's key, in place of their masks."""
    return JobDispatch(
        ts=now,
        attempt=attempt,
        tool=job.tool,
        command=job.command,
        argv=argv_for(job.tool, job.command),
        working_dir=job.working_dir,
        env={**job.env, **sealed_env} if sealed_env else job.env,
        timeout_s=job.timeout_s,
        tests=[t for t in job.tests if isinstance(t, NODE_TESTS)],
        expires_at=now + timedelta(seconds=DISPATCH_TTL_S),
        tty=tty,
    )


def _sealed_dispatch(job: JobView, attempt: int, now: datetime, hb: NodeHeartbeat, sealer: Sealer | None) -> JobDispatch | None:
    """The dispatch for `hb`'s node with the job's secrets sealed to its key; None when they are not at hand now."""
    if not job.secrets:
        return dispatch_for(job, attempt, now, tty=job.tty)
    if not hb.sealing_key:
        raise CannotSeal(f"node {hb.node} advertises no sealing key: it cannot receive the job's secrets")
    if sealer is None:
        return None
    sealed = dict(sealer.seal_for(hb.sealing_key))
    if sorted(sealed) != sorted(job.secrets):
        raise CannotSeal(f"the job's request holds secrets {sorted(sealed)}, its view {job.secrets}")
    return dispatch_for(job, attempt, now, sealed, tty=job.tty)


def capable_nodes(fleet: Fleet, tool: str, labels: Mapping[str, str], now: datetime) -> list[str]:
    """Nodes that take jobs (live, not stopping), have the tool and match the label selector, by name."""
    return sorted(
        n
        for n, hb in fleet.heartbeats.items()
        if fleet.takes_jobs(n, now) and tool in hb.tools and all(hb.labels.get(k) == v for k, v in labels.items())
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
