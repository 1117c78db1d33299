"""The NATS adapter's long-lived consumers: an agent's durable dispatch consumer and the query responder.

Part of the NATS adapter (with bus.nats_bus): nats-py errors stop here.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from bus.errors import BusError, RequestTimedOut
from bus.logs import Logger
from bus.nats_translate import map_read_errors, to_delivered_record, to_record
from bus.port import raise_if_cancelling
from schemas import subjects
from schemas.records import Record
from schemas.secrets import KEYS_BUCKET

if TYPE_CHECKING:
    from bus.identity import Identity

log = Logger("nexus.bus")

# A dispatch fetched by an agent that died before acking it comes back after this.
DISPATCH_ACK_WAIT_S = 10.0
IDLE_FETCH_S = 5.0  # an idle agent's pull waits this long for a dispatch, then asks again
BUSY_FETCH_BATCH, BUSY_FETCH_S = 16, 0.05  # right after a dispatch: up to 16 more, waiting at most 50 ms
EVENTS_FROM = "nexus_events_from"  # a consumer's metadata: the first log sequence it is for
PARTS_HEADER = "Nexus-Parts"  # how many messages an answer comes in


@dataclass(frozen=True)
class NatsDelivery:
    record: Record
    _msg: Msg

    async def ack(self) -> None:
        with map_read_errors(f"ack {self.record.subject}"):
            await self._msg.ack()

    async def nak(self, delay_s: float | None = None) -> None:
        with map_read_errors(f"nak {self.record.subject}"):
            await self._msg.nak(delay=delay_s)

    async def term(self) -> None:
        with map_read_errors(f"term {self.record.subject}"):
            await self._msg.term()


@dataclass(frozen=True)
class NatsRequest:
    data: bytes
    _msg: Msg
    _nc: Client
    _identity: Identity | None = None

    async def respond(self, *parts: bytes) -> None:
        """Answer, each part signed by this process's identity (clients accept only the
        orchestrator's answers) and saying how many parts there are (`Nexus-Parts`)."""
        try:
            if not self._msg.reply:
                raise ValueError("the request has no reply subject")
            if not subjects.is_reply_inbox(self._msg.reply):
                # Answers are signed: sent anywhere else (`nexus.evt.job.X.validated`, a KV key),
                # they would be stored as this process's own events.
                raise ValueError(f"the reply subject {self._msg.reply!r} is not an inbox (_INBOX.*)")
            for data in parts:
                headers = {PARTS_HEADER: str(len(parts))}
                if self._identity is not None:
                    headers.update(self._identity.sign(self._msg.reply, data))
                await self._nc.publish(self._msg.reply, data, headers=headers)
        except Exception as exc:  # no reply subject, or the connection went away: nobody to tell
            log.warning("request.unanswered", subject=self._msg.subject, error=str(exc) or type(exc).__name__)


def _dispatch_config(node_id: str, stream: str, since: datetime | None) -> api.ConsumerConfig:
    # DeliverPolicy.NEW: a node id reused on a new machine must never pick up old dispatches.
    # `since` (the heartbeat that said where the agent reads): nothing sent to it after is missed
    # while its consumer is being made.
    cfg = api.ConsumerConfig(
        durable_name=f"agent-{node_id}",
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.NEW if since is None else api.DeliverPolicy.BY_START_TIME,
        opt_start_time=since,
        ack_wait=DISPATCH_ACK_WAIT_S,
        max_ack_pending=1000,
    )
    if stream == subjects.DISPATCH_STREAM:
        cfg.filter_subject = subjects.delivery(node_id)  # one literal subject: found without a scan
    else:
        cfg.filter_subjects = subjects.agent_filters(node_id)
    return cfg


def check_dispatch_stream(stream: str) -> str:
    if stream not in (subjects.DISPATCH_STREAM, subjects.EVENTS_STREAM):
        raise BusError(f"no dispatch consumers on stream {stream!r}")
    return stream


async def provision_dispatches(
    js: JetStreamContext, node_id: str, stream: str, *, since: datetime | None = None, timeout_s: float | None = None
) -> None:
    """Create the node's durable dispatch consumer on `stream` (NEXUS_DISPATCH, or NEXUS_EVENTS
    for an agent whose credentials predate it) unless it exists (the orchestrator does, on a
    node's first heartbeat: an agent's own credentials may not create consumers)."""
    durable = f"agent-{node_id}"
    with map_read_errors(f"consumer {durable}"):
        try:
            await js.consumer_info(check_dispatch_stream(stream), durable, timeout=timeout_s)
        except nats.js.errors.NotFoundError:
            cfg = _dispatch_config(node_id, stream, since)
            if stream == subjects.DISPATCH_STREAM and since is None:
                # "Only what is published after its creation", to the event: a copy can reach
                # NEXUS_DISPATCH an instant after its event reached the log, so the log's position
                # now goes with the consumer, and the agent skips copies of events before it.
                last = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
                cfg.metadata = {EVENTS_FROM: str(int(last) + 1)}
            await js.add_consumer(stream, cfg, timeout=timeout_s)


async def bind_dispatches(
    js: JetStreamContext, node_id: str, stream: str, *, may_create: bool = True
) -> tuple[JetStreamContext.PullSubscription, int]:
    """Bind the node's durable consumer on `stream` once it exists: created here when
    this identity may, else by the orchestrator on the node's first heartbeat. With the
    first log sequence it is for (see provision_dispatches; 0: all it holds)."""
    durable = f"agent-{node_id}"
    waited = 0.0
    # Backs off from 0.2 s to 3 s, with jitter: a thousand agents starting together, each
    # asking every 0.2 s, flooded the server's JetStream API (5,000 requests/s) while the
    # orchestrator was creating their consumers one by one (bench/fleet.py).
    pause = 0.2
    if may_create:  # no auth, or an admin identity; an agent's would be refused by the server
        with contextlib.suppress(BusError):
            await provision_dispatches(js, node_id, stream, timeout_s=2.0)
    while True:
        raise_if_cancelling()
        try:
            with map_read_errors(f"consumer {durable}"):
                info = await js.consumer_info(stream, durable, timeout=2.0)
            break
        except BusError as exc:  # NotSetUp until the orchestrator made it; a retryable error while unreachable
            if waited == 0.0 or waited >= 30.0:
                hint = "the orchestrator creates it on this node's heartbeat"
                log.info("dispatches.waiting", consumer=durable, stream=stream, reason=str(exc), hint=hint)
                waited = 0.0
            await asyncio.sleep(pause)
            waited += pause
            pause = min(pause * 1.5, 3.0) * random.uniform(0.8, 1.2)
    floor = (info.config.metadata or {}).get(EVENTS_FROM, "0")
    with map_read_errors(f"consumer {durable}"):
        return await js.pull_subscribe_bind(durable, stream=stream), int(floor) if floor.isdigit() else 0


async def deliveries(sub: JetStreamContext.PullSubscription, stream: str, floor: int = 0) -> AsyncGenerator[NatsDelivery, None]:
    """Fetch forever; a quiet or unreachable server is waited out, never raised. Copies of
    events before `floor` (published before the consumer was made) are acked and skipped."""
    record_of = to_delivered_record if stream == subjects.DISPATCH_STREAM else to_record
    # Idle, one at a time with a long wait: nats-py's fetch of a batch may hold a message it
    # already has until the batch fills or the request expires (a dispatch waited up to 5 s for
    # its agent in bench/fleet.py's steady load; a bare nats-py loop shows it too). Right after
    # a dispatch, a batch with a short wait: a burst's dispatches come in a few round trips.
    batch, wait_s = 1, IDLE_FETCH_S
    while True:
        raise_if_cancelling()
        try:
            msgs = await sub.fetch(batch=batch, timeout=wait_s)
        except (nats.errors.TimeoutError, TimeoutError):
            batch, wait_s = 1, IDLE_FETCH_S
            continue  # nats-py raises either kind when no dispatch came in time
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            log.warning("dispatches.fetch_failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(1.0)
            continue
        batch, wait_s = BUSY_FETCH_BATCH, BUSY_FETCH_S
        for msg in msgs:
            delivery = NatsDelivery(record_of(msg), msg)
            if 0 < delivery.record.seq < floor:
                with contextlib.suppress(BusError):  # not acked: it comes back, and is skipped again
                    await delivery.ack()
                continue
            yield delivery


@contextlib.asynccontextmanager
async def dispatch_consumer(
    js: JetStreamContext, node_id: str, stream: str, *, may_create: bool = True
) -> AsyncIterator[AsyncIterator[NatsDelivery]]:
    sub, floor = await bind_dispatches(js, node_id, stream, may_create=may_create)
    try:
        async with contextlib.aclosing(deliveries(sub, stream, floor)) as it:
            yield it
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


# The streams readers may make consumers on (docs/security.md), where idle ones are removed.
READABLE_STREAMS = (subjects.EVENTS_STREAM, subjects.OUTPUT_STREAM, f"KV_{subjects.NODES_BUCKET}", f"KV_{KEYS_BUCKET}")


async def remove_idle_consumers(js: JetStreamContext, idle_s: float) -> list[str]:
    """Remove each consumer of READABLE_STREAMS that nobody has used for `idle_s` (none bound,
    no pull waiting, nothing delivered or acked since), whatever inactive threshold it was
    made with; the agents' dispatch consumers excepted. Returns `stream/name` of each removed."""
    removed: list[str] = []
    now = datetime.now(UTC)
    for stream in READABLE_STREAMS:
        with map_read_errors(f"consumers of {stream}"):
            try:
                infos = await _consumers(js, stream)
            except nats.js.errors.NotFoundError:
                continue  # a bucket not made yet
            for info in infos:
                if _is_agents(info) or info.push_bound or (info.num_waiting or 0) > 0:
                    continue
                used = max(t for t in (info.created, *(s.last_active for s in (info.delivered, info.ack_floor) if s)) if t)
                if (now - used).total_seconds() > idle_s:
                    with contextlib.suppress(nats.js.errors.NotFoundError):  # gone meanwhile
                        await js.delete_consumer(stream, info.name)
                    removed.append(f"{stream}/{info.name}")
    return removed


async def _consumers(js: JetStreamContext, stream: str) -> list[api.ConsumerInfo]:
    infos: list[api.ConsumerInfo] = []
    while page := await js.consumers_info(stream, offset=len(infos)):
        infos += page
    return infos


def _is_agents(info: api.ConsumerInfo) -> bool:
    """An agent's durable dispatch consumer (on the log for agents from before NEXUS_DISPATCH)."""
    return bool(info.config.durable_name and info.config.durable_name == info.name and info.name.startswith("agent-"))


async def request(nc: Client, subject: str, data: bytes, timeout_s: float) -> list[Msg] | None:
    """The answer's messages, on an inbox of this request's own (an answer may come in several:
    see NatsRequest.respond); None when nobody listens. The whole answer must come within
    `timeout_s` of the request."""
    inbox = nc.new_inbox()
    got: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        got.put_nowait(msg)

    try:
        sub = await nc.subscribe(inbox, cb=on_msg)
        try:
            await nc.publish(subject, data, reply=inbox)
            answer: list[Msg] = []
            async with asyncio.timeout(timeout_s):
                while True:
                    msg = await got.get()
                    headers = msg.headers or {}
                    if headers.get("Status") == "503":  # the server's "no responders"
                        return None
                    answer.append(msg)
                    wanted = headers.get(PARTS_HEADER, "1")
                    if len(answer) >= (int(wanted) if wanted.isdigit() else 1):
                        return answer
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
    except TimeoutError:
        raise RequestTimedOut(subject, timeout_s) from None
    except nats.errors.Error as exc:
        raise BusError(f"request on {subject} failed: {type(exc).__name__}", subject=subject, retryable=True) from None


@contextlib.asynccontextmanager
async def responder(nc: Client, subject: str, queue: str, identity: Identity | None = None) -> AsyncIterator[AsyncIterator[NatsRequest]]:
    inbox: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        inbox.put_nowait(msg)

    with map_read_errors(f"subscribe {subject}"):
        sub = await nc.subscribe(subject, queue=queue, cb=on_msg)

    async def calls() -> AsyncGenerator[NatsRequest, None]:
        while True:
            msg = await inbox.get()
            yield NatsRequest(bytes(msg.data), msg, nc, identity)

    try:
        async with contextlib.aclosing(calls()) as it:
            yield it
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def read_filtered(nc: Client, js: JetStreamContext, stream: str, filter_subject: str, start_seq: int) -> list[Msg]:
    """The stored messages of one filter from `start_seq`, through a named push consumer
    that lives for this read only: its create subject carries the filter
    (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`), so an identity may be allowed
    exactly these filters and no other (an agent: its jobs' events, not other nodes')."""
    inbox = nc.new_inbox()
    got: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        got.put_nowait(msg)

    with map_read_errors(f"read {filter_subject}"):
        sub = await nc.subscribe(inbox, cb=on_msg)
        try:
            cfg = api.ConsumerConfig(
                name=f"read-{nc._nuid.next().decode()}",
                filter_subject=filter_subject,
                deliver_subject=inbox,
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=max(start_seq, 1),
                ack_policy=api.AckPolicy.NONE,
                max_deliver=1,
                inactive_threshold=5.0,  # the server removes it: this identity may not delete consumers
                mem_storage=True,
                num_replicas=1,
            )
            info = await js.add_consumer(stream, cfg)
            # What it holds: delivered already (the push may have begun) plus still pending.
            total = int(info.num_pending or 0) + int((info.delivered.consumer_seq if info.delivered else 0) or 0)
            msgs = []
            async with asyncio.timeout(10):
                for _ in range(total):
                    msgs.append(await got.get())
            return msgs
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
