"""NexusClient: what the CLI (and any Python caller) does against a running Nexus.

Submitting and following go straight to JetStream; state questions go to the
orchestrator over `nexus.rpc.query`, so nobody needs DuckDB's single-writer lock.
The use cases built on it (submit, cancel, approve, ...) are in `orchestrator.app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import msgspec

from bus.port import EventBus, OutputChunk, OutputStream
from orchestrator.app.follow import follow_job, job_output
from orchestrator.errors import OrchestratorUnavailable, QueryError
from schemas import codec, msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import JobCancelRequested, JobRequested, JobTested
from schemas.pipelines import PipelineRequested
from schemas.records import Record
from schemas.rpc import QueryRequest
from schemas.secrets import OrchestratorKey


def new_job_id() -> str:
    """Sortable by time, unique enough across publishers: `j-<ms hex>-<random>`."""
    return f"j-{int(time.time() * 1000):x}-{secrets.token_hex(3)}"


class Rows(msgspec.Struct):
    columns: list[str]
    rows: list[list[Any]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


class FollowItem(msgspec.Struct, frozen=True):
    """An event record, an output chunk or a notice of the job being followed."""

    record: Record | None = None
    output: bytes | None = None
    attempt: int = 0
    stream: OutputStream = "stdout"
    """Which of the job's streams `output` is from (`stderr` only for a `tty: false` job)."""
    notice: str | None = None
    """For the person following: the connection was lost, or came back (app.follow)."""


class NexusClient:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    async def submit(self, job_id: str, req: JobRequested) -> int:
        """Publish `requested`; returns its stream sequence. Same id twice = one job."""
        out = Outgoing(subjects.job(job_id, "requested"), req, msgids.job_request(job_id))
        return (await self.bus.publish(out)).seq

    async def sealing_key(self) -> OrchestratorKey | None:
        """The orchestrator's public sealing key and redaction patterns (None: none published yet)."""
        return await self.bus.orchestrator_key()

    async def cancel(self, job_id: str, *, by: str | None, reason: str | None) -> None:
        """Publish `cancel_requested` whatever the job's state (people go through `app.jobs.cancel`)."""
        ev = JobCancelRequested(requested_by=by, reason=reason)
        n = secrets.token_hex(4)
        await self.bus.publish(Outgoing(subjects.job(job_id, "cancel_requested"), ev, msgids.job(job_id, "cancel_requested", n)))

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
        req = QueryRequest(sql=sql, params=list(params), in_parts=True)
        try:
            parts = await self.bus.request(subjects.RPC_QUERY, codec.encode(req), timeout_s)
        except TimeoutError:
            raise QueryError(f"the orchestrator did not answer within {timeout_s:g}s") from None
        if parts is None:
            raise OrchestratorUnavailable(self.bus.url)
        try:
            result = codec.join_query_results([codec.decode_query_result(p) for p in parts])
        except ValueError as exc:
            raise QueryError(str(exc)) from None
        if result.error:
            raise QueryError(result.error)
        return Rows(result.columns, result.rows)

    async def history(self, job_id: str) -> list[Record]:
        """The job's events from the log, judged as the orchestrator judges them: each with its
        verified author, requests and approvals named by it, refused ones with their reason."""
        from orchestrator.vetting import vetted

        records: list[Record] = []
        async for batch in self.bus.read_records(subjects.job_all(job_id)):
            records.extend(batch)
        return self._with_verdicts(await vetted(self.bus, records), await self._refused(job_id))

    async def _refused(self, job_id: str) -> dict[int, str]:
        """The orchestrator's refusals among the job's events (seq -> reason): some depend on
        the job's state when the event came (a fact from a node the job is not on), which a
        reader of the records alone cannot judge. Empty when the orchestrator cannot answer."""
        try:
            rows = await self.query("SELECT seq, error FROM events WHERE job_id = ? AND error IS NOT NULL", [job_id])
        except (QueryError, OrchestratorUnavailable):
            return {}
        return {int(seq): str(error) for seq, error in rows.rows}

    @staticmethod
    def _with_verdicts(records: list[Record], refused: dict[int, str]) -> list[Record]:
        return [
            msgspec.structs.replace(r, event=None, error=refused[r.seq]) if r.seq in refused and r.error is None else r
            for r in records
        ]

    async def output(self, job_id: str) -> AsyncIterator[OutputChunk]:
        """The job's stored output, all attempts, in order: what counts (see `app.follow.job_output`)."""
        async with contextlib.aclosing(job_output(self.bus, job_id)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def follow(
        self, job_id: str, *, from_seq: int = 1, until: Callable[[Record], bool] | None = None
    ) -> AsyncIterator[FollowItem]:
        """Events and output of one job, live, in order per kind, until it ends and
        all its stored output has arrived (or until `until(record)`): see `app.follow`."""
        async for item in follow_job(self.bus, job_id, events_from=from_seq, until=until):
            if item.chunk is not None:
                yield FollowItem(output=item.chunk.data, attempt=item.chunk.attempt, stream=item.chunk.stream)
            elif item.record is not None and item.record.seq >= from_seq:
                yield FollowItem(record=item.record)
            elif item.notice is not None:
                yield FollowItem(notice=item.notice)
