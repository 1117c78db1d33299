"""What the web console needs beyond the single-entity use cases: the fleet's live feed,
the approvals inbox and the list of pipelines. Every interface may call these (the console
through `orchestrator/api/console.py`); nothing here knows about HTTP.

    fleet_feed   every job and pipeline event from a log position on, live, as FeedItems
                 (the job's status after the event, so a list updates without a refetch)
    inbox        jobs held for approval and pipeline steps waiting at their gate
    job_history  a job's every event, after its end too, as `nexus history` tells it
    pipelines    pipelines, newest first
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any, Literal, TypeVar

import msgspec

from bus.port import EventBus, raise_if_cancelling
from orchestrator.app.errors import NoSuchJob
from orchestrator.app.narrate import narrate, status_after
from orchestrator.app.rows import decoded
from orchestrator.client import NexusClient
from schemas import subjects
from schemas.records import Record

FEED_FAMILIES = ("job", "pipeline")
T = TypeVar("T", bound=msgspec.Struct)


class FeedItem(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One event of the fleet, as a list of jobs or pipelines needs it."""

    seq: int
    entity: Literal["job", "pipeline"]
    id: str
    kind: str
    ts: datetime
    status: str | None = None
    """A job's status once this event is applied (None: the event does not change it)."""
    node: str | None = None
    message: str = ""


def feed_item(rec: Record) -> FeedItem | None:
    """The feed's view of one record; None for records the feed does not carry (nodes, API calls)."""
    ent = subjects.entity_of(rec.subject)
    if ent is None or ent.family not in FEED_FAMILIES:
        return None
    ts = rec.event.ts if rec.event is not None and rec.event.ts is not None else rec.stream_ts
    if ent.family == "pipeline":
        return FeedItem(seq=rec.seq, entity="pipeline", id=ent.id, kind=ent.kind, ts=ts)
    told = narrate(rec)
    status = status_after(rec, "") or None
    return FeedItem(seq=rec.seq, entity="job", id=ent.id, kind=ent.kind, ts=ts, status=status, node=told.node, message=told.message)


async def fleet_feed(
    bus: EventBus, *, after: int | None, idle_s: float, stop: asyncio.Queue[object] | None = None
) -> AsyncGenerator[FeedItem | None, None]:
    """Job and pipeline events after log position `after` (None: from now on), live.

    Yields None when nothing came for `idle_s` (a keepalive); ends when anything
    is put into `stop` (a stopping server)."""
    start = (await bus.last_seq() if after is None else after) + 1
    queue: asyncio.Queue[object] = stop if stop is not None else asyncio.Queue()

    async def pump() -> None:
        async for batch in bus.records(start):
            for rec in batch:
                await queue.put(rec)

    task = asyncio.create_task(pump(), name="console.feed")
    try:
        while True:
            raise_if_cancelling()  # wait_for below may swallow a cancellation that races with an item (Python 3.11)
            try:
                item = await asyncio.wait_for(queue.get(), idle_s)
            except TimeoutError:
                if task.done():  # the log reader failed (the bus is gone): end, so the client reconnects
                    task.result()
                    return
                yield None
                continue
            if not isinstance(item, Record):
                return
            if (told := feed_item(item)) is not None:
                yield told
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


class HeldJob(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    job_id: str
    command: str
    requested_by: str | None
    requested_node: str | None
    labels: dict[str, str] | None = None
    severity: str | None
    warnings: list[dict[str, Any]]
    suggestions: list[str]
    requested_at: datetime | None
    approvers: list[str] = []
    """Who may approve, as the hold names them (empty: whoever the policy's roles allow)."""


class HeldStep(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    pipeline_id: str
    pipeline_name: str
    step_id: str
    commands: list[str]
    targets: list[str]
    requested_at: datetime | None
    deadline: datetime | None
    approvers: list[str] = []
    """Who may answer the gate, as it names them (empty: whoever the policy's roles allow)."""


class _Hold(msgspec.Struct, frozen=True):
    """The fields of a `job.approval_required` or `pipeline.approval_required` payload the inbox reads."""

    approvers: list[str] = []
    step: str | None = None


class Inbox(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What waits for a person with the approver role."""

    jobs: list[HeldJob]
    steps: list[HeldStep]


_HELD_JOBS = "SELECT job_id FROM jobs WHERE status = 'approval_required' AND NOT coalesce(cancel_requested, false)"
_WAITING_STEPS = "SELECT pipeline_id FROM pipeline_steps WHERE status = 'waiting_approval'"


async def inbox(client: NexusClient) -> Inbox:
    """Jobs held for approval (oldest first; one whose cancel is asked waits for nobody) and
    pipeline steps waiting at their approval gate, each with who may approve (its last hold's
    `approvers`)."""
    jobs_q, steps_q, holds_q = await asyncio.gather(
        client.query(
            "SELECT job_id, command, requested_by, requested_node, labels, severity, warnings, suggestions, requested_at "
            f"FROM jobs WHERE job_id IN ({_HELD_JOBS}) ORDER BY first_seq"
        ),
        client.query(
            "SELECT s.pipeline_id, p.name, s.step_id, s.nodes, s.approval_requested_at, s.approval_deadline, p.spec "
            "FROM pipeline_steps AS s JOIN pipelines AS p USING (pipeline_id) "
            "WHERE s.status = 'waiting_approval' ORDER BY s.approval_requested_at"
        ),
        client.query(
            "SELECT coalesce(job_id, pipeline_id) AS id, payload FROM events WHERE error IS NULL AND ("
            f"(type = 'job.approval_required' AND job_id IN ({_HELD_JOBS})) OR "
            f"(type = 'pipeline.approval_required' AND pipeline_id IN ({_WAITING_STEPS}))) ORDER BY seq"
        ),
    )
    approvers: dict[tuple[str, str | None], list[str]] = {}  # (job or pipeline id, step) -> the last hold's
    for ident, payload in holds_q.rows:
        hold = msgspec.json.decode(payload, type=_Hold)
        approvers[(ident, hold.step)] = hold.approvers
    jobs = [_convert(r | {"approvers": approvers.get((r["job_id"], None), [])}, HeldJob) for r in map(decoded, jobs_q.dicts())]
    steps = []
    for r in map(decoded, steps_q.dicts()):
        spec = r.pop("spec") or {}
        step: dict[str, Any] = next((s for s in spec.get("steps", []) if s.get("id") == r["step_id"]), {})
        labels = step.get("labels") or {}
        r |= {
            "pipeline_name": r.pop("name"),
            "commands": [step["command"]] if step.get("command") else [],
            "targets": r.pop("nodes") or step.get("nodes") or [f"{k}={v}" for k, v in labels.items()],
            "requested_at": r.pop("approval_requested_at"),
            "deadline": r.pop("approval_deadline"),
            "approvers": approvers.get((r["pipeline_id"], r["step_id"]), []),
        }
        steps.append(_convert(r, HeldStep))
    return Inbox(jobs=jobs, steps=steps)


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One event of a job's history, as `nexus history` tells it."""

    seq: int
    ts: datetime
    """The server's time of the record (never the publisher's claim)."""
    kind: str
    message: str
    level: str = "info"
    by: str | None = None
    """Who provably made it (its signature's identity); None: unsigned or unproven."""
    counted: bool = True
    """False: the orchestrator refused it (forged, not theirs to make, or too late); `message` says why."""


class JobHistory(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    job_id: str
    events: list[HistoryEntry]


async def job_history(client: NexusClient, job_id: str) -> JobHistory:
    """A job's whole history from the log, judged as the orchestrator judges it (the records of
    `nexus history`): what happened after it ended too (re-tests, rollbacks), which its stream,
    ending at its verdict, does not carry. NoSuchJob when the log has none."""
    subjects.check_id(job_id, "job id")
    records = await client.history(job_id)
    if not records:
        raise NoSuchJob(job_id)
    return JobHistory(job_id=job_id, events=[_entry(rec) for rec in records])


def _entry(rec: Record) -> HistoryEntry:
    by = rec.author.name if rec.author is not None else None
    if rec.event is None:  # refused: its reason instead of its story
        return HistoryEntry(seq=rec.seq, ts=rec.stream_ts, kind=rec.kind, message=rec.error or "", level="warning", by=by, counted=False)
    told = narrate(rec)
    return HistoryEntry(seq=rec.seq, ts=rec.stream_ts, kind=rec.kind, message=told.message, level=told.level, by=by)


class PipelineSummary(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    pipeline_id: str
    name: str
    status: str
    requested_by: str | None
    requested_at: datetime | None
    finished_at: datetime | None
    steps: int
    failed_step: str | None


async def pipelines(client: NexusClient, limit: int = 100) -> list[PipelineSummary]:
    """Pipelines, newest first, with their step count."""
    rows = await client.query(
        "SELECT p.pipeline_id, p.name, p.status, p.requested_by, p.requested_at, p.finished_at, p.failed_step, "
        "(SELECT count(*) FROM pipeline_steps AS s WHERE s.pipeline_id = p.pipeline_id) AS steps "
        f"FROM pipelines AS p ORDER BY p.first_seq DESC LIMIT {int(limit)}"
    )
    return [_convert(r, PipelineSummary) for r in rows.dicts()]


def _convert(row: dict[str, Any], into: type[T]) -> T:
    # convert() reads the Struct's encoded (camelCase) names; rows come snake_case, times as text
    return msgspec.convert({_camel(k): v for k, v in row.items()}, into, strict=False)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)
