"""What should happen now: the pure half of the orchestrator's loop.

Given the views, the live heartbeats, the publishes not folded in yet and `now`,
the planner says which entities are due and returns, per entity, a `Plan`: the
events to publish, in order, and the sequence the entity's own events must
expect (optimistic concurrency). `orchestrator.runner` publishes plans; nothing
here does I/O, reads a clock or logs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrator.core import decide
from orchestrator.core.active_jobs import ActiveJobs
from orchestrator.core.outgoing import reject
from orchestrator.core.pipeline import decide_pipeline
from orchestrator.core.pipeline_views import PipelineView
from orchestrator.core.policy import Policy
from orchestrator.core.verdicts import rollback_done
from orchestrator.core.views import JobView, NodeView
from schemas import msgids, subjects
from schemas.envelope import Outgoing
from schemas.errors import InvalidSubject
from schemas.events import JobAssigned, JobRejected, NodeHeartbeat, NodeLost, NodeRegistered
from schemas.limits import MAX_REASON_CHARS
from schemas.pipelines import PipelineFailed, PipelineRejected, PipelineStepFinished, PipelineStepStarted
from schemas.records import Record


@dataclass(frozen=True)
class InFlight:
    """Our last publish for an entity, which the projection may not have folded in yet."""

    seq: int
    node: str | None = None  # the node a job was just assigned to: it holds a slot there already


@dataclass(frozen=True)
class Plan:
    """Events for one entity. Those on `own` subjects (the entity's) go out as one
    chain, the first expecting `expected`; the others are idempotent by message id.
    `expected` None: no chain, every event stands on its message id alone."""

    key: str
    outs: tuple[Outgoing, ...]
    own: str = ""
    expected: int | None = None
    chained: bool = True  # False: each own event expects `expected` (a node's decisions)

    @property
    def node(self) -> str | None:
        """The node a job's plan assigns it to."""
        return next((o.event.node for o in self.outs if isinstance(o.event, JobAssigned)), None)

    def is_own(self, out: Outgoing) -> bool:
        return bool(self.own) and out.subject.startswith(self.own)


Pending = Mapping[str, InFlight]


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


_JOB = job_key("")


def node_key(node_id: str) -> str:
    return f"node:{node_id}"


def pipeline_key(pipeline_id: str) -> str:
    return f"pipeline:{pipeline_id}"


def waiting(pending: Pending, key: str, last_seq: int) -> bool:
    """Our last decision for the entity is not folded in yet: deciding again would be stale."""
    mine = pending.get(key)
    return mine is not None and mine.seq > last_seq


# ---------------------------------------------------------------- jobs


def fleet(
    nodes: Mapping[str, NodeView],
    beats: Mapping[str, NodeHeartbeat],
    jobs: ActiveJobs,
    pending: Pending,
    *,
    ttl_s: float,
    quiet_since: datetime,
    lag_s: float = 0.0,
    offline_grace_s: float = decide.Fleet.offline_grace_s,
) -> decide.Fleet:
    """The fleet as decisions see it: a job assigned by a publish not folded in yet holds its slot."""
    load = dict(jobs.load)
    for key, mine in pending.items():  # what is in flight: the runner forgets what the log has caught up with
        job = jobs.get(key.removeprefix(_JOB)) if key.startswith(_JOB) else None
        if job is None or not mine.node or mine.seq <= job.last_seq:
            continue
        if job.on_node and job.node:  # its slot moves to the node of our decision
            left = load[job.node] - 1
            if left:
                load[job.node] = left
            else:
                del load[job.node]
        load[mine.node] = load.get(mine.node, 0) + 1
    warming_until = quiet_since + timedelta(seconds=ttl_s)
    return decide.Fleet(
        views=nodes, heartbeats=beats, load=load, ttl_s=ttl_s, warming_until=warming_until, lag_s=lag_s, offline_grace_s=offline_grace_s
    )


def jobs_due(
    jobs: ActiveJobs, touched: Iterable[str], queued: Iterable[str], pending: Pending, priority_of: Callable[[str | None, int], int]
) -> list[JobView]:
    """The jobs to decide now, most urgent first: those touched and those `queued` (the queue, or
    none of it while no slot is free), less those whose last decision is not folded in yet."""
    ids = dict.fromkeys(queued)  # the queue comes in the order it was queued: the sort below finds it nearly sorted
    ids.update(dict.fromkeys(touched))
    held = {j for key in pending if key.startswith(_JOB) and (j := key.removeprefix(_JOB)) in ids}  # in flight: few
    due = jobs.views_of(ids)
    if held:
        due = [v for v in due if v.job_id not in held or not waiting(pending, job_key(v.job_id), v.last_seq)]
    # Priority first, then the order of request, as one integer (sequences are below 2**64): a
    # deep queue is sorted after every batch, and integers compare much faster than tuples.
    return sorted(due, key=lambda v: (-priority_of(v.requested_by, v.priority) << 64) + v.first_seq)


def plan_job(job: JobView, outs: Iterable[Outgoing]) -> Plan:
    return Plan(key=job_key(job.job_id), outs=tuple(outs), own=subjects.job(job.job_id, ""), expected=job.last_seq)


def refused(job: JobView, expected: int, now: datetime, why: str) -> Plan:
    """The job's decision was refused for good (too large, say): reject the job, so it never holds a node's slot."""
    out = reject(job, now, "publish_refused", f"a decision for this job could not be stored: {why}")
    return Plan(key=job_key(job.job_id), outs=tuple(out), own=subjects.job(job.job_id, ""), expected=expected)


def pipeline_refused(view: PipelineView, refused: Outgoing | None, expected: int, now: datetime, why: str) -> Plan:
    """A pipeline's decision was refused for good (a step over thousands of nodes whose
    `step_started` is over the size limit, say): deciding again gives the same event, so the
    pipeline would wait for ever. A step that could not start fails (what ran before is rolled
    back as for any failed step); any other refused decision fails the pipeline."""
    if refused is not None and isinstance(refused.event, PipelineStepStarted):
        step = refused.event.step
        reason = f"its start could not be stored: {why}"[:MAX_REASON_CHARS]
        kind, msg_id = "step_finished", msgids.pipeline(view.pipeline_id, "step_finished", step)
        event: PipelineStepFinished | PipelineFailed = PipelineStepFinished(ts=now, step=step, status="failed", reason=reason)
    else:
        kind, msg_id = "failed", msgids.pipeline(view.pipeline_id, "failed")
        event = PipelineFailed(ts=now, reason=f"a decision for this pipeline could not be stored: {why}"[:MAX_REASON_CHARS])
    out = Outgoing(subjects.pipeline(view.pipeline_id, kind), event, msg_id)
    return Plan(key=pipeline_key(view.pipeline_id), outs=(out,), own=subjects.pipeline(view.pipeline_id, ""), expected=expected)


def rejection(rec: Record, now: datetime) -> Plan | None:
    """The rejection of a job's or a pipeline's `requested` payload that does not decode; None
    without a valid job or pipeline id."""
    try:
        ref = subjects.parse(rec.subject)
    except InvalidSubject:  # no valid id to reject; the events row keeps the reason
        return None
    reason = f"payload does not decode: {rec.error}"[:MAX_REASON_CHARS]
    raw = rec.raw.decode("utf-8", errors="replace")[:4096]
    if ref.family == "pipeline":
        ev_pipe = PipelineRejected(ts=now, code="invalid_payload", reason=reason, raw=raw)
        out = Outgoing(subjects.pipeline(ref.id, "rejected"), ev_pipe, msgids.pipeline(ref.id, "rejected", rec.seq))
        return Plan(key=pipeline_key(ref.id), outs=(out,), own=subjects.pipeline(ref.id, ""), expected=rec.seq)
    if ref.family != "job":
        return None
    ev = JobRejected(ts=now, code="invalid_payload", reason=reason, raw=raw)
    out = Outgoing(subjects.job(ref.id, "rejected"), ev, msgids.job(ref.id, "rejected", rec.seq))
    return Plan(key=job_key(ref.id), outs=(out,), own=subjects.job(ref.id, ""), expected=rec.seq)


def followup(out: Outgoing) -> Plan:
    """An event about another entity (a rollback done): idempotent by its message id."""
    return Plan(key="", outs=(out,))


def followups(changed: Iterable[JobView], now: datetime) -> list[Plan]:
    """Events about other jobs that a batch calls for: a rollback job that succeeded marks what it undid."""
    return [followup(done) for job in changed if (done := rollback_done(job, now)) is not None]


def parents_to_decide(changed: Iterable[JobView]) -> set[str]:
    """A finished verification job moves its parent's test run on."""
    return {j.parent for j in changed if j.terminal and j.parent and j.metadata.get("verifies") == j.parent}


# ---------------------------------------------------------------- pipelines


def pipelines_touched(changed_pipelines: Iterable[str], changed_jobs: Iterable[JobView]) -> set[str]:
    """Pipelines to decide after a batch: those whose events it held, and those of its step jobs."""
    of_jobs = {p for j in changed_jobs if isinstance(p := j.metadata.get("pipeline"), str)}
    return set(changed_pipelines) | of_jobs


def plan_pipeline(
    view: PipelineView, jobs: Mapping[str, JobView], fleet: decide.Fleet, now: datetime, policy: Policy, *, enforcing: bool
) -> Plan:
    """The pipeline's next events; the live nodes of label steps are only trusted once the fleet is known.
    The policy says who may answer its gates; `enforcing`: identities are enforced, so its steps
    count only the jobs the orchestrator requested (core.pipeline.decide_pipeline)."""
    fleet_nodes: dict[str, list[str]] = {}
    if not fleet.warming(now):
        for spec in view.spec.steps:
            if spec.labels:
                fleet_nodes[spec.id] = decide.capable_nodes(fleet, spec.tool, spec.labels, now)
    outs = decide_pipeline(view, jobs, fleet_nodes, now, policy, enforcing=enforcing)
    return Plan(key=pipeline_key(view.pipeline_id), outs=tuple(outs), own=subjects.pipeline(view.pipeline_id, ""), expected=view.last_seq)


# ---------------------------------------------------------------- nodes


def plan_nodes(
    nodes: Mapping[str, NodeView],
    beats: Mapping[str, NodeHeartbeat],
    node_ids: Iterable[str],
    pending: Pending,
    now: datetime,
    *,
    ttl_s: float,
    quiet_since: datetime,
    lag_s: float = 0.0,
    heard_until: datetime | None = None,
) -> list[Plan]:
    plans = []
    for node_id in node_ids:
        view = nodes.get(node_id)
        seq = view.last_seq if view else 0
        if waiting(pending, node_key(node_id), seq):
            continue
        outs = decide_node(view, beats.get(node_id), now, ttl_s, quiet_since, lag_s, heard_until)
        if outs:
            plans.append(Plan(key=node_key(node_id), outs=tuple(outs), own=subjects.node(node_id, ""), expected=seq, chained=False))
    return plans


def decide_node(
    view: NodeView | None,
    hb: NodeHeartbeat | None,
    now: datetime,
    ttl_s: float,
    since: datetime,
    lag_s: float = 0.0,
    heard_until: datetime | None = None,
) -> list[Outgoing]:
    """Register a new or changed node; declare a silent one lost.

    `since` is when this orchestrator started: a node is not declared lost
    before it has had a full TTL to send a heartbeat to us. `lag_s`: how far
    behind the stored heartbeats we have read; silence in that time is not
    counted (a beat may be there, unread). `heard_until`: the last moment the
    heartbeat store was known to take writes; silence after it is not counted
    (a beat may have been refused, not left unsent).
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
        ev = NodeRegistered(ts=now, tools=hb.tools, labels=hb.labels, max_jobs=hb.max_jobs, hostname=hb.hostname, version=hb.version)
        return [Outgoing(subjects.node(node_id, "registered"), ev, msgids.node(node_id, "registered", seq))]
    if view is None or view.status != "online":
        return []
    last = hb.ts if hb is not None else since
    counted_to = now if heard_until is None else min(now, heard_until)
    if (counted_to - max(last, since)).total_seconds() - lag_s <= ttl_s:
        return []
    ev_lost = NodeLost(ts=now, reason=f"no heartbeat for more than {ttl_s:g}s", last_seen=hb.ts if hb else None)
    return [Outgoing(subjects.node(view.node_id, "lost"), ev_lost, msgids.node(view.node_id, "lost", view.last_seq))]
