"""NatsBus: the one adapter between Nexus and NATS JetStream.

Implements `bus.port.EventBus` for the orchestrator, the agent and the clients. It
creates the streams and the KV bucket, publishes events with deterministic
`Nats-Msg-Id`s and per-entity optimistic concurrency, and reads the log back as
`Record`s. nats-py errors are translated into `bus.errors` here and in the modules
it delegates to (bus.nats_consumers, bus.nats_nodes, bus.nats_setup), nowhere else.
`nc`, `js` and `nodes_kv()` are not part of the port: tests use them to play a foreign client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import DEFAULT_INBOX_PREFIX, Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from bus.errors import BusError, BusUnavailable, HeartbeatMoved, NotAllowed, NotSetUp
from bus.logs import Logger
from bus.nats_translate import (
    CHUNK_HEADER,
    NODE_HEADER,
    STREAM_HEADER,
    bucket_api,
    map_publish_errors,
    map_read_errors,
    to_output_chunk,
    to_record,
)
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
from bus.urls import redact_url
from schemas import codec, msgids, subjects
from schemas.envelope import Outgoing
from schemas.errors import DecodeError
from schemas.events import JobAccepted, NodeFact, NodeHeartbeat
from schemas.records import Author, Record
from schemas.secrets import KEYS_BUCKET, OrchestratorKey
from schemas.trust import SIG_HEADER, SIGNER_HEADER

if TYPE_CHECKING:
    from bus.identity import Identity, Verifier
    from bus.nats_consumers import NatsDelivery, NatsRequest

log = Logger("nexus.bus")

# An ack normally takes milliseconds; one lost with a dropped connection is never
# coming, and every retry carries the same Nats-Msg-Id, so waiting less is safe.
PUBLISH_ACK_TIMEOUT_S = 3.0
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
_DENIED_SUBJECT = re.compile(r'permissions violation for publish to "([^"]+)"', re.IGNORECASE)
EXPECTED_LAST_SUBJECT_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
# How long a follower of the log waits for "how far is the log?" when its subscription is quiet.
BEHIND_CHECK_S = 2.0
ORDERED_CREATE_S = 4.0  # creating a log follower's ordered consumer (see _ordered)
CLI_RECONNECT_WAIT_S = 0.5  # between a following CLI's attempts to reconnect
# A follower's output feed (job_feed): about how many bytes of chunks it pulls at a time from a
# backlog (a chunk is at most 1 MiB, the server's message limit; small ones come up to 64 at a
# time), how long a pull from a backlog may wait (it asks for no more than are stored: none),
# the long poll once caught up, and the wait before a failed consumer is made again.
OUTPUT_FEED_BYTES = 4 << 20
OUTPUT_FEED_MAX_BATCH = 64
OUTPUT_BACKLOG_WAIT_S = 0.05
OUTPUT_POLL_S = 1.0
OUTPUT_RETRY_S = 1.0


def _refused_reason(creds: str | os.PathLike[str] | None) -> str:
    if creds is None:
        return "the server requires credentials (Authorization Violation): give --creds FILE or NEXUS_NATS_CREDS"
    # The server does not say why; revocation (`nexus creds revoke`) is the likeliest on a server that took them before.
    return (
        f"the server refused the credentials in {os.fspath(creds)!r} (Authorization Violation): "
        "they may have been revoked (see `nexus creds list`), have expired, or be for another server"
    )


def servers(url: str) -> list[str]:
    """`--nats` / NEXUS_NATS_URL may list several servers, comma separated (the members of a
    cluster): the client tries each at connect and fails over between them after."""
    found = [u.strip() for u in url.split(",") if u.strip()]
    if not found:
        raise BusUnavailable(url, "no server URL given")
    return found


def _identity_from(url: str, creds: str | os.PathLike[str]) -> Identity:
    from bus.identity import Identity, IdentityError  # PyNaCl and nkeys: only with credentials

    try:
        return Identity.from_creds(creds)
    except IdentityError as exc:
        raise BusUnavailable(url, str(exc)) from None


def _verifier_for(identity: Identity | None) -> Verifier | None:
    if identity is None:
        return None
    from bus.identity import Verifier

    return Verifier.trusting_issuer_of(identity)


def _api_of(stream: str) -> Callable[[str], bool]:
    """Whether a refused subject is a JetStream API request on `stream` (`$JS.API.<op>.<stream>`;
    nats-py reports it in lower case)."""
    return lambda s: s.lower().startswith("$js.api.") and s.lower().endswith(f".{stream.lower()}")


T = TypeVar("T")


def _only_under_node(identity: Identity | None, subject: str) -> bool:
    """Whether `identity` is an agent's that may publish `subject` only with its node appended."""
    if identity is None or identity.author.node is None:
        return False
    return identity.may_publish(f"{subject}.{identity.author.node}") and not identity.may_publish(subject)


def _output_batch(largest: int) -> int:
    """How many chunks to pull at a time, the largest so far `largest` bytes: about OUTPUT_FEED_BYTES."""
    return max(1, min(OUTPUT_FEED_MAX_BATCH, OUTPUT_FEED_BYTES // max(largest, 1)))


def _stored_record(subject: str, msg: api.RawStreamMsg) -> Record:
    """A message read by a direct get, as a record (`event` None: it does not decode)."""
    headers, raw = msg.headers or {}, msg.data or b""
    try:
        event, error = codec.decode(subject, raw), None
    except DecodeError as exc:
        event, error = None, exc.reason
    return Record(
        seq=int(msg.seq or 0), subject=subject, stream_ts=datetime.now(UTC), raw=raw, event=event, error=error,
        signer=headers.get(SIGNER_HEADER), signature=headers.get(SIG_HEADER),
    )  # fmt: skip


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Read what an abandoned operation ended with: an exception it raised while being cancelled
    (nats-py turns some cancellations into its own errors) is no "never retrieved" at exit."""
    if not task.cancelled():
        task.exception()


class NatsBus:
    """A connected NATS client plus JetStream helpers. Create with `NatsBus.connect`."""

    def __init__(self, nc: Client, url: str, identity: Identity | None = None) -> None:
        self.nc = nc
        # Signs every publish (bus.identity); announced on the log before its first event.
        self._identity = identity
        # Subjects the server refused to this connection (permissions violations), to say why,
        # and the operations waiting for an answer that such a refusal means will never come.
        self.denied: set[str] = set()
        self._creds: str | os.PathLike[str] | None = None  # to ask, when the connection drops, whether they are still let in
        self._refusal_waiters: list[tuple[asyncio.Future[str], Callable[[str], bool]]] = []
        # A CLI's publishes say "not allowed" at once; a daemon's hot path spares the extra task
        # per publish (its permissions are its own role's; a refusal is logged, and the ack times out).
        self.publishes_wait_for_refusals = True
        self._announced = identity is None
        self._verifier = _verifier_for(identity)
        # Agent credentials issued before facts and output took DESIGN §3's subjects (2026-12-06)
        # allow them only under the node (`nexus.evt.job.*.exited.<node>`, `nexus.out.*.*.<node>`):
        # such an agent publishes there until they are re-issued (readers take both; `nexus creds
        # new` and `nexus up` issue the new permissions).
        self._facts_under_node = _only_under_node(identity, subjects.job_kind_all("exited"))
        self._output_under_node = _only_under_node(identity, "nexus.out.*.*")
        self.url = redact_url(url)  # for messages only: nothing connects with it again
        self.js: JetStreamContext = nc.jetstream(timeout=10)
        self._nodes_kv: KeyValue | None = None  # see _kv
        # When the connection last came back (None: never lost). After that, silence
        # from nodes may have been ours, not theirs: see Orchestrator.quiet_since.
        self.reconnected_at: datetime | None = None
        self.reconnects = 0  # long-lived subscriptions compare it to know they must be made again
        self.beats_behind_from: datetime | None = None  # the heartbeat watch's read position when behind
        # The last entry the heartbeat watch read: its revision (the bucket stream's sequence) and
        # when it was stored; heartbeats_writable compares it with what the bucket holds
        # (bus.nats_nodes.note_stored).
        self.beats_read: tuple[int, datetime] | None = None

    @property
    def identity(self) -> Identity | None:
        return self._identity

    def _on_reconnect(self) -> None:
        self.reconnected_at = datetime.now(UTC)
        self.reconnects += 1
        log.warning("nats.reconnected", url=self.url)

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str,
        daemon: bool = False,
        reconnect: bool = False,
        timeout_s: float = 3.0,
        creds: str | os.PathLike[str] | None = None,
    ) -> NatsBus:
        """Connect; a daemon reconnects forever, a CLI fails fast with BusUnavailable.
        `reconnect`: a CLI that follows a job; it fails fast at connect as any CLI, but once
        connected it reconnects after a lost connection as a daemon does, until closed (the
        follower decides how long to wait: app.follow.RECONNECT_S).
        `creds`: a NATS `.creds` file (user JWT + nkey seed) to authenticate with."""
        if creds is not None and not os.path.isfile(creds):
            raise BusUnavailable(url, f"credentials file {os.fspath(creds)!r} not found")
        identity = _identity_from(url, creds) if creds is not None else None
        inbox = identity.inbox_prefix if identity is not None else None
        if identity is not None and identity.author.role == "agent" and inbox is None:
            log.warning(
                "nats.shared_inbox",
                creds=os.fspath(creds) if creds is not None else None,
                hint="these agent credentials predate private inboxes (they may read every `_INBOX.>` reply): issue them again",
            )

        last_said = 0.0

        async def _report(exc: Exception) -> None:
            # A daemon keeps retrying; say so now and then instead of waiting in silence.
            nonlocal last_said
            error = redact_url(str(exc)) or type(exc).__name__
            if "authorization violation" in error.lower() and bus is None:
                # Refused at connect: retrying with the same credentials cannot help.
                refused.append(error)
                if connecting is not None:
                    connecting.cancel()
                return
            if "permissions violation" in error.lower():  # the server refused one operation; the connection is fine
                if bus is not None and (m := _DENIED_SUBJECT.search(error)):
                    bus._refused(m.group(1))
                if daemon:  # a CLI says it in its error instead (NatsBus._not_allowed)
                    log.warning("nats.permission_denied", url=redact_url(url), error=error)
            elif daemon and time.monotonic() - last_said > 10:
                last_said = time.monotonic()
                log.warning("nats.unreachable", url=redact_url(url), error=error, retrying=True)

        bus: NatsBus | None = None
        refused: list[str] = []
        connecting: asyncio.Future[Client] | None = None

        async def _reconnected() -> None:
            if bus is not None:
                bus._on_reconnect()

        try:
            # nats-py retries forever with max_reconnect_attempts=0, so a CLI asks
            # for one retry and an overall deadline instead.
            async with asyncio.timeout(None if daemon else timeout_s * 3):
                connecting = asyncio.ensure_future(
                    nats.connect(
                        servers(url),
                        name=name,
                        connect_timeout=timeout_s,
                        allow_reconnect=daemon or reconnect,
                        max_reconnect_attempts=-1 if daemon else 1,
                        reconnect_time_wait=1 if daemon else 0.1,
                        error_cb=_report,
                        reconnected_cb=_reconnected,
                        user_credentials=os.fspath(creds) if creds is not None else None,
                        inbox_prefix=inbox or DEFAULT_INBOX_PREFIX,
                    )
                )
                nc = await connecting
        except asyncio.CancelledError:
            if not refused:
                raise
            raise BusUnavailable(url, _refused_reason(creds)) from None
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            if refused or "authorization violation" in str(exc).lower():
                raise BusUnavailable(url, _refused_reason(creds)) from None
            raise BusUnavailable(url, str(exc) or type(exc).__name__) from None
        if reconnect and not daemon:
            # nats-py reads these when the connection drops: retry from now on, as a daemon does.
            nc.options["max_reconnect_attempts"] = -1
            nc.options["reconnect_time_wait"] = CLI_RECONNECT_WAIT_S
        bus = cls(nc, url, identity)
        bus.publishes_wait_for_refusals = not daemon
        bus._creds = creds
        return bus

    async def credentials_refused(self) -> str | None:
        """See EventBus.credentials_refused: a connection of its own with the same credentials,
        once. (A revoked identity's connection is just dropped: nats-py then retries in silence.)"""
        if self._creds is None:
            return None
        try:
            probe = await NatsBus.connect(self.url, name="nexus-credentials-probe", creds=self._creds)
        except BusUnavailable as exc:
            return str(exc) if "refused the credentials" in str(exc) else None
        await probe.close()
        return None

    async def close(self, timeout_s: float = 5.0) -> None:
        """Drain (flush what was published), but never hang on it: a pull request
        in flight can keep a drain waiting for nats-py's full drain timeout."""
        try:
            await asyncio.wait_for(self.nc.drain(), timeout_s)
        except Exception:
            with contextlib.suppress(Exception):
                await self.nc.close()

    # ------------------------------------------------------------ setup

    async def ensure_streams(self, limits: StreamLimits = DEFAULT_LIMITS) -> None:
        """Create or update NEXUS_EVENTS, NEXUS_OUTPUT, NEXUS_DISPATCH and the buckets."""
        from bus import nats_setup

        await nats_setup.ensure_streams(self.js, limits)

    # ------------------------------------------------------------ publishing

    async def publish(self, out: Outgoing, *, expected_seq: int | None = None) -> Published:
        """Publish one event. With `expected_seq`, the server refuses it (StaleDecision)
        unless the entity's last event is still at that sequence. If a foreign message
        holds the event's msg id, the event is stored under a derived id, never dropped."""
        if not self._announced:
            await self._announce()
        if self._facts_under_node and isinstance(out.event, NodeFact):
            assert self._identity is not None and self._identity.author.node is not None
            out = msgspec.structs.replace(out, subject=subjects.fact_under_node(out.subject, self._identity.author.node))
        pub = await self._publish_once(out, expected_seq)
        if pub.duplicate and await self._id_taken(out, pub.seq):
            log.warning("bus.msg_id_taken", subject=out.subject, msg_id=out.msg_id, holder_seq=pub.seq)
            pub = await self._publish_once(reclaimed(out), expected_seq)
        return pub

    async def announce(self) -> None:
        if not self._announced:
            await self._announce()

    async def _announce(self) -> None:
        """Publish this identity's credentials JWT once, so readers of the log know who signs."""
        assert self._identity is not None
        await self._publish_once(self._identity.announcement(), None)
        self._announced = True

    async def _id_taken(self, out: Outgoing, seq: int) -> bool:
        # The last message on our own subject (an agent may read only its own subjects, by a
        # direct get naming them). If the holder is not there, it is on another subject: not ours.
        with map_read_errors(f"reading {out.subject}"):
            try:
                stored = await self.js.get_msg(subjects.EVENTS_STREAM, subject=out.subject, direct=True)
            except nats.js.errors.NotFoundError:
                return True
        if int(stored.seq or 0) != seq:
            if self._identity is not None and self._identity.author.role != "admin":
                return True  # it may not read by sequence (the server would let the request time out)
            try:
                with map_read_errors(f"reading event {seq}"):
                    stored = await self.js.get_msg(subjects.EVENTS_STREAM, seq)
            except BusError:
                return True  # not readable by this identity: not provably ours; storing it again is the safe side
        subject, data = stored.subject or out.subject, stored.data or b""
        if isinstance(out.event, JobAccepted) and not await self._claimed_by_our_node(_stored_record(subject, stored)):
            return True
        return id_taken_by_another(out, subject, data)

    async def _claimed_by_our_node(self, holder: Record) -> bool:
        """Whether the `accepted` holding our msg id may claim the attempt for our node: signed by
        an agent of our node (another process of it, or our own earlier publish). Any agent may
        publish on DESIGN §3's `nexus.evt.job.<job>.accepted`; another node's holding the id is
        not a claim on our attempt. Without an identity nothing can be told: the holder wins."""
        if self._identity is None or self._verifier is None:
            return True
        author = await self._author(holder)
        own = self._identity.author
        return author is not None and (author.key == own.key or (author.role == "agent" and author.node == own.node))

    async def _publish_once(self, out: Outgoing, expected_seq: int | None) -> Published:
        headers = {"Nats-Msg-Id": out.msg_id}
        event = out.event if out.event.ts is not None else msgspec.structs.replace(out.event, ts=datetime.now(UTC))
        if expected_seq is not None:
            headers[EXPECTED_LAST_SUBJECT_SEQ] = str(expected_seq)
            headers[EXPECTED_LAST_SUBJECT_SEQ_SUBJECT] = entity_filter(out.subject)
        data = codec.encode(event)
        try:  # whatever we store must decode again: the same limits as for any publisher
            codec.decode(out.subject, data)
        except DecodeError as exc:
            raise BusError(f"refusing to publish {out.subject}: {exc.reason}", subject=out.subject) from None
        try:
            with map_publish_errors(out.subject, expected_seq):
                if self.identity is not None:
                    headers.update(self.identity.sign(out.subject, data))
                publishing = self.js.publish(out.subject, data, headers=headers, timeout=PUBLISH_ACK_TIMEOUT_S)
                if self.publishes_wait_for_refusals:
                    ack = await self._unless_refused(publishing, out.subject.__eq__, f"publishing {out.subject}")
                else:
                    ack = await publishing
        except BusError:
            if out.subject in self.denied:  # the server said why the ack never came
                raise self._not_allowed(out.subject, subject=out.subject) from None
            raise
        return Published(seq=ack.seq, duplicate=bool(ack.duplicate))

    def _refused(self, subject: str) -> None:
        self.denied.add(subject)
        for waiter, matches in self._refusal_waiters:
            if not waiter.done() and matches(subject):
                waiter.set_result(subject)

    async def _unless_refused(self, operation: Awaitable[T], matches: Callable[[str], bool], what: str) -> T:
        """`operation`, or BusError "not allowed" as soon as the server refuses a subject it
        uses (a permissions violation comes back at once; the answer it stops, never)."""
        if any(matches(s) for s in self.denied):
            raise self._not_allowed(what)
        refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        entry = (refused, matches)
        self._refusal_waiters.append(entry)
        task: asyncio.Future[T] = asyncio.ensure_future(operation)
        try:
            await asyncio.wait([task, refused], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
            if task.done():
                return task.result()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            raise self._not_allowed(what)
        finally:
            self._refusal_waiters.remove(entry)
            refused.cancel()
            if not task.done():  # we were cancelled: so is the operation, and what it ends with is read
                task.cancel()
                task.add_done_callback(_retrieved)

    def _not_allowed(self, what: str, *, subject: str | None = None) -> NotAllowed:
        who = f"{self._identity.author.name!r} ({self._identity.author.role})" if self._identity else "these credentials"
        return NotAllowed(f"not allowed: the server refuses {what} from {who}; see docs/security.md for who may do what", subject=subject)

    async def publish_chain(self, outs: Sequence[Outgoing], *, expected_seq: int) -> list[Published]:
        """Publish decisions on one entity in order, each expecting the previous one."""
        done: list[Published] = []
        for out in outs:
            pub = await self.publish(out, expected_seq=expected_seq)
            done.append(pub)
            expected_seq = pub.seq
        return done

    async def publish_output(
        self, job_id: str, attempt: int, number: int, data: bytes, node_id: str, stream: OutputStream = "stdout", *, token: str
    ) -> None:
        headers = {"Nats-Msg-Id": msgids.output(job_id, attempt, number, token), CHUNK_HEADER: str(number), NODE_HEADER: node_id}
        if stream != "stdout":
            headers[STREAM_HEADER] = stream
        subject = subjects.output(job_id, attempt)
        if self._output_under_node:
            subject = f"{subject}.{subjects.check_id(node_id, 'node id')}"
        if self.identity is not None:
            headers.update(self.identity.sign_output(subject, data))
        with map_publish_errors(subject, None):
            await self.js.publish(subject, data, headers=headers, timeout=PUBLISH_ACK_TIMEOUT_S)

    # ------------------------------------------------------------ reading

    async def last_seq(self, stream: str = subjects.EVENTS_STREAM, subject: str | None = None) -> int:
        """Last sequence of the stream (0 if empty), or of one subject filter."""
        try:
            with map_read_errors(f"stream {stream}"):
                api_of_stream = _api_of(stream)
                if subject is None:
                    info = await self._unless_refused(self.js.stream_info(stream), api_of_stream, f"reading stream {stream}")
                    return int(info.state.last_seq)
                try:
                    msg = await self._unless_refused(self.js.get_last_msg(stream, subject), api_of_stream, f"reading stream {stream}")
                except nats.js.errors.NotFoundError:
                    return 0
                return int(msg.seq or 0)
        except BusError:
            # The server refused the JetStream API request itself (`$JS.API.<op>.<stream>`; nats-py
            # reports it in lower case): the request goes unanswered, which is no "no answer" at all.
            if any(_api_of(stream)(s) for s in self.denied):
                raise self._not_allowed(f"reading stream {stream}") from None
            raise

    async def streams_ready(self) -> bool:
        try:
            await self.last_seq()
            await self._kv()
        except NotSetUp:
            return False
        return True

    @contextlib.asynccontextmanager
    async def _ordered(self, subject: str, start_seq: int, stream: str, inbox: _Inbox) -> AsyncIterator[None]:
        async def on_msg(msg: Msg) -> None:
            inbox.put(msg)

        cfg = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(start_seq, 1))
        if subject == subjects.EVENTS_ALL:
            # The whole stream, not only what `nexus.evt.>` matches: a push consumer that anyone
            # who may read can make delivers into the stream's subjects, and the stream then stores
            # the message under its first subject (`nexus.out.J.1.N` in NEXUS_EVENTS). Filtered
            # out, such a message would be a gap in the record (and a reader waiting for the
            # last sequence would wait for good); read, it is recorded as rejected.
            subject = ">"
        # A short timeout: on a cluster that lost its JetStream meta leader the create goes
        # unanswered until a new one is elected, and records() should ask again soon after.
        js = self.nc.jetstream(timeout=ORDERED_CREATE_S)
        # Refused (these credentials may not read the stream): NotAllowed at once, not a timeout to retry.
        subscribing = js.subscribe(subject, stream=stream, ordered_consumer=True, config=cfg, cb=on_msg)
        sub = await self._unless_refused(subscribing, _api_of(stream), f"reading stream {stream}")
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    @property
    def max_payload(self) -> int:
        return int(self.nc.max_payload)

    async def request(self, subject: str, data: bytes, timeout_s: float) -> list[bytes] | None:
        """Request/reply (see EventBus.request). With credentials, every part of the answer
        must be signed by an admin identity (the orchestrator) for this request's inbox."""
        from bus import nats_consumers

        msgs = await self._unless_refused(nats_consumers.request(self.nc, subject, data, timeout_s), subject.__eq__, f"asking {subject}")
        if msgs is None:
            return None
        for msg in msgs if self._verifier is not None else ():
            headers = msg.headers or {}
            answer = Record(seq=0, subject=msg.subject, stream_ts=datetime.now(UTC), raw=bytes(msg.data),
                            signer=headers.get(SIGNER_HEADER), signature=headers.get(SIG_HEADER))  # fmt: skip
            author = await self._author(answer)
            if author is None or author.role != "admin":
                who = f"{author.name} ({author.role})" if author else "no verifiable identity"
                raise BusError(f"the answer on {subject} is not the orchestrator's (signed by {who}): refused", subject=subject)
        return [bytes(msg.data) for msg in msgs]

    async def _author(self, rec: Record) -> Author | None:
        """Who signed `rec`, learning the signer's announcement from the log when it is new here."""
        assert self._verifier is not None
        checked = self._verifier.check(rec)
        if checked.author is None and rec.signer is not None and rec.signer not in self._verifier.known:
            if (announced := await self.announcement(rec.signer)) is not None:
                self._verifier.learn(announced)
            checked = self._verifier.check(rec)
        return checked.author

    async def remove_idle_consumers(self, idle_s: float) -> list[str]:
        from bus import nats_consumers

        return await nats_consumers.remove_idle_consumers(self.js, idle_s)

    def responder(self, subject: str, queue: str) -> contextlib.AbstractAsyncContextManager[AsyncIterator[NatsRequest]]:
        from bus import nats_consumers

        return nats_consumers.responder(self.nc, subject, queue, self._identity)

    async def provision_dispatches(self, node_id: str, stream: str = subjects.DISPATCH_STREAM, *, since: datetime | None = None) -> None:
        from bus import nats_consumers

        await nats_consumers.provision_dispatches(self.js, node_id, stream, since=since)

    def dispatch_stream(self, node_id: str) -> str:
        """NEXUS_DISPATCH, unless these credentials predate it (they may pull only the node's
        consumer on NEXUS_EVENTS): then NEXUS_EVENTS, until they are issued again."""
        if self._identity is None or self._identity.may_publish(f"$JS.API.CONSUMER.MSG.NEXT.{subjects.DISPATCH_STREAM}.agent-{node_id}"):
            return subjects.DISPATCH_STREAM
        return subjects.EVENTS_STREAM

    def dispatches(self, node_id: str) -> contextlib.AbstractAsyncContextManager[AsyncIterator[NatsDelivery]]:
        from bus import nats_consumers

        # An agent identity may not create consumers: it waits for the orchestrator's.
        may_create = self._identity is None or self._identity.author.role == "admin"
        return nats_consumers.dispatch_consumer(self.js, node_id, self.dispatch_stream(node_id), may_create=may_create)

    async def output_end(self, job_id: str) -> int:
        """Sequence of the job's last stored output chunk (0: none, or cannot tell now)."""
        try:
            return await self.last_seq(subjects.OUTPUT_STREAM, subjects.output_all(job_id))
        except BusError:
            return 0

    @contextlib.asynccontextmanager
    async def job_feed(
        self, job_id: str, into: asyncio.Queue[object], *, events_from: int = 1, output_from: int = 1
    ) -> AsyncIterator[None]:
        """While open, put the job's event `Record`s and `OutputChunk`s into `into`, each
        kind in stream order; the caller owns the queue and may put its own sentinels in it.

        Events come through an ordered push consumer (a job has few). Output is pulled a few
        chunks at a time as `into` makes room (a bounded queue is the reader's pace): a push
        consumer's server sends on ahead of a slow reader, and nats-py held a job's whole output
        (hundreds of MB for one slow SSE client) or, past its pending limit, dropped chunks."""

        async def put(msg: Msg) -> None:
            await into.put(to_record(msg))

        cfg = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(events_from, 1))
        with map_read_errors(f"following job {job_id}"):
            events = await self.js.subscribe(
                subjects.job_all(job_id), stream=subjects.EVENTS_STREAM, ordered_consumer=True, config=cfg, cb=put
            )
        output = asyncio.create_task(self._pull_output(job_id, into, output_from), name=f"output-{job_id}")
        try:
            yield
        finally:
            output.cancel()
            await asyncio.wait({output})  # its end, not its CancelledError: a cancellation of our own still comes through
            with contextlib.suppress(Exception):
                await events.unsubscribe()

    async def _pull_output(self, job_id: str, into: asyncio.Queue[object], start: int) -> None:
        """A job's output chunks from `start` into `into`, in stream order: from a backlog about
        OUTPUT_FEED_BYTES at a time (by the largest chunk so far, and what the last one said is
        stored after it), once caught up one long poll at a time (a new chunk is handed on as it
        is stored). A consumer that fails is made again from the next chunk (no gap, no repeat);
        a lost connection is the follower's to see (it makes the feed again)."""
        subject = subjects.output_all(job_id)
        while True:
            raise_if_cancelling()
            cfg = api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(start, 1), ack_policy=api.AckPolicy.NONE,
                inactive_threshold=60.0, mem_storage=True,
            )  # fmt: skip
            try:
                sub = await self.js.pull_subscribe(subject, stream=subjects.OUTPUT_STREAM, config=cfg)
            except Exception as exc:  # nats-py raises many kinds; the next turn tries again
                log.debug("follow.output_consumer_failed", job_id=job_id, error=str(exc))
                await asyncio.sleep(OUTPUT_RETRY_S)
                continue
            batch, largest = 1, 1
            try:
                while True:
                    raise_if_cancelling()  # the fetch's wait_for may have swallowed the feed's end (Python 3.11)
                    try:
                        msgs = await sub.fetch(batch, timeout=OUTPUT_BACKLOG_WAIT_S if batch > 1 else OUTPUT_POLL_S)
                    except (nats.errors.TimeoutError, TimeoutError):
                        batch = 1  # caught up: wait for the next chunk alone, handed on as it comes
                        continue
                    for msg in msgs:
                        # Again: a cancellation the fetch swallowed would leave us waiting on a
                        # full queue nobody reads any more (`nexus submit` hung 5 s, 1 run in 60).
                        raise_if_cancelling()
                        largest = max(largest, len(msg.data))
                        await into.put(to_output_chunk(msg))
                        start = int(msg.metadata.sequence.stream) + 1
                    # As many as are stored after it, up to ~OUTPUT_FEED_BYTES (a pull for no more
                    # than are there comes back at once); none: one long poll for the next.
                    pending = int(msgs[-1].metadata.num_pending or 0) if msgs else 0
                    batch = max(1, min(pending, _output_batch(largest)))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # as above: made again from the next chunk
                log.debug("follow.output_fetch_failed", job_id=job_id, error=str(exc))
                await asyncio.sleep(OUTPUT_RETRY_S)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(self._drop_consumer(sub, subjects.OUTPUT_STREAM)), OUTPUT_RETRY_S)

    async def _behind(self, next_seq: int, subject: str) -> bool:
        """Does the log hold something at or after `next_seq` that we have not been sent?"""
        try:
            # Briefly: while a cluster elects a new stream leader nobody answers, and this
            # loop must come back to its queue (the next turn asks again).
            async with asyncio.timeout(BEHIND_CHECK_S):
                last = await self.last_seq() if subject == subjects.EVENTS_ALL else await self.last_seq(subject=subject)
        except (BusError, TimeoutError):
            return False  # cannot tell now (server away); ask again at the next idle turn
        return last >= next_seq

    async def records(
        self, start_seq: int = 1, subject: str = subjects.EVENTS_ALL, *, batch_max: int = 1000, idle_s: float = 5.0
    ) -> AsyncGenerator[list[Record], None]:
        """Follow the event log from `start_seq`, forever, in batches of whatever is ready.

        Survives a server restart: after a reconnect, or when nothing arrives for
        `idle_s` while the log has more, the subscription is made again from the next
        sequence."""
        next_seq = start_seq
        while True:
            seen_reconnects = self.reconnects
            inbox = _Inbox()
            async with contextlib.AsyncExitStack() as scope:
                try:
                    await scope.enter_async_context(self._ordered(subject, next_seq, subjects.EVENTS_STREAM, inbox))
                except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                    if self.nc.is_closed:
                        raise BusUnavailable(self.url, str(exc) or type(exc).__name__) from None
                    log.warning("log.subscribe_failed", error=str(exc) or type(exc).__name__, next_seq=next_seq)
                    await asyncio.sleep(1.0)
                    continue
                quiet_since = time.monotonic()
                while True:
                    raise_if_cancelling()
                    try:
                        msgs = await inbox.take(batch_max, min(idle_s, 1.0))
                    except TimeoutError:
                        if self.reconnects != seen_reconnects:
                            log.info("log.resubscribing", next_seq=next_seq, why="reconnected")
                            break
                        if time.monotonic() - quiet_since >= idle_s:
                            quiet_since = time.monotonic()
                            if await self._behind(next_seq, subject):
                                log.warning("log.resubscribing", next_seq=next_seq, why="silent while the log grew")
                                break
                        continue
                    quiet_since = time.monotonic()
                    batch = [r for r in map(to_record, msgs) if r.seq >= next_seq]
                    if batch:
                        next_seq = batch[-1].seq + 1
                        yield batch

    async def read_records(
        self, subject: str = subjects.EVENTS_ALL, start_seq: int = 1, until_seq: int | None = None
    ) -> AsyncGenerator[list[Record], None]:
        """Read the log from `start_seq` up to `until_seq` (default: the last sequence now), then stop."""
        end = until_seq if until_seq is not None else await self.last_seq()
        if end < start_seq:
            return
        if subject != subjects.EVENTS_ALL:
            end = min(end, await self.last_seq(subject=subject))
            if end < start_seq:  # nothing of the subject from start_seq on (or at all): do not wait for it
                return
        async with contextlib.aclosing(self.records(start_seq, subject)) as batches:
            async for batch in batches:
                keep = [r for r in batch if r.seq <= end]
                if keep:
                    yield keep
                if batch[-1].seq >= end:
                    return

    async def node_history(self, job_id: str, node_id: str, start_seq: int = 1) -> list[Record]:
        """One short-lived push consumer per filter, each with its filter in its name-and-filter
        create subject: what an agent identity's permissions allow (bus.nats_consumers)."""
        from bus import nats_consumers

        reads = [
            nats_consumers.read_filtered(self.nc, self.js, subjects.EVENTS_STREAM, filter_subject, start_seq)
            for filter_subject in subjects.node_view_filters(job_id, node_id)
        ]
        found = [to_record(m) for msgs in await asyncio.gather(*reads) for m in msgs]
        return sorted(found, key=lambda r: r.seq)

    async def announcement(self, key: str) -> Record | None:
        subject = subjects.trust(key, "announced")
        with map_read_errors(f"announcement of {key}"):
            try:  # a direct get by subject: its subject is in the request's, so permissions can name it
                msg = await self.js.get_msg(subjects.EVENTS_STREAM, subject=subject, direct=True)
            except nats.js.errors.NotFoundError:
                return None
        rec = _stored_record(subject, msg)
        return rec if rec.event is not None else None

    async def output_chunks(
        self, job_id: str, *, follow_until: Callable[[], bool] | None = None, batch: int | None = None
    ) -> AsyncGenerator[OutputChunk, None]:
        """Stored output of a job, all attempts, in order. Without `follow_until` it stops at the end.

        Read with a pull consumer, `batch` chunks at a time (default: about OUTPUT_FEED_BYTES by
        the largest chunk so far, at most 1 MiB each), so memory stays bounded however large the
        output is."""
        subject = subjects.output_all(job_id)
        try:
            end = await self.last_seq(subjects.OUTPUT_STREAM, subject)
        except NotSetUp:
            end = 0
        if end == 0 and follow_until is None:
            return
        cfg = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.ALL, ack_policy=api.AckPolicy.NONE, inactive_threshold=60.0, mem_storage=True
        )
        sub = await self.js.pull_subscribe(subject, stream=subjects.OUTPUT_STREAM, config=cfg)
        largest = 1
        try:
            while True:
                raise_if_cancelling()
                try:
                    msgs = await sub.fetch(batch or _output_batch(largest), timeout=0.2 if follow_until is not None else 5.0)
                except (nats.errors.TimeoutError, TimeoutError):
                    if follow_until is not None and follow_until():
                        return
                    continue
                for msg in msgs:
                    meta = msg.metadata
                    largest = max(largest, len(msg.data))
                    yield to_output_chunk(msg)
                    if follow_until is None and meta.sequence.stream >= end:
                        return
        finally:
            await self._drop_consumer(sub, subjects.OUTPUT_STREAM)

    async def _drop_consumer(self, sub: JetStreamContext.PullSubscription, stream: str) -> None:
        """Unsubscribe and delete an ephemeral consumer now, rather than leave it to expire."""
        with contextlib.suppress(Exception):
            name = (await sub.consumer_info()).name
            await self.js.delete_consumer(stream, name)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    # ------------------------------------------------------------ nodes

    async def nodes_kv(self) -> KeyValue:
        """The raw bucket, for tests that play a foreign client (nats-py errors pass through)."""
        return await self.js.key_value(subjects.NODES_BUCKET)

    async def _kv(self) -> KeyValue:
        # Looked up once: nats-py's lookup is a JetStream STREAM.INFO request, and made on every
        # heartbeat it cost the server ~4x the put itself (bench/fleet.py at 5,000 nodes). The
        # handle is only names (the bucket's subjects), so it stays right across reconnects.
        if self._nodes_kv is None:
            with map_read_errors(f"bucket {subjects.NODES_BUCKET}"):
                looking_up = self.js.key_value(subjects.NODES_BUCKET)
                what = f"reading bucket {subjects.NODES_BUCKET}"
                self._nodes_kv = await self._unless_refused(looking_up, bucket_api(subjects.NODES_BUCKET), what)
        return self._nodes_kv

    async def put_heartbeat(self, hb: NodeHeartbeat, *, revision: int | None = None) -> int:
        kv = await self._kv()
        with map_read_errors(f"bucket {subjects.NODES_BUCKET}"):
            if revision is None:
                return await kv.put(hb.node, codec.encode(hb))
            try:
                return await kv.update(hb.node, codec.encode(hb), last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                raise HeartbeatMoved(hb.node, revision) from None

    async def node_heartbeat(self, node_id: str) -> tuple[NodeHeartbeat | None, int]:
        """See bus.nats_nodes.read_one."""
        from bus import nats_nodes

        return await nats_nodes.read_one(self, node_id)

    async def watch_heartbeats(
        self,
        on_beat: Callable[[NodeHeartbeat], Awaitable[None]],
        on_snapshot: Callable[[], None] | None = None,
        *,
        idle_s: float = 10.0,
    ) -> None:
        """Call `on_beat` for every heartbeat, forever (see bus.nats_nodes.watch)."""
        from bus import nats_nodes

        await nats_nodes.watch(self, on_beat, on_snapshot, idle_s=idle_s)

    # ------------------------------------------------------------ public keys

    async def put_orchestrator_key(self, key: OrchestratorKey) -> None:
        from bus import nats_keys

        await nats_keys.put_orchestrator_key(self.js, key)

    async def orchestrator_key(self) -> OrchestratorKey | None:
        """The orchestrator's sealing key record, None when there is none (see bus.nats_keys)."""
        from bus import nats_keys

        reading = nats_keys.orchestrator_key(self.js)
        return await self._unless_refused(reading, bucket_api(KEYS_BUCKET), f"reading bucket {KEYS_BUCKET}")

    def heartbeats_behind_s(self) -> float:
        behind_from = self.beats_behind_from
        return 0.0 if behind_from is None else max(0.0, (datetime.now(UTC) - behind_from).total_seconds())

    async def heartbeats_writable(self, timeout_s: float = 1.0) -> bool:
        """Asks the bucket's stream leader (stream info is answered by the leader alone); from its
        answer, also notes whether the heartbeat watch has read all the bucket holds."""
        try:
            async with asyncio.timeout(timeout_s):
                info = await self.js.stream_info(f"KV_{subjects.NODES_BUCKET}")
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError):
            return False
        from bus import nats_nodes

        nats_nodes.note_stored(self, int(info.state.last_seq or 0))
        return info.cluster is None or bool(info.cluster.leader)

    async def heartbeats(self) -> dict[str, NodeHeartbeat]:
        """A snapshot of the bucket, `ts` as the agent sent it (see bus.nats_nodes.snapshot)."""
        from bus import nats_nodes

        return await nats_nodes.snapshot(self)


class _Inbox:
    """What an ordered consumer delivers, taken in batches: one wake-up per batch, not one per
    message (a replay reads tens of thousands of messages a second)."""

    def __init__(self) -> None:
        self._msgs: list[Msg] = []
        self._ready = asyncio.Event()

    def put(self, msg: Msg) -> None:
        self._msgs.append(msg)
        self._ready.set()

    async def take(self, most: int, timeout_s: float) -> list[Msg]:
        """Up to `most` messages, in order, waiting up to `timeout_s` for the first (TimeoutError)."""
        if not self._msgs:
            self._ready.clear()
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        if len(self._msgs) <= most:
            taken, self._msgs = self._msgs, []
        else:
            taken, self._msgs = self._msgs[:most], self._msgs[most:]
        return taken
