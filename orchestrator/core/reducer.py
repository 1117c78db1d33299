"""The reducer: a deterministic fold of log records into job and node views.

`apply(jobs, nodes, record)` returns what changed; the projection writes it.
No clock, no random ids, no I/O: rebuilding from sequence 1 gives the same rows.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from datetime import datetime
from typing import assert_never

import msgspec

from orchestrator.core.pipeline_views import PipelineView, evolve_pipeline
from orchestrator.core.views import JobView, NodeView
from schemas import subjects
from schemas.codec import event_type
from schemas.errors import InvalidSubject
from schemas.events import (
    ApiCalled,
    Event,
    JobAccepted,
    JobApprovalRequired,
    JobApproved,
    JobAssigned,
    JobCancel,
    JobCancelled,
    JobCancelRequested,
    JobDenied,
    JobDispatch,
    JobExited,
    JobFailed,
    JobLost,
    JobQueued,
    JobRejected,
    JobRequested,
    JobRolledBack,
    JobStarted,
    JobSucceeded,
    JobTested,
    JobTestRequested,
    JobTimedOut,
    JobValidated,
    NodeEvent,
    NodeLost,
    NodeRegistered,
)
from schemas.pipelines import PipelineEvent
from schemas.records import Record


class EventRow(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the `events` table."""

    seq: int
    subject: str
    type: str
    ts: datetime
    job_id: str | None
    node_id: str | None
    pipeline_id: str | None
    payload: str
    error: str | None


class Applied(msgspec.Struct, frozen=True, kw_only=True):
    row: EventRow
    job: JobView | None = None
    node: NodeView | None = None
    pipeline: PipelineView | None = None


def apply(
    jobs: Mapping[str, JobView],
    nodes: Mapping[str, NodeView],
    rec: Record,
    pipelines: Mapping[str, PipelineView] | None = None,
) -> Applied:
    """Fold one record. The mappings must hold the views of the ids the record names."""
    ts = rec.event.ts if rec.event is not None and rec.event.ts is not None else rec.stream_ts
    try:
        ref: subjects.SubjectRef | None = subjects.parse(rec.subject)
    except InvalidSubject:
        ref = None
    job_id = ref.id if ref and ref.family == "job" else None
    node_id = ref.id if ref and ref.family == "node" else (ref.node if ref else None)
    pipeline_id = ref.id if ref and ref.family == "pipeline" else None

    error = rec.error
    job: JobView | None = None
    node: NodeView | None = None
    pipeline: PipelineView | None = None
    if rec.event is None or ref is None:
        etype = ref.type if ref else "invalid"
        if error is None:
            error = "subject is not a Nexus event subject"
    else:
        etype = event_type(rec.event)
        ev = rec.event
        if isinstance(ev, NodeRegistered | NodeLost):
            node = evolve_node(nodes.get(ref.id), ref.id, ev, ts, rec.seq)
        elif isinstance(ev, ApiCalled):
            pass  # the HTTP API's audit trail: a row in `events`, no view
        elif isinstance(ev, PipelineEventTypes):
            pipeline = evolve_pipeline((pipelines or {}).get(ref.id), ref.id, ev, ts, rec.seq)
            if pipeline is None:
                error = "event for an unknown pipeline, ignored"
        elif job_id is not None:
            before = jobs.get(job_id)
            job, error = evolve_job(before, job_id, ev, ts, rec.seq)
            if job is not None:
                node_id = node_id or job.node
    moved = touch_entities(rec, jobs, nodes, pipelines or {})
    job, node, pipeline = job or moved[0], node or moved[1], pipeline or moved[2]
    payload = rec.raw.decode("utf-8", errors="replace")
    row = EventRow(
        seq=rec.seq,
        subject=rec.subject,
        type=etype,
        ts=ts,
        job_id=job_id,
        node_id=node_id,
        pipeline_id=pipeline_id,
        payload=payload,
        error=error,
    )
    return Applied(row=row, job=job, node=node, pipeline=pipeline)


PipelineEventTypes = typing.get_args(PipelineEvent)


def touch_entities(
    rec: Record, jobs: Mapping[str, JobView], nodes: Mapping[str, NodeView], pipelines: Mapping[str, PipelineView]
) -> tuple[JobView | None, NodeView | None, PipelineView | None]:
    """The views whose `last_seq` this record moves, whatever its payload.

    The server counts every message on `nexus.evt.<family>.<id>.>` in that entity's
    last sequence, decodable or not; decisions expect it (optimistic concurrency).
    A view that did not follow would have every later decision refused as stale."""
    parts = rec.subject.split(".")
    if len(parts) < 5 or parts[:2] != ["nexus", "evt"]:
        return None, None, None
    family, ident = parts[2], parts[3]
    if family == "job" and ident in jobs:
        return _touched(jobs[ident], rec.seq), None, None
    if family == "node" and ident in nodes:
        return None, msgspec.structs.replace(nodes[ident], last_seq=rec.seq), None
    if family == "pipeline" and ident in pipelines:
        return None, None, msgspec.structs.replace(pipelines[ident], last_seq=rec.seq)
    return None, None, None


def quarantine_row(rec: Record, reason: str) -> EventRow:
    """The `events` row of a record whose effects were discarded: kept, with the reason."""
    try:
        ref: subjects.SubjectRef | None = subjects.parse(rec.subject)
    except InvalidSubject:
        ref = None
    return EventRow(
        seq=rec.seq,
        subject=rec.subject,
        type=ref.type if ref else "invalid",
        ts=rec.stream_ts,
        job_id=ref.id if ref and ref.family == "job" else None,
        node_id=ref.id if ref and ref.family == "node" else (ref.node if ref else None),
        pipeline_id=ref.id if ref and ref.family == "pipeline" else None,
        payload=rec.raw.decode("utf-8", errors="replace").replace("\x00", "\\u0000"),
        error=reason,
    )


def evolve_job(
    job: JobView | None, job_id: str, ev: Event, ts: datetime, seq: int
) -> tuple[JobView | None, str | None]:
    """Next view of one job, and a note when the event changes nothing."""
    if isinstance(ev, JobRequested):
        if job is not None:
            # Still advance last_seq: decisions expect the job's last subject sequence.
            return _touched(job, seq), "duplicate job.requested: the job already exists, ignored"
        return (
            JobView(
                job_id=job_id,
                status="requested",
                command=ev.command,
                tool=ev.tool,
                requested_node=ev.node,
                labels=dict(ev.labels),
                prefer=dict(ev.prefer),
                working_dir=ev.working_dir,
                env=dict(ev.env),
                timeout_s=ev.timeout_s,
                priority=ev.priority,
                tests=list(ev.tests),
                parent=ev.parent,
                metadata=dict(ev.metadata),
                requested_by=ev.requested_by,
                after=list(ev.after),
                retries=ev.retries,
                idempotent=ev.idempotent,
                requested_at=ts,
                first_seq=seq,
                last_seq=seq,
            ),
            None,
        )
    if job is None:
        if isinstance(ev, JobRejected):
            # A requested payload that never decoded: the rejection is the job's only record.
            return (
                JobView(
                    job_id=job_id,
                    status="rejected",
                    command="",
                    reason=ev.reason,
                    requested_at=ts,
                    finished_at=ts,
                    first_seq=seq,
                    last_seq=seq,
                ),
                None,
            )
        return None, "event for an unknown job, ignored"

    before = job
    job = _touched(job, seq)
    was_terminal = job.terminal
    match ev:
        case JobValidated():
            job.status = "validated"
            job.severity = ev.severity
            job.warnings = list(ev.warnings)
            job.suggestions = list(ev.suggestions)
            job.validation_ms = ev.duration_ms
            job.validated_at = ts
        case JobApprovalRequired():
            job.status = "approval_required"
            job.reason = ev.reason
        case JobApproved():
            if job.status == "approval_required":
                job.status = "approved"
                job.approved_by = ev.by
                job.reason = ev.reason
        case JobDenied():
            if job.status == "approval_required":
                _finish(job, "denied", ts, f"denied by {ev.by}" + (f": {ev.reason}" if ev.reason else ""))
        case JobRejected():
            _finish(job, "rejected", ts, ev.reason)
        case JobQueued():
            job.status = "queued"
            job.reason = ev.reason
            job.queued_at = job.queued_at or ts
        case JobAssigned():
            job.status = "assigned"
            job.node = ev.node
            job.attempt = ev.attempt
            job.assigned_at = ts
            job.placement = ev.reason
            job.reason = None
        case JobDispatch():
            job.status = "dispatched"
        case JobAccepted():
            job.status = "accepted"
            job.accepted_at = ts
            job.instance = ev.instance
        case JobStarted():
            job.status = "running"
            job.started_at = ts
        case JobExited():
            job.status = "exited"
            job.exit_code = ev.exit_code
            job.signal = ev.signal
            job.killed_by = ev.killed_by
            job.duration_ms = ev.duration_ms
            job.output_bytes = ev.output_bytes
            job.chunks = ev.chunks
            job.exited_at = ts
            job.checks = list(ev.checks)
            if ev.error:
                job.reason = ev.error
        case JobTested():
            job.tests_passed = ev.passed
            job.test_results = list(ev.results)
            job.retest = []
        case JobRolledBack():
            job.rollback_job = ev.rollback_job
            job.rolled_back_at = ts
        case JobTestRequested():
            if not job.terminal or job.retest:
                return _touched(before, seq), "tests can run on a finished job, one request at a time; ignored"
            job.retest = list(ev.tests)
            job.retest_job = verification_job_id(job.job_id, seq)
        case JobSucceeded():
            _finish(job, "succeeded", ts, None)
        case JobFailed():
            _finish(job, "failed", ts, ev.reason)
        case JobTimedOut():
            _finish(job, "timed_out", ts, f"timed out after {ev.timeout_s:g}s" if ev.timeout_s else "timed out")
        case JobCancelRequested():
            job.cancel_requested = True
        case JobCancel():
            job.cancel_sent = True
        case JobCancelled():
            _finish(job, "cancelled", ts, ev.reason)
        case JobLost():
            if ev.will_retry:
                job.status = "queued"
                job.reason = ev.reason
                job.queued_at = ts
            else:
                _finish(job, "lost", ts, ev.reason)
        case NodeRegistered() | NodeLost() | JobRequested() | ApiCalled():
            return None, "not a job event"
        case _:
            # Pipeline events never reach here (apply routes them); anything else is a bug.
            if not isinstance(ev, PipelineEventTypes):
                assert_never(ev)  # type: ignore[arg-type]
            return None, "not a job event"
    if was_terminal and not job.terminal:
        return _touched(before, seq), "event after the job ended, ignored"
    return job, None


def verification_job_id(job_id: str, seq: int) -> str:
    """Deterministic id of the job that checks a finished job's node-side tests."""
    suffix = f"-t{seq}"
    return job_id[: 64 - len(suffix)] + suffix


def _touched(job: JobView, seq: int) -> JobView:
    return msgspec.structs.replace(job, last_seq=seq)


def _finish(job: JobView, status: str, ts: datetime, reason: str | None) -> None:
    if job.terminal:
        return
    job.status = status  # type: ignore[assignment]
    job.finished_at = ts
    if reason is not None:
        job.reason = reason


def evolve_node(node: NodeView | None, node_id: str, ev: NodeEvent, ts: datetime, seq: int) -> NodeView:
    view = NodeView(node_id=node_id) if node is None else msgspec.structs.replace(node)
    view.last_seq = seq
    match ev:
        case NodeRegistered():
            view.status = "online"
            view.tools = list(ev.tools)
            view.labels = dict(ev.labels)
            view.max_jobs = ev.max_jobs
            view.hostname = ev.hostname
            view.version = ev.version
            view.registered_at = ts
            view.lost_at = None
        case NodeLost():
            view.status = "lost"
            view.lost_at = ts
        case _:
            assert_never(ev)
    return view
