"""Follow one job: its events and output, live, resumable, in one stream.

Used by `nexus run` / `logs -f` / `pipeline run` (through `NexusClient.follow`)
and by the API's SSE route. Events are read from `events_from` (the SSE route
reads from 1 to rebuild the job's state, then skips what the client has) and
output after `output_after`. Without `until`, the stream ends once the job's
verdict is read and every output chunk stored before it has been yielded
(the agent stores every chunk before it publishes `exited`), or `drain_s`
after the last item if announced output never arrives (say, it expired).
With `until`, it ends at the first record from `events_from` on that matches.
Records and chunks come in the order the server stored them, a replay's too (StoreOrder).

Records come judged as the orchestrator judges them when this client has credentials
(orchestrator.vetting), and output only as far as it counts (orchestrator.output_gate: from
the node that ran the attempt); a chunk read before the record naming its attempt's node
waits for it, in order. Refused chunks are left out and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterator

import msgspec

from bus.errors import BusError, BusUnavailable
from bus.logs import Logger
from bus.port import EventBus, OutputChunk, raise_if_cancelling
from orchestrator.core.authorship import OpenHolds
from orchestrator.output_gate import WAIT, OutputGate
from schemas import subjects
from schemas.events import ends_job
from schemas.records import Record

log = Logger("nexus.follow")

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
    readers = JobReaders(bus, job_id)
    verdict_seen = False
    output_end: int | None = None
    last_output = output_after
    last_item = time.monotonic()
    # Always from the job's first event: the output gate learns each attempt's node from them.
    async with bus.job_feed(job_id, queue, events_from=1, output_from=output_after + 1):
        order = StoreOrder(*await asyncio.gather(_events_end(bus, job_id), bus.output_end(job_id)), output_after=output_after)
        while True:
            raise_if_cancelling()
            if output_end is not None and last_output >= output_end:
                for chunk in readers.release(final=True):
                    yield Followed(chunk=chunk)
                return
            item = order.next()
            if item is None:
                try:
                    got = await asyncio.wait_for(queue.get(), idle_s if not verdict_seen else min(idle_s, DRAIN_S))
                except TimeoutError:
                    if not bus.connected:
                        raise BusUnavailable(bus.url, "connection lost while following the job") from None
                    if order.waiting:  # stored items that did not come (expired meanwhile): go on without them
                        order.stop_waiting()
                        continue
                    if verdict_seen and time.monotonic() - last_item >= DRAIN_S:
                        for chunk in readers.release(final=True):
                            yield Followed(chunk=chunk)
                        return
                    yield Followed(idle=True)
                    continue
                last_item = time.monotonic()
                if not isinstance(got, Record | OutputChunk):
                    return
                order.add(got)
                continue
            if isinstance(item, OutputChunk):
                if item.seq > last_output:
                    last_output = item.seq
                    await readers.hold(item)
                    for chunk in readers.release():
                        yield Followed(chunk=chunk)
                continue
            item = await readers.record(item)
            released = list(readers.release())
            if until is not None:
                for chunk in released:
                    yield Followed(chunk=chunk)
                if item.seq >= events_from:
                    yield Followed(record=item)
                    if until(item):
                        return
                continue
            if not verdict_seen and ends_job(item.event):
                verdict_seen = True
                output_end = await bus.output_end(job_id)
            yield Followed(record=item)
            for chunk in released:
                yield Followed(chunk=chunk)


async def _events_end(bus: EventBus, job_id: str) -> int:
    """The job's last event sequence; 0 when the server cannot tell now (then nothing is waited for)."""
    try:
        return await bus.last_seq(subject=subjects.job_all(job_id))
    except BusError:
        return 0


class StoreOrder:
    """A job's records and chunks in the order the server stored them.

    Each consumer keeps its own stream's order, but a follower that joins late (a finished
    job's replay) gets both backlogs at once, in no order between them: all of the events,
    `succeeded` included, before any output. Until both streams are read up to where they
    stood when the follow began (`events_end`, `output_end`), the next item is the earlier
    of the two heads by the server's timestamps (`stream_ts`), so each attempt's output comes
    between its `started` and its `exited`, as a live follower sees it. Each kind stays in
    its stream's order, so a position `E:O` still resumes exactly. After that, items are live
    and go as they come."""

    def __init__(self, events_end: int, output_end: int, *, output_after: int = 0) -> None:
        self.records: deque[Record] = deque()
        self.chunks: deque[OutputChunk] = deque()
        self.events_end, self.output_end = events_end, output_end
        self.events_read, self.output_read = 0, output_after

    def add(self, item: Record | OutputChunk) -> None:
        if isinstance(item, OutputChunk):
            self.chunks.append(item)
            self.output_read = max(self.output_read, item.seq)
        else:
            self.records.append(item)
            self.events_read = max(self.events_read, item.seq)

    def next(self) -> Record | OutputChunk | None:
        """The next item, or None while the other stream may still hold an earlier one."""
        records, chunks = self.records, self.chunks
        if records and chunks:
            return records.popleft() if records[0].stream_ts <= chunks[0].stream_ts else chunks.popleft()
        if records and self.output_read >= self.output_end:
            return records.popleft()
        if chunks and self.events_read >= self.events_end:
            return chunks.popleft()
        return None

    @property
    def waiting(self) -> bool:
        return bool(self.records or self.chunks)

    def stop_waiting(self) -> None:
        """Take what was stored as read: what has not come by now (expired, say) is not waited for."""
        self.events_end = self.output_end = 0


class JobReaders:
    """What one reader of a job counts: its records vetted (with credentials) and its output
    through the gate, chunks kept in stream order while one waits for its attempt's node."""

    def __init__(self, bus: EventBus, job_id: str) -> None:
        self.job_id = job_id
        self._vetting = None
        if bus.identity is not None:  # PyNaCl and the verifier: only for a reader with credentials
            from orchestrator.vetting import Vetting

            self._vetting = Vetting(bus)
        self.gate = OutputGate(self._vetting.verifier if self._vetting is not None else None)
        self._holds = OpenHolds()
        self._held: deque[OutputChunk] = deque()

    async def record(self, rec: Record) -> Record:
        if self._vetting is not None:
            rec = await self._vetting.record(rec)
        rec = self._holds.judge(rec)
        self.gate.learn(rec)
        return rec

    async def hold(self, chunk: OutputChunk) -> None:
        if self._vetting is not None:
            await self._vetting.meet(chunk.signer)
        self._held.append(chunk)

    @property
    def waiting(self) -> bool:
        """Whether the first held chunk waits for its attempt's node."""
        return bool(self._held) and self.gate.judge(self._held[0]) == WAIT

    def release(self, *, final: bool = False) -> Iterator[OutputChunk]:
        """The held chunks that count, in order, up to the first that must still wait
        (`final`: none waits any more; what is still unknown is refused)."""
        while self._held:
            verdict = self.gate.judge(self._held[0], final=final)
            if verdict == WAIT:
                return
            chunk = self._held.popleft()
            if verdict is None:
                yield chunk
            else:
                log.warning("output.refused", job_id=self.job_id, seq=chunk.seq, reason=verdict)


async def job_output(bus: EventBus, job_id: str) -> AsyncGenerator[OutputChunk, None]:
    """The job's stored output as it stands, all attempts, in order: only what counts (as
    `follow_job` gives it, without following). The job's records are read first, and read
    again if a chunk belongs to an attempt they do not place (it began meanwhile)."""
    readers = JobReaders(bus, job_id)
    read_to = await _read_records(bus, readers, 1)
    async with contextlib.aclosing(bus.output_chunks(job_id)) as chunks:
        async for chunk in chunks:
            await readers.hold(chunk)
            if readers.waiting:
                read_to = await _read_records(bus, readers, read_to + 1)
            for counted in readers.release(final=True):
                yield counted


async def _read_records(bus: EventBus, readers: JobReaders, start_seq: int) -> int:
    """Feed the job's records from `start_seq` to `readers`; the last sequence read."""
    last = start_seq - 1
    async for batch in bus.read_records(subjects.job_all(readers.job_id), start_seq):
        for rec in batch:
            await readers.record(rec)
            last = rec.seq
    return last
