"""NexusClient: what the CLI (and any Python caller) does against a running Nexus.

Submitting and following go straight to JetStream; state questions go to the
orchestrator over `nexus.rpc.query`, so nobody needs DuckDB's single-writer lock.

    NexusError (schemas.errors)
    +-- NoSuchJob        nothing in the log under this job id
    +-- JobFinished      the job already ended (`status`): there is nothing to cancel
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bus.errors import StaleDecision
from bus.nats_bus import NatsBus
from orchestrator.app.follow import follow_job
from orchestrator.errors import OrchestratorUnavailable, QueryError
from schemas import codec, msgids, subjects
from schemas.codec import event_type
from schemas.envelope import Outgoing
from schemas.errors import NexusError
from schemas.events import JobCancelRequested, JobRequested, JobTested, JobTestRequested, ends_job
from schemas.pipelines import PipelineRequested
from schemas.records import Record
from schemas.rpc import QueryRequest
from schemas.values import JobTest

JOB_COLUMNS = (
    "job_id, status, node, tool, command, exit_code, reason, attempt, duration_ms, output_bytes, "
    "requested_at, finished_at, requested_by, timeout_s, working_dir, labels, metadata, parent, signal, killed_by"
)


# Of a cancel racing with the job's own events, one wins; retry this often before giving up.
CANCEL_ATTEMPTS = 5


class NoSuchJob(NexusError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id!r}")


class JobFinished(NexusError):
    def __init__(self, job_id: str, status: str) -> None:
        self.job_id = job_id
        self.status = status
        super().__init__(f"job {job_id} already finished ({status}); there is nothing to cancel")


def final_status(history: Sequence[Record]) -> str | None:
    """The status a job ended with (`succeeded`, `denied`, ...), or None while it goes on."""
    for rec in reversed(history):
        if ends_job(rec.event):
            return event_type(rec.event).split(".", 1)[1]  # type: ignore[arg-type]
    return None


def new_job_id() -> str:
    """Sortable by time, unique enough across publishers: `j-<ms hex>-<random>`."""
    return f"j-{int(time.time() * 1000):x}-{secrets.token_hex(3)}"


@dataclass
class Rows:
    columns: list[str]
    rows: list[list[Any]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


@dataclass(frozen=True)
class FollowItem:
    """Either an event record or an output chunk of the job being followed."""

    record: Record | None = None
    output: bytes | None = None
    attempt: int = 0


class NexusClient:
    def __init__(self, bus: NatsBus) -> None:
        self.bus = bus

    async def submit(self, job_id: str, req: JobRequested) -> int:
        """Publish `requested`; returns its stream sequence. Same id twice = one job."""
        out = Outgoing(subjects.job(job_id, "requested"), req, msgids.job_request(job_id))
        return (await self.bus.publish(out)).seq

    async def cancel(self, job_id: str, *, by: str | None, reason: str | None) -> None:
        """Publish `cancel_requested` whatever the job's state (see `cancel_unfinished`)."""
        ev = JobCancelRequested(requested_by=by, reason=reason)
        n = secrets.token_hex(4)
        await self.bus.publish(Outgoing(subjects.job(job_id, "cancel_requested"), ev, msgids.job(job_id, "cancel_requested", n)))

    async def cancel_unfinished(self, job_id: str, *, by: str | None, reason: str | None) -> int:
        """Publish `cancel_requested` for a job that has not ended; returns its sequence.

        Raises NoSuchJob, or JobFinished with nothing published: the record gets no
        request that could never take effect. The request expects the job's last event
        to be the one read, so a job that ends meanwhile is read again, not cancelled."""
        ev = JobCancelRequested(requested_by=by, reason=reason)
        for _ in range(CANCEL_ATTEMPTS):
            history = await self.history(job_id)
            if not history:
                raise NoSuchJob(job_id)
            if (status := final_status(history)) is not None:
                raise JobFinished(job_id, status)
            out = Outgoing(subjects.job(job_id, "cancel_requested"), ev, msgids.job(job_id, "cancel_requested", secrets.token_hex(4)))
            try:
                return (await self.bus.publish(out, expected_seq=history[-1].seq)).seq
            except StaleDecision:
                continue
        raise StaleDecision(subjects.job(job_id, "cancel_requested"), history[-1].seq)

    async def request_tests(self, job_id: str, tests: list[JobTest], *, by: str | None) -> int:
        """Ask for tests on a finished job; returns the request's sequence (see `wait_tested`)."""
        ev = JobTestRequested(tests=tests, requested_by=by)
        out = Outgoing(subjects.job(job_id, "test_requested"), ev, msgids.job(job_id, "test_requested", secrets.token_hex(6)))
        return (await self.bus.publish(out)).seq

    async def wait_tested(self, job_id: str, after_seq: int, timeout_s: float) -> JobTested:
        """The first `tested` of the job after `after_seq`; raises TimeoutError."""
        async with asyncio.timeout(timeout_s):
            async for item in self.follow(job_id, from_seq=after_seq + 1, until=lambda r: isinstance(r.event, JobTested)):
                if item.record is not None and isinstance(item.record.event, JobTested):
                    return item.record.event
        raise TimeoutError

    async def submit_pipeline(self, pipeline_id: str, req: PipelineRequested) -> int:
        """Publish a pipeline's `requested`; the pipeline id is the idempotency key."""
        out = Outgoing(subjects.pipeline(pipeline_id, "requested"), req, msgids.pipeline(pipeline_id, "requested"))
        return (await self.bus.publish(out)).seq

    async def query(self, sql: str, params: Sequence[Any] = (), *, timeout_s: float = 10.0) -> Rows:
        req = QueryRequest(sql=sql, params=list(params))
        try:
            data = await self.bus.request(subjects.RPC_QUERY, codec.encode(req), timeout_s)
        except TimeoutError:
            raise QueryError(f"the orchestrator did not answer within {timeout_s:g}s") from None
        if data is None:
            raise OrchestratorUnavailable(self.bus.url)
        result = codec.decode_query_result(data)
        if result.error:
            raise QueryError(result.error)
        return Rows(result.columns, result.rows)

    async def history(self, job_id: str) -> list[Record]:
        records: list[Record] = []
        async for batch in self.bus.read_records(subjects.job_all(job_id)):
            records.extend(batch)
        return records

    async def follow(
        self, job_id: str, *, from_seq: int = 1, until: Callable[[Record], bool] | None = None
    ) -> AsyncIterator[FollowItem]:
        """Events and output of one job, live, in order per kind, until it ends and
        all its stored output has arrived (or until `until(record)`): see `app.follow`."""
        async for item in follow_job(self.bus, job_id, events_from=from_seq, until=until):
            if item.chunk is not None:
                yield FollowItem(output=item.chunk.data, attempt=item.chunk.attempt)
            elif item.record is not None and item.record.seq >= from_seq:
                yield FollowItem(record=item.record)
