"""The port to the event log and bus: what services and clients may ask of it, in Nexus terms.

Two adapters implement `EventBus` and pass the same contract tests (tests/contract/):

    bus.nats_bus.NatsBus    NATS JetStream, the only importer of nats-py
    bus.memory.MemoryBus    an in-process twin for fast tests

Every operation raises only `bus.errors` (and schemas.errors.DecodeError for a
reply that does not decode); nothing of the underlying client leaks through it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol

import msgspec

from schemas import codec, msgids, subjects
from schemas.envelope import Envelope, Outgoing
from schemas.errors import DecodeError
from schemas.events import NodeHeartbeat
from schemas.records import Record
from schemas.secrets import OrchestratorKey

if TYPE_CHECKING:  # PyNaCl and nkeys are imported where there are credentials to use
    from bus.identity import Identity


class StreamLimits(msgspec.Struct, frozen=True):
    # None: keep what the streams have (1 for new ones); a number: set it (3 in a cluster).
    replicas: int | None = None
    output_max_age_s: float = 7 * 24 * 3600
    output_max_bytes: int = 8 * 1024**3
    node_ttl_s: float = 10.0
    # A consumer on a stream readers may read, unused this long, is removed (Orchestrator).
    consumer_idle_s: float = 3600.0


DEFAULT_LIMITS = StreamLimits()


class Published(msgspec.Struct, frozen=True):
    """Where an event was stored; `duplicate` when its msg id had been stored before (seq is the first copy's)."""

    seq: int
    duplicate: bool


# Which stream of the job a chunk is from: a PTY job's output is all "stdout" (the terminal
# merges both); a `tty: false` job's stderr is "stderr" (header Nexus-Stream on NEXUS_OUTPUT).
OutputStream = Literal["stdout", "stderr"]


class OutputChunk(msgspec.Struct, frozen=True):
    seq: int
    attempt: int
    number: int
    data: bytes
    stream_ts: datetime  # the server's time of storing it, as Record.stream_ts: orders output among the job's events
    stream: OutputStream = "stdout"
    subject: str = ""
    signer: str | None = None  # Nexus-Signer / Nexus-Sig: who signed it (bus.identity.output_signing_input)
    signature: str | None = None
    claimed_node: str | None = None  # Nexus-Node: the node its publisher says ran it

    @property
    def node(self) -> str | None:
        """The node its publisher says ran it (None: it does not say), from its `Nexus-Node`
        header or, in releases that put it there, its subject. Its signature proves it or not."""
        return subjects.output_node(self.subject) or self.claimed_node


class Delivery(Protocol):
    """One message of an agent's dispatch consumer. Settle it exactly once."""

    @property
    def record(self) -> Record: ...

    async def ack(self) -> None:
        """Done with it: never deliver it again."""

    async def nak(self, delay_s: float | None = None) -> None:
        """Not now: deliver it again (after `delay_s`)."""

    async def term(self) -> None:
        """Never deliver it again, and it was not handled (a message the agent cannot read)."""


class Request(Protocol):
    """One request received by a responder (the orchestrator's query channel): bytes in, bytes out."""

    @property
    def data(self) -> bytes: ...

    async def respond(self, *parts: bytes) -> None:
        """Answer in one message, or in several when it is too big for one (the asker gets
        them all, in order, as one answer); never raises (the asker may have gone)."""


class EventBus(Protocol):
    """The event log (NEXUS_EVENTS), job output (NEXUS_OUTPUT), node heartbeats and the query channel."""

    url: str
    """The server's URL, to name it in messages: its credentials masked (bus.urls.redact_url)."""
    reconnected_at: datetime | None
    """When the connection last came back (None: never lost); silence before it may have been ours."""

    async def close(self) -> None: ...

    async def credentials_refused(self) -> str | None:
        """While the connection is down: whether the server now refuses its credentials (revoked,
        expired), said as the reason; None when it would let them in, or cannot be asked."""
        ...

    @property
    def connected(self) -> bool: ...

    @property
    def max_payload(self) -> int:
        """The largest message the server takes (payload and headers); output chunks stay under it."""

    @property
    def identity(self) -> Identity | None:
        """Who this connection signs as (its credentials), None on a bus without them."""

    # ---- setup
    async def ensure_streams(self, limits: StreamLimits = DEFAULT_LIMITS) -> None:
        """Create or update the streams and the heartbeat bucket (admin only)."""

    async def streams_ready(self) -> bool:
        """Do the event log and the heartbeat bucket exist yet?"""

    # ---- writing
    async def publish(self, out: Outgoing, *, expected_seq: int | None = None) -> Published:
        """Store one event. With `expected_seq`, refuse it (StaleDecision) unless the entity's
        last event (`nexus.evt.job.<id>.>` for a job) is still at that sequence (0: none yet)."""

    async def publish_chain(self, outs: Sequence[Outgoing], *, expected_seq: int) -> list[Published]:
        """Publish decisions on one entity in order, each expecting the previous one."""

    async def publish_output(
        self, job_id: str, attempt: int, number: int, data: bytes, node_id: str, stream: OutputStream = "stdout", *, token: str
    ) -> None:
        """Store output chunk `number` (1, 2, ...) of a job's attempt, from `stream`; a retry with the
        same `token` (random, drawn once per chunk: msgids.output) is harmless. Chunk numbers count
        both streams of an attempt together."""

    # ---- reading
    async def last_seq(self, stream: str = subjects.EVENTS_STREAM, subject: str | None = None) -> int:
        """Last sequence of the stream (0 if empty), or of the messages matching a subject filter."""

    def records(
        self, start_seq: int = 1, subject: str = subjects.EVENTS_ALL, *, batch_max: int = 1000, idle_s: float = 5.0
    ) -> AsyncGenerator[list[Record], None]:
        """Follow the log from `start_seq`, forever, in order, in batches of whatever is ready."""

    def read_records(
        self, subject: str = subjects.EVENTS_ALL, start_seq: int = 1, until_seq: int | None = None
    ) -> AsyncGenerator[list[Record], None]:
        """Read the log from `start_seq` up to `until_seq` (default: the last sequence now), then stop."""

    async def announce(self) -> None:
        """Publish this connection's identity announcement now (once; also done before its first
        event): readers of its answers and decisions can then verify them from the start."""

    async def node_history(self, job_id: str, node_id: str, start_seq: int = 1) -> list[Record]:
        """The job's records from `start_seq` that node `node_id`'s agent may read
        (subjects.node_view_filters), in order: all an agent needs to accept a dispatch safely."""

    async def announcement(self, key: str) -> Record | None:
        """The last `nexus.evt.trust.<key>.announced` (None: that key never announced itself)."""

    def output_chunks(
        self, job_id: str, *, follow_until: Callable[[], bool] | None = None, batch: int | None = None
    ) -> AsyncGenerator[OutputChunk, None]:
        """A job's stored output, all attempts, in order; with `follow_until`, wait for more until it says stop."""

    async def output_end(self, job_id: str) -> int:
        """Sequence of the job's last stored output chunk (0: none, or cannot tell now)."""

    def job_feed(
        self, job_id: str, into: asyncio.Queue[object], *, events_from: int = 1, output_from: int = 1
    ) -> AbstractAsyncContextManager[None]:
        """While open, put the job's event `Record`s and `OutputChunk`s into `into`, each kind in stream
        order, waiting while `into` is full: a bounded queue holds the feed to its reader's pace."""

    # ---- heartbeats (not the audit trail)
    async def put_heartbeat(self, hb: NodeHeartbeat, *, revision: int | None = None) -> int:
        """Store `hb` under its node's key; returns the key's new revision. With `revision`, only
        if the key is still at it (0: never written), else HeartbeatMoved: a compare-and-set."""

    async def node_heartbeat(self, node_id: str) -> tuple[NodeHeartbeat | None, int]:
        """The node's stored heartbeat (None: none, or a value that is not that node's heartbeat)
        and its key's revision (0: none); NotAllowed for credentials that may not read it."""

    async def heartbeats(self) -> dict[str, NodeHeartbeat]:
        """The latest heartbeat of every node, `ts` as the agent sent it."""

    async def watch_heartbeats(
        self,
        on_beat: Callable[[NodeHeartbeat], Awaitable[None]],
        on_snapshot: Callable[[], None] | None = None,
        *,
        idle_s: float = 10.0,
    ) -> None:
        """Call `on_beat` for every heartbeat (`ts`: when it was stored), forever;
        `on_snapshot` once those stored before the call have all been delivered."""

    def heartbeats_behind_s(self) -> float:
        """How far behind the stored heartbeats `watch_heartbeats` has read (seconds of server
        time; 0 when caught up): beats stored in that time are not delivered yet."""

    async def heartbeats_writable(self, timeout_s: float = 1.0) -> bool:
        """Whether a heartbeat could be stored now (the bucket's stream has a leader and answers
        within `timeout_s`). While it cannot, every node is silent through no fault of its own:
        a stream leader's election on a cluster, a server cut off."""

    # ---- public keys (the `nexus-keys` bucket; not the audit trail)
    async def put_orchestrator_key(self, key: OrchestratorKey) -> None:
        """Publish the orchestrator's sealing key record (the orchestrator, at every start)."""

    async def orchestrator_key(self) -> OrchestratorKey | None:
        """The orchestrator's sealing key record; None when none is published (or its bucket does not exist yet)."""

    async def remove_idle_consumers(self, idle_s: float) -> list[str]:
        """Remove the consumers on the streams readers may read (the log, the output, the
        buckets) that nobody has used for `idle_s`, whatever inactive threshold they were made
        with, the agents' dispatch consumers excepted (admin only): a reader may make consumers,
        but not ones that outlive their use. Returns `stream/name` of each removed."""

    # ---- the agent's side
    async def provision_dispatches(self, node_id: str, stream: str = subjects.DISPATCH_STREAM, *, since: datetime | None = None) -> None:
        """Create the node's durable dispatch consumer unless it exists (the orchestrator's job:
        an agent's credentials may not create consumers). Later dispatches wait for it there.
        `stream`: where the node's agent reads them (its heartbeat's `dispatches_from`);
        `since`: what it holds starts at that time (None: at its creation)."""

    def dispatch_stream(self, node_id: str) -> str:
        """Where this connection's agent for `node_id` reads its dispatches (it says so in its heartbeat)."""

    def dispatches(self, node_id: str) -> AbstractAsyncContextManager[AsyncIterator[Delivery]]:
        """The node's durable dispatch consumer (`dispatch` and `cancel` for this node, in order).
        It exists once the context is entered and only sees what is published after its first creation."""

    # ---- request/reply (the query channel, `subjects.RPC_QUERY`)
    async def request(self, subject: str, data: bytes, timeout_s: float) -> list[bytes] | None:
        """The reply, in the parts the responder sent it in (one, unless it was too big for one
        message); None when nobody listens on `subject`; RequestTimedOut (a TimeoutError) when
        nobody answers in time."""

    def responder(self, subject: str, queue: str) -> AbstractAsyncContextManager[AsyncIterator[Request]]:
        """Serve `subject` in a queue group (each request reaches one member), from entering the context on."""


def entity_filter(subject: str) -> str:
    """The subjects whose last sequence guards a publish on `subject` (`nexus.evt.job.<id>.>` for a job)."""
    return subjects.entity_filter(subject)


def raise_if_cancelling() -> None:
    """Call at the top of every long-lived loop. On Python 3.11, `asyncio.wait_for` (used
    inside nats-py's fetch and KV watch) can swallow a cancellation that races with a
    message arriving; the task then loops forever and shutdown hangs. `cancelling()`
    still counts that request, so the loop can honour it here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def id_taken_by_another(mine: Outgoing, stored_subject: str, stored: bytes) -> bool:
    """A publish came back "duplicate": is the stored message our own earlier copy?

    Some ids are claims the first holder wins (`Envelope.claims_its_id`: requests,
    acceptances). Any other id belongs to the one event it names (this job's `exited` for
    attempt 1, say); if a message that says something else holds it (a foreign client got
    there first), ours must not be dropped in its favour: the caller stores it under
    `msgids.reclaimed` instead. Our own retry may differ in `ts` only.
    """
    if mine.event.claims_its_id:
        return False
    if stored_subject != mine.subject:
        return True
    try:
        theirs = codec.decode(stored_subject, stored)
    except DecodeError:
        return True
    return _without_ts(theirs) != _without_ts(mine.event)


def _without_ts(event: Envelope) -> Envelope:
    return msgspec.structs.replace(event, ts=None)


def reclaimed(mine: Outgoing) -> Outgoing:
    """`mine` under an id derived from what it says (so its own retries still dedupe)."""
    return Outgoing(
        mine.subject, mine.event, msgids.reclaimed(mine.msg_id, hashlib.sha256(codec.encode(_without_ts(mine.event))).hexdigest()[:16])
    )
