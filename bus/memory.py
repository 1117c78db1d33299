"""MemoryBus: an in-process twin of NatsBus that passes the same contract tests (tests/contract/).

It models what services rely on: one sequence per stream, per-subject last sequence
for optimistic concurrency (StaleDecision), the msg-id duplicate check (a duplicate
answers with the first copy's sequence), `*` / `>` subject filters, ordered follow,
the heartbeat bucket with a watch, the agents' durable dispatch consumers (deliver
new only, ack / nak / term, unacked messages come back to the next consumer) and
request/reply with queue groups.

It does not model: the duplicate window's expiry (ids are remembered forever), output
age/size limits, heartbeat TTL, ack_wait (an unacked delivery comes back only when its
consumer closes), permissions, signatures, reconnects or server time skew.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from bus.errors import BusError, HeartbeatMoved, NotSetUp, RequestTimedOut, StaleDecision
from bus.identity import Identity
from bus.port import (
    DEFAULT_LIMITS,
    OutputChunk,
    OutputStream,
    Published,
    StreamLimits,
    entity_filter,
    id_taken_by_another,
    raise_if_cancelling,
    reclaimed,
)
from schemas import codec, msgids, subjects
from schemas.envelope import Outgoing
from schemas.errors import DecodeError
from schemas.events import NodeHeartbeat
from schemas.records import Record
from schemas.secrets import KEYS_BUCKET, OrchestratorKey


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject filter semantics: `*` is one token, a final `>` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


@dataclass(frozen=True)
class _Stored:
    seq: int
    subject: str
    data: bytes
    ts: datetime
    number: int = 0  # output chunks: the chunk number header
    stream: OutputStream = "stdout"  # output chunks: the stream header
    node: str | None = None  # output chunks: the node header


@dataclass
class _Stream:
    messages: list[_Stored] = field(default_factory=list)
    msg_ids: dict[str, int] = field(default_factory=dict)

    def last(self, pattern: str | None = None) -> int:
        for msg in reversed(self.messages):
            if pattern is None or subject_matches(pattern, msg.subject):
                return msg.seq
        return 0

    def append(
        self, subject: str, data: bytes, msg_id: str | None, number: int = 0, stream: OutputStream = "stdout", node: str | None = None
    ) -> Published:
        if msg_id is not None and msg_id in self.msg_ids:
            return Published(seq=self.msg_ids[msg_id], duplicate=True)
        seq = len(self.messages) + 1
        self.messages.append(_Stored(seq, subject, data, datetime.now(UTC), number, stream, node))
        if msg_id is not None:
            self.msg_ids[msg_id] = seq
        return Published(seq=seq, duplicate=False)

    def since(self, seq: int, pattern: str) -> list[_Stored]:
        return [m for m in self.messages[max(seq, 1) - 1 :] if subject_matches(pattern, m.subject)]


@dataclass
class _Durable:
    filters: list[str]
    cursor: int  # next stream sequence to look at
    unacked: set[int] = field(default_factory=set)
    again: dict[int, float] = field(default_factory=dict)  # seq -> loop time it may come back


@dataclass(frozen=True)
class MemoryDelivery:
    record: Record
    _durable: _Durable
    _bus: MemoryBus

    async def ack(self) -> None:
        self._durable.unacked.discard(self.record.seq)

    async def nak(self, delay_s: float | None = None) -> None:
        if self.record.seq in self._durable.unacked:
            self._durable.unacked.discard(self.record.seq)
            self._durable.again[self.record.seq] = asyncio.get_running_loop().time() + (delay_s or 0.0)
            self._bus._changed()

    async def term(self) -> None:
        self._durable.unacked.discard(self.record.seq)


@dataclass(frozen=True)
class MemoryRequest:
    data: bytes
    _answer: asyncio.Future[list[bytes]]

    async def respond(self, *parts: bytes) -> None:
        if not self._answer.done():
            self._answer.set_result(list(parts))


class MemoryBus:
    """The event log and bus in one process's memory; see the module docstring for what it models."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.reconnected_at: datetime | None = None
        self._set_up = False
        self._closed = False
        self._events = _Stream()
        self._output = _Stream()
        self._beats: dict[str, tuple[NodeHeartbeat, datetime]] = {}
        self._beat_revisions: dict[str, int] = {}  # the bucket's sequence of each key's last put
        self._orchestrator_key: bytes | None = None
        self._durables: dict[str, _Durable] = {}
        self._responders: dict[str, dict[str, list[asyncio.Queue[MemoryRequest]]]] = {}
        self._turn = itertools.count()
        self._signal = asyncio.Event()

    # ------------------------------------------------------------ plumbing

    def _changed(self) -> None:
        self._signal.set()
        self._signal = asyncio.Event()

    async def _wait(self, timeout_s: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._signal.wait(), timeout_s)

    def _stream(self, name: str) -> _Stream:
        if not self._set_up:
            raise NotSetUp(f"stream {name}")
        if name == subjects.EVENTS_STREAM:
            return self._events
        if name == subjects.OUTPUT_STREAM:
            return self._output
        raise NotSetUp(f"stream {name}")

    @property
    def identity(self) -> Identity | None:
        return None

    async def credentials_refused(self) -> str | None:
        return None

    @property
    def connected(self) -> bool:
        return not self._closed

    @property
    def max_payload(self) -> int:
        return 1024 * 1024  # nats-server's default

    async def close(self) -> None:
        self._closed = True

    async def ensure_streams(self, limits: StreamLimits = DEFAULT_LIMITS) -> None:
        self._set_up = True

    async def streams_ready(self) -> bool:
        return self._set_up

    # ------------------------------------------------------------ writing

    async def publish(self, out: Outgoing, *, expected_seq: int | None = None) -> Published:
        event = out.event if out.event.ts is not None else msgspec.structs.replace(out.event, ts=datetime.now(UTC))
        data = codec.encode(event)
        try:
            codec.decode(out.subject, data)
        except DecodeError as exc:
            raise BusError(f"refusing to publish {out.subject}: {exc.reason}", subject=out.subject) from None
        stream = self._stream(subjects.EVENTS_STREAM)
        # JetStream's order: the expectation first, then the duplicate check.
        if expected_seq is not None and (last := stream.last(entity_filter(out.subject))) != expected_seq:
            raise StaleDecision(out.subject, expected_seq, last)
        pub = stream.append(out.subject, data, out.msg_id)
        if pub.duplicate:
            held = stream.messages[pub.seq - 1]
            if id_taken_by_another(out, held.subject, held.data):
                mine = reclaimed(out)
                pub = stream.append(mine.subject, data, mine.msg_id)
        self._changed()
        return pub

    async def publish_chain(self, outs: Sequence[Outgoing], *, expected_seq: int) -> list[Published]:
        done: list[Published] = []
        for out in outs:
            pub = await self.publish(out, expected_seq=expected_seq)
            done.append(pub)
            expected_seq = pub.seq
        return done

    async def publish_output(
        self, job_id: str, attempt: int, number: int, data: bytes, node_id: str, stream: OutputStream = "stdout", *, token: str
    ) -> None:
        self._stream(subjects.OUTPUT_STREAM).append(
            subjects.output(job_id, attempt), data, msgids.output(job_id, attempt, number, token), number, stream, node_id
        )
        self._changed()

    def inject(self, subject: str, data: bytes, msg_id: str | None = None) -> int:
        """Store raw bytes on the event log as a foreign client may (no checks): for tests."""
        seq = self._stream(subjects.EVENTS_STREAM).append(subject, data, msg_id).seq
        self._changed()
        return seq

    # ------------------------------------------------------------ reading

    async def last_seq(self, stream: str = subjects.EVENTS_STREAM, subject: str | None = None) -> int:
        return self._stream(stream).last(subject)

    async def records(
        self, start_seq: int = 1, subject: str = subjects.EVENTS_ALL, *, batch_max: int = 1000, idle_s: float = 5.0
    ) -> AsyncGenerator[list[Record], None]:
        next_seq = start_seq
        while True:
            raise_if_cancelling()
            signal = self._signal
            ready = self._stream(subjects.EVENTS_STREAM).since(next_seq, subject)[:batch_max]
            if ready:
                next_seq = ready[-1].seq + 1
                yield [_record(m) for m in ready]
            else:
                await signal.wait()

    async def announce(self) -> None:
        return None  # no identities on the in-process twin

    async def node_history(self, job_id: str, node_id: str, start_seq: int = 1) -> list[Record]:
        stream = self._stream(subjects.EVENTS_STREAM)
        patterns = subjects.node_view_filters(job_id, node_id)
        found = [m for m in stream.messages[max(start_seq, 1) - 1 :] if any(subject_matches(p, m.subject) for p in patterns)]
        return [_record(m) for m in found]

    async def announcement(self, key: str) -> Record | None:
        stream = self._stream(subjects.EVENTS_STREAM)
        subject = subjects.trust(key, "announced")
        found = [m for m in stream.messages if m.subject == subject]
        return _record(found[-1]) if found else None

    async def read_records(
        self, subject: str = subjects.EVENTS_ALL, start_seq: int = 1, until_seq: int | None = None
    ) -> AsyncGenerator[list[Record], None]:
        stream = self._stream(subjects.EVENTS_STREAM)
        end = until_seq if until_seq is not None else stream.last()
        batch = [_record(m) for m in stream.since(start_seq, subject) if m.seq <= end]
        for i in range(0, len(batch), 1000):
            yield batch[i : i + 1000]

    async def output_chunks(
        self, job_id: str, *, follow_until: Callable[[], bool] | None = None, batch: int | None = None
    ) -> AsyncGenerator[OutputChunk, None]:
        stream = self._stream(subjects.OUTPUT_STREAM)
        pattern = subjects.output_all(job_id)
        end = stream.last(pattern)
        next_seq = 1
        while True:
            raise_if_cancelling()
            for m in stream.since(next_seq, pattern)[: batch or 64]:
                next_seq = m.seq + 1
                yield _chunk(m)
                if follow_until is None and m.seq >= end:
                    return
            if follow_until is None and next_seq > end:
                return
            if follow_until is not None and not stream.since(next_seq, pattern):
                await self._wait(0.2)
                if follow_until() and not stream.since(next_seq, pattern):
                    return

    async def output_end(self, job_id: str) -> int:
        return self._output.last(subjects.output_all(job_id))

    @contextlib.asynccontextmanager
    async def job_feed(
        self, job_id: str, into: asyncio.Queue[object], *, events_from: int = 1, output_from: int = 1
    ) -> AsyncIterator[None]:
        async def feed() -> None:
            seqs = {subjects.EVENTS_STREAM: events_from, subjects.OUTPUT_STREAM: output_from}
            patterns = {subjects.EVENTS_STREAM: subjects.job_all(job_id), subjects.OUTPUT_STREAM: subjects.output_all(job_id)}
            while True:
                signal = self._signal
                for name, stream in ((subjects.EVENTS_STREAM, self._events), (subjects.OUTPUT_STREAM, self._output)):
                    for m in stream.since(seqs[name], patterns[name]):
                        await into.put(_record(m) if name == subjects.EVENTS_STREAM else _chunk(m))
                        seqs[name] = m.seq + 1
                await signal.wait()

        task = asyncio.create_task(feed())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.wait({task})

    # ------------------------------------------------------------ heartbeats

    async def put_heartbeat(self, hb: NodeHeartbeat, *, revision: int | None = None) -> int:
        if not self._set_up:
            raise NotSetUp(f"bucket {subjects.NODES_BUCKET}")
        if revision is not None and self._beat_revisions.get(hb.node, 0) != revision:
            raise HeartbeatMoved(hb.node, revision)
        self._beats[hb.node] = (hb, datetime.now(UTC))
        self._beat_revisions[hb.node] = max(self._beat_revisions.values(), default=0) + 1
        self._changed()
        return self._beat_revisions[hb.node]

    async def node_heartbeat(self, node_id: str) -> tuple[NodeHeartbeat | None, int]:
        if not self._set_up:
            raise NotSetUp(f"bucket {subjects.NODES_BUCKET}")
        held = self._beats.get(node_id)
        return (held[0] if held else None), self._beat_revisions.get(node_id, 0)

    # ------------------------------------------------------------ public keys

    async def put_orchestrator_key(self, key: OrchestratorKey) -> None:
        if not self._set_up:
            raise NotSetUp(f"bucket {KEYS_BUCKET}")
        self._orchestrator_key = codec.encode(key)

    async def orchestrator_key(self) -> OrchestratorKey | None:
        if not self._set_up or self._orchestrator_key is None:
            return None
        try:
            return codec.decode_orchestrator_key(self._orchestrator_key)
        except DecodeError:
            return None

    def heartbeats_behind_s(self) -> float:
        return 0.0

    async def heartbeats_writable(self, timeout_s: float = 1.0) -> bool:
        return self._set_up

    async def heartbeats(self) -> dict[str, NodeHeartbeat]:
        if not self._set_up:
            raise NotSetUp(f"bucket {subjects.NODES_BUCKET}")
        return {node: hb for node, (hb, _) in self._beats.items()}

    async def watch_heartbeats(
        self,
        on_beat: Callable[[NodeHeartbeat], Awaitable[None]],
        on_snapshot: Callable[[], None] | None = None,
        *,
        idle_s: float = 10.0,
    ) -> None:
        seen: dict[str, datetime] = {}
        while True:
            raise_if_cancelling()
            signal = self._signal
            for node, (hb, stored) in list(self._beats.items()):
                if seen.get(node) != stored:
                    seen[node] = stored
                    await on_beat(msgspec.structs.replace(hb, ts=stored))
            if on_snapshot is not None:
                on_snapshot()
                on_snapshot = None
            await signal.wait()

    # ------------------------------------------------------------ the agent's side

    async def provision_dispatches(self, node_id: str, stream: str = subjects.DISPATCH_STREAM, *, since: datetime | None = None) -> None:
        self._durable(node_id)  # one durable per node here, whatever the stream

    def dispatch_stream(self, node_id: str) -> str:
        return subjects.DISPATCH_STREAM

    def _durable(self, node_id: str) -> _Durable:
        stream = self._stream(subjects.EVENTS_STREAM)
        return self._durables.setdefault(f"agent-{node_id}", _Durable(subjects.agent_filters(node_id), stream.last() + 1))

    @contextlib.asynccontextmanager
    async def dispatches(self, node_id: str) -> AsyncIterator[AsyncIterator[MemoryDelivery]]:
        durable = self._durable(node_id)
        try:
            async with contextlib.aclosing(self._deliver(durable)) as it:
                yield it
        finally:  # what this consumer took and never settled comes back to the next one
            now = asyncio.get_running_loop().time()
            durable.again.update(dict.fromkeys(durable.unacked, now))
            durable.unacked.clear()

    def settled(self, node_id: str) -> bool:
        """Has the node's consumer been handed, and settled, everything published for it? (For tests.)"""
        durable = self._durables.get(f"agent-{node_id}")
        if durable is None:
            return False
        waiting = [m for m in self._events.since(durable.cursor, ">") if any(subject_matches(f, m.subject) for f in durable.filters)]
        return not (waiting or durable.unacked or durable.again)

    async def _deliver(self, durable: _Durable) -> AsyncGenerator[MemoryDelivery, None]:
        loop = asyncio.get_running_loop()
        while True:
            raise_if_cancelling()
            due = sorted(seq for seq, at in durable.again.items() if at <= loop.time())
            fresh = [m for m in self._events.since(durable.cursor, ">") if any(subject_matches(f, m.subject) for f in durable.filters)]
            if due:
                msg = self._events.messages[due[0] - 1]
                del durable.again[due[0]]
            elif fresh:
                msg = fresh[0]
                durable.cursor = msg.seq + 1
            else:
                durable.cursor = self._events.last() + 1
                wake = min(durable.again.values(), default=None)
                await self._wait(None if wake is None else max(wake - loop.time(), 0.0))
                continue
            durable.unacked.add(msg.seq)
            yield MemoryDelivery(_record(msg), durable, self)

    # ------------------------------------------------------------ request/reply

    async def request(self, subject: str, data: bytes, timeout_s: float) -> list[bytes] | None:
        groups = self._responders.get(subject, {})
        members = [queues for queues in groups.values() if queues]
        if not members:
            return None
        answer: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
        for queues in members:  # one member of each queue group, in turn
            queues[next(self._turn) % len(queues)].put_nowait(MemoryRequest(data, answer))
        try:
            return await asyncio.wait_for(answer, timeout_s)
        except TimeoutError:
            raise RequestTimedOut(subject, timeout_s) from None

    async def remove_idle_consumers(self, idle_s: float) -> list[str]:
        return []  # its readers hold no consumers of their own

    @contextlib.asynccontextmanager
    async def responder(self, subject: str, queue: str) -> AsyncIterator[AsyncIterator[MemoryRequest]]:
        inbox: asyncio.Queue[MemoryRequest] = asyncio.Queue()
        members = self._responders.setdefault(subject, {}).setdefault(queue, [])
        members.append(inbox)

        async def calls() -> AsyncGenerator[MemoryRequest, None]:
            while True:
                yield await inbox.get()

        try:
            async with contextlib.aclosing(calls()) as it:
                yield it
        finally:
            members.remove(inbox)


def _record(m: _Stored) -> Record:
    try:
        event = codec.decode(m.subject, m.data)
    except DecodeError as exc:
        return Record(seq=m.seq, subject=m.subject, stream_ts=m.ts, raw=m.data, error=exc.reason)
    return Record(seq=m.seq, subject=m.subject, stream_ts=m.ts, raw=m.data, event=event)


def _chunk(m: _Stored) -> OutputChunk:
    return OutputChunk(
        seq=m.seq, attempt=subjects.output_attempt(m.subject), number=m.number, data=m.data, stream_ts=m.ts,
        stream=m.stream, subject=m.subject, claimed_node=m.node,
    )  # fmt: skip
