"""Follow one job: its events and output, live, resumable, in one stream.

Used by `nexus run` / `logs -f` / `pipeline run` (through `NexusClient.follow`)
and by the API's SSE route. Events are read from `events_from` (the SSE route
reads from 1 to rebuild the job's state, then skips what the client has) and
output after `output_after`. Without `until`, the stream ends once the job's
verdict is read and every output chunk stored before it has been yielded
(the agent stores every chunk before it publishes `exited`), or `drain_s`
after the last item if announced output never arrives (say, it expired).
With `until`, it ends at the first record from `events_from` on that matches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable

import msgspec

from bus.errors import BusUnavailable
from bus.port import EventBus, OutputChunk, raise_if_cancelling
from schemas.events import ends_job
from schemas.records import Record

DRAIN_S = 10.0  # after the verdict, how long to wait for announced output


class Followed(msgspec.Struct, frozen=True):
    """One item of a followed job: a record, an output chunk, or `idle` (nothing for `idle_s`)."""

    record: Record | None = None
    chunk: OutputChunk | None = None
    idle: bool = False


async def follow_job(
    bus: EventBus,
    job_id: str,
    *,
    events_from: int = 1,
    output_after: int = 0,
    until: Callable[[Record], bool] | None = None,
    idle_s: float = 1.0,
    queue: asyncio.Queue[object] | None = None,
) -> AsyncGenerator[Followed, None]:
    """The job's records and chunks as they come (see the module docstring).

    Anything put into `queue` that is neither a record nor a chunk (a server's
    stop sentinel) ends the stream."""
    queue = queue if queue is not None else asyncio.Queue()
    verdict_seen = False
    output_end: int | None = None
    last_output = output_after
    last_item = time.monotonic()
    async with bus.job_feed(job_id, queue, events_from=1 if until is None else events_from, output_from=output_after + 1):
        while True:
            raise_if_cancelling()
            if output_end is not None and last_output >= output_end:
                return
            try:
                item = await asyncio.wait_for(queue.get(), idle_s if not verdict_seen else min(idle_s, DRAIN_S))
            except TimeoutError:
                if not bus.connected:
                    raise BusUnavailable(bus.url, "connection lost while following the job") from None
                if verdict_seen and time.monotonic() - last_item >= DRAIN_S:
                    return
                yield Followed(idle=True)
                continue
            last_item = time.monotonic()
            if isinstance(item, OutputChunk):
                if item.seq > last_output:
                    last_output = item.seq
                    yield Followed(chunk=item)
                continue
            if not isinstance(item, Record):
                return
            if until is not None:
                if item.seq >= events_from:
                    yield Followed(record=item)
                    if until(item):
                        return
                continue
            if not verdict_seen and ends_job(item.event):
                verdict_seen = True
                output_end = await bus.output_end(job_id)
            yield Followed(record=item)
