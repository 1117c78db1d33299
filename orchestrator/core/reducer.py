"""The reducer: a deterministic fold of log records into job and node views.

`apply(jobs, nodes, record)` returns what changed; the projection writes it.
No clock, no random ids, no I/O: rebuilding from sequence 1 gives the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import NamedTuple, assert_never

import msgspec
from msgspec.structs import replace

from orchestrator.core.audit import CopyKind
from orchestrator.core.job_fold import evolve_job, touched
from orchestrator.core.pipeline_views import PipelineView, evolve_pipeline
from orchestrator.core.views import JobView, NodeView
from schemas import subjects
from schemas.codec import event_type
from schemas.errors import InvalidSubject
from schemas.events import (
    ApiEvent,
    Event,
    JobEvent,
    JobRequested,
    NodeDrained,
    NodeEvent,
    NodeFact,
    NodeLost,
    NodeRegistered,
    NodeUndrained,
)
from schemas.pipelines import PipelineEvent
from schemas.records import Record
from schemas.trust import TrustAnnounced, TrustCheckpoint


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
    signer: str | None = None
    """The public nkey that signed the message (None: unsigned)."""
    signature: str | None = None
    author: str | None = None
    """The verified identity's name (`nexus creds new --name`), when the signature holds."""
    author_role: str | None = None
    digest: str | None = None
    """sha256 of the message bytes as stored in the log (core.audit); set by the projection."""
    chain: str | None = None
    """The log's hash chain after this record (core.audit.link); set by the projection."""
    copy_kind: CopyKind | None = None
    """Set when `payload` is not the log's bytes (secrets that came in clear, masked; bytes that were
    not UTF-8); with the writer's signature over it (core.audit.copy_statement); set by the projection."""
    copy_signer: str | None = None
    copy_signature: str | None = None


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
    ts = rec.stream_ts  # the server's time: a payload's `ts` is the publisher's claim, never the record's
    ref = _parse(rec.subject)
    views = _Views(jobs, nodes, pipelines or {})
    if rec.event is None or ref is None:
        etype = ref.type if ref else "invalid"
        changed: _Changed = (None, None, None)
        note: str | None = "subject is not a Nexus event subject"
    else:
        etype = event_type(rec.event)
        job_id = ref.id if ref.family == "job" else None
        changed, note = _fold(views, ref.id, job_id, ref.node, rec.event, ts, rec.seq)
        if isinstance(rec.event, JobRequested) and note is None and changed[0] is not None and rec.author is not None:
            changed = (replace(changed[0], requester=rec.author.name, requester_role=rec.author.role), None, None)
    moved = touch_entities(rec, views.jobs, views.nodes, views.pipelines)
    row = _row(rec, ref, etype, ts, rec.error or note, changed[0].node if changed[0] is not None else None)
    return Applied(row=row, job=changed[0] or moved[0], node=changed[1] or moved[1], pipeline=changed[2] or moved[2])


def _parse(subject: str) -> subjects.SubjectRef | None:
    try:
        return subjects.parse(subject)
    except InvalidSubject:
        return None


def _row(rec: Record, ref: subjects.SubjectRef | None, etype: str, ts: datetime, error: str | None, job_node: str | None) -> EventRow:
    node_id = ref.id if ref and ref.family == "node" else (ref.node if ref else None)
    return EventRow(
        seq=rec.seq,
        subject=rec.subject,
        type=etype,
        ts=ts,
        job_id=ref.id if ref and ref.family == "job" else None,
        node_id=node_id or job_node,
        pipeline_id=ref.id if ref and ref.family == "pipeline" else None,
        payload=rec.raw.decode("utf-8", errors="replace"),
        error=error,
        signer=rec.signer,
        signature=rec.signature,
        author=rec.author.name if rec.author is not None else None,
        author_role=rec.author.role if rec.author is not None else None,
    )


_Changed = tuple[JobView | None, NodeView | None, PipelineView | None]


class _Views(NamedTuple):
    jobs: Mapping[str, JobView]
    nodes: Mapping[str, NodeView]
    pipelines: Mapping[str, PipelineView]


def _fold(
    views: _Views, ident: str, job_id: str | None, subject_node: str | None, ev: Event, ts: datetime, seq: int
) -> tuple[_Changed, str | None]:
    """Route an event to its family's evolve function: what changed, and a note when nothing did."""
    if isinstance(ev, JobEvent):
        if job_id is None:
            return (None, None, None), None
        if isinstance(ev, NodeFact) and subject_node is not None and subject_node != ev.node:
            return (None, None, None), f"published on node {subject_node!r}'s subject but names node {ev.node!r}: refused"
        job, note = evolve_job(views.jobs.get(job_id), job_id, ev, ts, seq)
        return (job, None, None), note
    if isinstance(ev, NodeEvent):
        return (None, evolve_node(views.nodes.get(ident), ident, ev, ts, seq), None), None
    if isinstance(ev, PipelineEvent):
        pipeline = evolve_pipeline(views.pipelines.get(ident), ident, ev, ts, seq)
        return (None, None, pipeline), None if pipeline is not None else "event for an unknown pipeline, ignored"
    if isinstance(ev, ApiEvent):
        return (None, None, None), None  # the HTTP API's audit trail: a row in `events`, no view
    if isinstance(ev, TrustAnnounced | TrustCheckpoint):
        return (None, None, None), None  # identities and checkpoints: rows in `events`, read by audits
    assert_never(ev)


def touch_entities(
    rec: Record, jobs: Mapping[str, JobView], nodes: Mapping[str, NodeView], pipelines: Mapping[str, PipelineView]
) -> tuple[JobView | None, NodeView | None, PipelineView | None]:
    """The views whose `last_seq` this record moves, whatever its payload.

    The server counts every message on `nexus.evt.<family>.<id>.>` in that entity's
    last sequence, decodable or not; decisions expect it (optimistic concurrency).
    A view that did not follow would have every later decision refused as stale."""
    ent = subjects.entity_of(rec.subject)
    if ent is None:
        return None, None, None
    family, ident = ent.family, ent.id
    if family == "job" and ident in jobs:
        return touched(jobs[ident], rec.seq), None, None
    if family == "node" and ident in nodes:
        return None, replace(nodes[ident], last_seq=rec.seq), None
    if family == "pipeline" and ident in pipelines:
        return None, None, replace(pipelines[ident], last_seq=rec.seq)
    return None, None, None


def quarantine_row(rec: Record, reason: str) -> EventRow:
    """The `events` row of a record whose effects were discarded: kept, with the reason."""
    ref = _parse(rec.subject)
    row = _row(rec, ref, ref.type if ref else "invalid", rec.stream_ts, reason, None)
    return replace(row, payload=row.payload.replace("\x00", "\\u0000"))


def evolve_node(node: NodeView | None, node_id: str, ev: NodeEvent, ts: datetime, seq: int) -> NodeView:
    view = NodeView(node_id=node_id) if node is None else node
    match ev:
        case NodeRegistered():
            return replace(
                view,
                status="online",
                tools=list(ev.tools),
                labels=dict(ev.labels),
                max_jobs=ev.max_jobs,
                hostname=ev.hostname,
                version=ev.version,
                registered_at=ts,
                lost_at=None,
                last_seq=seq,
            )
        case NodeLost():
            # Without the heartbeat (gone from the bucket before the orchestrator looked, e.g. across
            # its restart), the last one known is the one its latest registration answered.
            return replace(view, status="lost", lost_at=ts, last_seen=ev.last_seen or view.registered_at, last_seq=seq)
        case NodeDrained():
            return replace(view, drained=True, drained_at=ts, drain_reason=ev.reason or None, last_seq=seq)
        case NodeUndrained():
            return replace(view, drained=False, drained_at=None, drain_reason=None, last_seq=seq)
        case _:
            assert_never(ev)
