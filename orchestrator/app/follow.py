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

A lost connection (a broker restart) is waited for, RECONNECT_S at most, saying so with a
`notice`; then both streams are read on from after the last item read: no gap, no repeat.

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
from collections.abc import AsyncGenerator, Callable

import msgspec

from bus.errors import BusError, BusUnavailable, NotAllowed
from bus.logs import Logger
from bus.port import EventBus, OutputChunk, raise_if_cancelling
from orchestrator.core.authorship import OpenHolds
from orchestrator.output_gate import WAIT, OutputGate
from schemas import subjects
from schemas.events import ends_job
from schemas.records import Record

log = Logger("nexus.follow")

DRAIN_S = 10.0  # after the verdict, how long to wait for announced output
RECONNECT_S = 60.0
"""How long a follower waits for a lost connection to come back (a broker restart) before it gives up."""
RECONNECT_POLL_S = 0.2  # how often a follower looks whether the connection is back
CREDENTIALS_CHECK_S = 2.0  # down this long, a follower asks whether its credentials are still let in (revoked, expired)
QUIET_CHECK_S = 1.0
"""How often a follower that gets nothing looks whether its connection is still there (the API's
SSE stream, whose `idle_s` is its 15 s keepalive, noticed a lost NATS only at the next keepalive)."""
FEED_MAX = 4
"""Items a follower's feed holds ahead of it (an output chunk is at most 1 MiB): the feed waits
while it is full, so a slow reader (a slow SSE client, a `nexus run` piped into a slow program)
holds the server back instead of growing with the job's output."""


def feed_queue() -> asyncio.Queue[object]:
    """The queue to give `follow_job` when something else may end it (`stop_feed`)."""
    return asyncio.Queue(maxsize=FEED_MAX)


def stop_feed(queue: asyncio.Queue[object], sentinel: object) -> None:
    """End the follower reading `queue` (follow_job returns at an item that is neither a record nor
    a chunk) now, even when the feed has filled it: what is dropped to make room was not read."""
    while True:
        try:
            queue.put_nowait(sentinel)
            return
        except asyncio.QueueFull:
            queue.get_nowait()


class Followed(msgspec.Struct, frozen=True):
    """One item of a followed job: a record, an output chunk, `idle` (nothing for `idle_s`),
    or a `notice` for the person following (the connection was lost, or came back)."""

    record: Record | None = None
    chunk: OutputChunk | None = None
    idle: bool = False
    notice: str | None = None


async def follow_job(
    bus: EventBus,
    job_id: str,
    *,
    events_from: int = 1,
    output_after: int = 0,
    until: Callable[[Record], bool] | None = None,
    idle_s: float = 1.0,
    queue: asyncio.Queue[object] | None = None,
    reconnect_s: float | None = None,
) -> AsyncGenerator[Followed, None]:
    """The job's records and chunks as they come (see the module docstring).

    Anything put into `queue` that is neither a record nor a chunk (a server's
    stop sentinel, `stop_feed`) ends the stream; a bounded queue (`feed_queue`) keeps the
    feed to the reader's pace. A lost connection is waited for, `reconnect_s`
    (default RECONNECT_S) at most, BusUnavailable after that; once it is back, both
    streams are read again from after the last item read: no gap, no repeat."""
    queue = queue if queue is not None else feed_queue()
    reconnect_s = RECONNECT_S if reconnect_s is None else reconnect_s
    readers = JobReaders(bus, job_id)
    order: StoreOrder | None = None
    verdict_seen = False
    output_end: int | None = None
    last_output = output_after
    last_item = time.monotonic()
    quiet_since = last_item  # since the last item or `idle` the reader was given
    lost_since: float | None = None  # when the connection was found lost, until following again
    told = False  # whether the follower was told it was lost
    while True:  # one turn per connection: after a reconnect the feed is made again
        connection = bus.reconnected_at
        # Events always from the job's first: the output gate learns each attempt's node from them.
        events_next = order.events_read + 1 if order is not None else 1
        output_next = (order.output_read if order is not None else output_after) + 1
        async with contextlib.AsyncExitStack() as feed:
            try:
                await feed.enter_async_context(bus.job_feed(job_id, queue, events_from=events_next, output_from=output_next))
            except BusError:
                if lost_since is None:
                    raise
                await _wait_connected(bus, job_id, lost_since, reconnect_s)
                continue
            if order is None:
                order = StoreOrder(*await asyncio.gather(_events_end(bus, job_id), bus.output_end(job_id)), output_after=output_after)
            if lost_since is not None:
                lost_since = None
                if told:
                    yield Followed(notice=f"connected to NATS again: following job {job_id} on from where it stopped")
            while True:
                raise_if_cancelling()
                if output_end is not None and last_output >= output_end:
                    for chunk in readers.release(final=True):
                        yield Followed(chunk=chunk)
                    return
                item = order.next()
                if item is None:
                    try:
                        got = await asyncio.wait_for(queue.get(), min(idle_s, QUIET_CHECK_S))
                    except TimeoutError:
                        if not bus.connected or bus.reconnected_at != connection:
                            break  # the feed's consumers may be gone with the connection: make them again
                        if order.waiting:  # stored items that did not come (expired meanwhile): go on without them
                            order.stop_waiting()
                            continue
                        if verdict_seen and time.monotonic() - last_item >= DRAIN_S:
                            for chunk in readers.release(final=True):
                                yield Followed(chunk=chunk)
                            return
                        if time.monotonic() - quiet_since >= idle_s:
                            quiet_since = time.monotonic()
                            yield Followed(idle=True)
                        continue
                    last_item = quiet_since = time.monotonic()
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
        if lost_since is None:
            lost_since = time.monotonic()
            told = not bus.connected  # else it came back before it was missed: no need to say anything
            if told:
                yield Followed(notice=f"lost the connection to NATS at {bus.url}: waiting up to {reconnect_s:g}s for it (the job goes on)")
        await _wait_connected(bus, job_id, lost_since, reconnect_s)


async def _wait_connected(bus: EventBus, job_id: str, lost_since: float, reconnect_s: float) -> None:
    """Until the bus is connected again, or BusUnavailable once `reconnect_s` have passed
    since the connection was found lost."""
    asked = False
    while True:
        if not asked and time.monotonic() - lost_since >= CREDENTIALS_CHECK_S:
            asked = True  # once: a server that is merely away answers nothing either way
            if (refused := await bus.credentials_refused()) is not None:
                raise NotAllowed(f"{refused}; the connection was dropped and the job goes on")
        if time.monotonic() - lost_since >= reconnect_s:
            why = f"lost the connection while following job {job_id}; it did not come back within {reconnect_s:g}s (the job goes on)"
            raise BusUnavailable(bus.url, why)
        await asyncio.sleep(RECONNECT_POLL_S)
        if bus.connected:
            return


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
        """Take the next item of its stream; one read before (a feed made again after a reconnect
        starts after the last item read, but the old feed may have queued more) is dropped."""
        if item.seq <= (self.output_read if isinstance(item, OutputChunk) else self.events_read):
            return
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
        self._held: deque[OutputChunk] = deque()  # since the last release
        self._waiting: dict[int, list[OutputChunk]] = {}  # by attempt: its node is not known yet

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
        """Whether a chunk held since the last `release` waits for its attempt's node."""
        return any(self.gate.judge(chunk) == WAIT for chunk in self._held)

    def release(self, *, final: bool = False) -> list[OutputChunk]:
        """The held chunks that count, in order; those whose attempt's node is not known yet
        stay held (`final`: none waits any more; what is still unknown is refused).

        A waiting chunk holds back only its own attempt's chunks (they wait together), not the
        rest: a chunk of an attempt that never comes (any agent may store one on any job) held
        every chunk after it, so the job's live output stopped until it ended and the reader held
        all of it meanwhile."""
        ready = list(self._held)
        self._held.clear()
        for attempt in [a for a in self._waiting if final or a in self.gate.nodes]:
            ready.extend(self._waiting.pop(attempt))  # older than what was held since
        ready.sort(key=lambda chunk: chunk.seq)
        released: list[OutputChunk] = []
        for chunk in ready:
            verdict = self.gate.judge(chunk, final=final)
            if verdict == WAIT:
                self._waiting.setdefault(chunk.attempt, []).append(chunk)
            elif verdict is None:
                released.append(chunk)
            else:
                log.warning("output.refused", job_id=self.job_id, seq=chunk.seq, reason=verdict)
        return released


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
