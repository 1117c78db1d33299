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

from orchestrator.core.views import ON_NODE, JobView, NodeView
from schemas import subjects
from schemas.events import (
    Event,
    ExitCodeTest,
    JobAssigned,
    JobCancel,
    JobCancelled,
    JobDispatch,
    JobFailed,
    JobLost,
    JobQueued,
    JobRejected,
    JobSucceeded,
    JobTimedOut,
    NodeHeartbeat,
    NodeLost,
    NodeRegistered,
)

SHELLS = frozenset({"bash", "sh", "zsh", "dash", "ksh"})


@dataclass(frozen=True)
class Outgoing:
    """One event to publish; `msg_id` makes a retry harmless."""

    subject: str
    event: Event
    msg_id: str


@dataclass
class Fleet:
    """What the decider knows about nodes right now."""

    views: Mapping[str, NodeView]
    heartbeats: Mapping[str, NodeHeartbeat]
    load: dict[str, int] = field(default_factory=dict)
    ttl_s: float = 10.0
    # Until one TTL after the orchestrator started, a node we have not heard
    # from may simply not have sent its first heartbeat yet: wait, don't reject.
    warming_until: datetime | None = None

    def warming(self, now: datetime) -> bool:
        return self.warming_until is not None and now < self.warming_until

    def is_live(self, node_id: str, now: datetime) -> bool:
        hb = self.heartbeats.get(node_id)
        return hb is not None and (now - hb.ts).total_seconds() <= self.ttl_s


def argv_for(tool: str, command: str) -> list[str]:
    """How the agent runs a command: shells interpret it, any other tool is a
    capability the node must have, and the command line runs under bash."""
    if tool in SHELLS:
        return [tool, "-c", command]
    return ["bash", "-c", command]


def decide_job(job: JobView, fleet: Fleet, now: datetime) -> list[Outgoing]:
    if job.terminal:
        return []
    if job.cancel_requested:
        if job.status in ("requested", "queued"):
            return [_out(job, JobCancelled(ts=now, reason="cancelled before it was dispatched"), "cancelled")]
        if job.status in ON_NODE and not job.cancel_sent and job.node is not None:
            ev = JobCancel(ts=now, attempt=job.attempt)
            return [Outgoing(subjects.cancel(job.job_id, job.node), ev, f"job:{job.job_id}:cancel:{job.attempt}")]
    if job.status in ("requested", "queued"):
        return _place(job, fleet, now)
    if job.status == "exited":
        return [_verdict(job, now)]
    if job.status in ON_NODE and job.node is not None:
        reason = None
        hb = fleet.heartbeats.get(job.node)
        if not fleet.is_live(job.node, now):
            reason = f"node {job.node} stopped sending heartbeats; the command's outcome is unknown"
        elif job.status in ("accepted", "running") and hb and job.instance and hb.instance != job.instance:
            reason = f"the agent on {job.node} restarted while the job ran; the command's outcome is unknown"
        if reason:
            return [_out(job, JobLost(ts=now, node=job.node, attempt=job.attempt, reason=reason), "lost")]
    return []


def _place(job: JobView, fleet: Fleet, now: datetime) -> list[Outgoing]:
    if job.requested_node is not None:
        target = job.requested_node
        if not fleet.is_live(target, now) and fleet.warming(now):
            return []
        if target not in fleet.views and target not in fleet.heartbeats:
            return _reject(job, now, "unknown_node", f"node {target!r} is not registered")
        if not fleet.is_live(target, now):
            return _reject(job, now, "node_offline", f"node {target!r} is offline (no heartbeat)")
        if job.tool not in fleet.heartbeats[target].tools:
            return _reject(job, now, "tool_missing", f"tool {job.tool!r} is not installed on node {target!r}")
        candidates = [target]
    else:
        candidates = sorted(
            n
            for n, hb in fleet.heartbeats.items()
            if fleet.is_live(n, now)
            and job.tool in hb.tools
            and all(hb.labels.get(k) == v for k, v in job.labels.items())
        )
        if not candidates:
            if fleet.warming(now):
                return []
            sel = f" with labels {job.labels}" if job.labels else ""
            return _reject(job, now, "no_capable_node", f"no live node{sel} has tool {job.tool!r}")
    free = [n for n in candidates if fleet.load.get(n, 0) < fleet.heartbeats[n].max_jobs]
    if not free:
        if job.status == "queued":
            return []
        reason = f"all {len(candidates)} capable node(s) are at their max concurrent jobs"
        return [_out(job, JobQueued(ts=now, reason=reason), "queued")]
    chosen = min(free, key=lambda n: (fleet.load.get(n, 0) / max(fleet.heartbeats[n].max_jobs, 1), n))
    fleet.load[chosen] = fleet.load.get(chosen, 0) + 1
    attempt = job.attempt + 1
    why = "requested node" if job.requested_node else f"least loaded of {len(free)} free candidate(s)"
    assigned = JobAssigned(ts=now, node=chosen, attempt=attempt, candidates=candidates, reason=why)
    dispatch = JobDispatch(
        ts=now,
        attempt=attempt,
        tool=job.tool,
        command=job.command,
        argv=argv_for(job.tool, job.command),
        working_dir=job.working_dir,
        env=job.env,
        timeout_s=job.timeout_s,
    )
    return [
        _out(job, assigned, "assigned", attempt),
        Outgoing(subjects.dispatch(job.job_id, chosen), dispatch, f"job:{job.job_id}:dispatch:{attempt}"),
    ]


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


def _reject(job: JobView, now: datetime, code: str, reason: str) -> list[Outgoing]:
    return [_out(job, JobRejected(ts=now, code=code, reason=reason), "rejected")]


def _out(job: JobView, ev: Event, kind: str, attempt: int | None = None) -> Outgoing:
    a = job.attempt if attempt is None else attempt
    return Outgoing(subjects.job(job.job_id, kind), ev, f"job:{job.job_id}:{kind}:{a}")


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
        return [Outgoing(subjects.node(node_id, "registered"), ev, f"node:{node_id}:registered:{seq}")]
    if view is None or view.status != "online":
        return []
    last = hb.ts if hb is not None else since
    if (now - max(last, since)).total_seconds() <= ttl_s:
        return []
    ev_lost = NodeLost(ts=now, reason=f"no heartbeat for more than {ttl_s:g}s", last_seen=hb.ts if hb else None)
    return [Outgoing(subjects.node(view.node_id, "lost"), ev_lost, f"node:{view.node_id}:lost:{view.last_seq}")]
