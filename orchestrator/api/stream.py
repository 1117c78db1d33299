"""GET /api/v1/jobs/:id/stream: a job's events and output as Server-Sent Events, resumable.

Every SSE message carries `data: {...}` with a `type` of `status`,
`output_chunk`, `done` or `error` (no `event:` line, so a browser's
`EventSource.onmessage` sees them all, as in the product brief).

Event ids are positions in the two JetStream streams the job lives in:

    id: <E>:<O>          E = stream sequence in NEXUS_EVENTS of the last job event sent,
                         O = stream sequence in NEXUS_OUTPUT of the last output chunk sent
    id: <E>:<O>:done     the `done` message: the stream is complete

Both streams are read with ordered consumers (app.follow): events filtered on
`nexus.evt.job.<id>.>`, output on `nexus.out.<id>.>`, each in stream order.
Each message sent advances one of the two numbers, so a client that reconnects
with `Last-Event-ID: E:O` gets exactly the events after E and the chunks after
O: no gap and no repeat, whatever the interleaving of the two streams was.
(The job's events up to E are read again, silently, to rebuild its state.)
Reconnecting with a `done` id answers 204, which tells EventSource to stop.
`?lastEventId=` works as well as the header, for clients that cannot set it.

`done` ({jobId, status, exitCode, reason}) follows the job's terminal event
once all of its stored output is sent: the agent stores every chunk before it
publishes `exited`, so when the verdict is read the output's last sequence is
known. A stream of a finished job replays from the start and ends with `done`,
its output between `started` and `exited` as it happened (app.follow.StoreOrder).
Every follower has its own consumers: many clients can follow one job.

A lost connection to NATS is waited for (app.follow.RECONNECT_S), then the stream goes on from
where it stopped; if NATS does not come back in time, `error` ends the stream (its id the last
position sent, so a client that reconnects with it resumes once NATS is back).
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import anyio
import msgspec
from litestar import Response, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter, QueryParameter
from litestar.response import Stream

from bus.errors import BusError
from bus.logs import Logger
from bus.port import EventBus, OutputChunk
from orchestrator.api.auth import require
from orchestrator.api.context import ApiContext, Ctx
from orchestrator.api.errors import ProblemError, unknown_job
from orchestrator.api.models import POSITION_PATTERN, DoneEvent, ErrorEvent, OutputChunkEvent, StatusEvent
from orchestrator.api.openapi import problems
from orchestrator.app.follow import feed_queue, follow_job
from orchestrator.app.narrate import narrate, status_after, verdict_reason
from schemas import subjects
from schemas.events import (
    JobExited,
    JobFailed,
    JobSucceeded,
    ends_job,
)
from schemas.limits import INT64_MAX
from schemas.records import Record
from schemas.text import TextViews

RETRY_MS = 1000
_encoder = msgspec.json.Encoder()
log = Logger("nexus.api")

@dataclass(frozen=True)
class Position:
    """Where a client is in a job's stream: see the module docstring."""

    events: int = 0
    output: int = 0
    done: bool = False

    def __str__(self) -> str:
        return f"{self.events}:{self.output}" + (":done" if self.done else "")

    @classmethod
    def parse(cls, value: str) -> Position:
        if re.fullmatch(POSITION_PATTERN, value) is None:
            raise ValueError(value)
        parts = value.split(":")
        events, output = int(parts[0]), int(parts[1])
        if events > INT64_MAX or output > INT64_MAX:  # stream sequences; larger is no position at all
            raise ValueError(value)
        return cls(events, output, len(parts) == 3)


def sse(position: Position, payload: msgspec.Struct) -> bytes:
    return b"id: " + str(position).encode() + b"\ndata: " + _encoder.encode(payload) + b"\n\n"


@dataclass
class _JobState:
    status: str = "requested"
    exited: JobExited | None = None
    verdict: Record | None = None


def describe(rec: Record, state: _JobState) -> StatusEvent:
    """One event of the job as a `status` message (and the job's status after it)."""
    told = narrate(rec)
    state.status = status_after(rec, state.status)
    ts = rec.event.ts if rec.event is not None and rec.event.ts is not None else rec.stream_ts
    return StatusEvent(
        category=told.category, message=told.message, status=state.status, level=told.level,
        seq=rec.seq, ts=ts, node=told.node, attempt=told.attempt,
    )


def _done(job_id: str, state: _JobState) -> DoneEvent:
    assert state.verdict is not None
    ev = state.verdict.event
    exit_code = state.exited.exit_code if state.exited else None
    if isinstance(ev, JobSucceeded | JobFailed) and ev.exit_code is not None:
        exit_code = ev.exit_code
    return DoneEvent(job_id=job_id, status=state.status, exit_code=exit_code, reason=verdict_reason(ev))


async def follow(bus: EventBus, job_id: str, start: Position, ctx: ApiContext) -> AsyncIterator[bytes]:
    """The SSE bytes of one client's stream, from `start` until `done` (or the server stops)."""
    queue = feed_queue()
    ctx.streams.add(queue)
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        pos = start
        state = _JobState()
        views = TextViews()
        # Events from the job's first one, to rebuild its state; output only after what was sent.
        items = follow_job(bus, job_id, output_after=start.output, idle_s=ctx.keepalive_s, queue=queue)
        try:
            async for item in items:
                if item.idle:
                    yield b": keepalive\n\n"
                elif item.notice is not None:  # the connection to NATS lost or back: a comment, EventSource ignores it
                    yield b": " + item.notice.encode() + b"\n\n"
                elif item.chunk is not None:
                    pos = Position(pos.events, item.chunk.seq)
                    yield sse(pos, _chunk(item.chunk, views))
                elif item.record is not None:
                    rec = item.record
                    status = describe(rec, state)
                    if isinstance(rec.event, JobExited):
                        state.exited = rec.event
                    if state.verdict is None and ends_job(rec.event):
                        state.verdict = rec
                    if rec.seq > pos.events:  # else sent before the client reconnected
                        pos = Position(rec.seq, pos.output)
                        yield sse(pos, status)
        except BusError as exc:  # NATS did not come back in time (app.follow.RECONNECT_S): say so, then end
            log.warning("stream.ended", job_id=job_id, error=str(exc))
            yield sse(pos, ErrorEvent(job_id=job_id, message=str(exc), retryable=exc.retryable))
            return
        finally:
            # Runs while the response's task is being cancelled (client gone): shield the clean-up.
            with anyio.CancelScope(shield=True):
                await items.aclose()
        if state.verdict is not None and not ctx.stopping:
            yield sse(Position(pos.events, pos.output, done=True), _done(job_id, state))
    finally:
        ctx.streams.discard(queue)


def _chunk(chunk: OutputChunk, views: TextViews) -> OutputChunkEvent:
    data = chunk.data
    return OutputChunkEvent(
        text=views.feed(chunk.attempt, chunk.stream, data), data_b64=base64.b64encode(data).decode(),
        attempt=chunk.attempt, chunk=chunk.number, seq=chunk.seq, stream=chunk.stream,
    )


@get(
    "/api/v1/jobs/{job_id:str}/stream",
    guards=[require("viewer")],
    summary="Follow a job: status, output_chunk and done as Server-Sent Events",
    description=__doc__,
    media_type="text/event-stream",
    responses={
        **problems(404),
        204: ResponseSpec(data_container=None, description="The `Last-Event-ID` was the `done` message: nothing more to send"),
    },
)
async def stream_job(
    job_id: FromPath[str],
    ctx: Ctx,
    last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID", description="Resume after this id.")] = None,
    last_event_id_query: Annotated[
        str | None, QueryParameter(name="lastEventId", description="The same, for clients that cannot set headers.")
    ] = None,
) -> Response[bytes] | Stream:
    subjects.check_id(job_id, "job id")
    given = [p for p in (_position(last_event_id), _position(last_event_id_query)) if p is not None]
    start = given[0] if given else Position()  # the header wins over the query string
    last = await ctx.client.bus.last_seq(subject=subjects.job_all(job_id))
    if last == 0:
        raise unknown_job(job_id)
    if start.events > last:  # no client was sent that: resuming "after" it would skip what comes
        detail = f"Last-Event-ID {start} is past the job's log (its last event is at {last})"
        raise ProblemError(400, "invalid-last-event-id", "Invalid Last-Event-ID", detail)
    if start.output and start.output > (last_output := await ctx.client.bus.last_seq(subjects.OUTPUT_STREAM, subjects.output_all(job_id))):
        detail = f"Last-Event-ID {start} is past the job's output (its last chunk is at {last_output or 'none yet'})"
        raise ProblemError(400, "invalid-last-event-id", "Invalid Last-Event-ID", detail)
    if start.done:
        return Response(b"", status_code=204)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Stream(follow(ctx.client.bus, job_id, start, ctx), media_type="text/event-stream", headers=headers)


def _position(raw: str | None) -> Position | None:
    """A given id must be valid, even an empty one or one the other form overrides."""
    if raw is None:
        return None
    try:
        return Position.parse(raw)
    except ValueError:
        detail = f"Last-Event-ID must look like E:O or E:O:done, got {raw!r}"
        raise ProblemError(400, "invalid-last-event-id", "Invalid Last-Event-ID", detail) from None


ROUTES = [stream_job]
