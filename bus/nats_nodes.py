"""The NATS adapter's side of the `nexus-nodes` bucket: watching heartbeats and listing them.

Part of the NATS adapter (with bus.nats_bus): nats-py errors stop here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from bus.errors import BusError, BusUnavailable, NotAllowed
from bus.logs import Logger
from bus.nats_translate import bucket_api, map_read_errors
from bus.port import raise_if_cancelling
from schemas import codec, subjects
from schemas.errors import DecodeError
from schemas.events import NodeHeartbeat

if TYPE_CHECKING:
    from bus.nats_bus import NatsBus

log = Logger("nexus.bus")


async def watch(
    bus: NatsBus,
    on_beat: Callable[[NodeHeartbeat], Awaitable[None]],
    on_snapshot: Callable[[], None] | None = None,
    *,
    idle_s: float = 10.0,
) -> None:
    """Call `on_beat` for every heartbeat, forever; `ts` is the server's time of the put.
    `on_snapshot` is called once the heartbeats stored so far have all been delivered.

    Survives a server restart: after a reconnect, or when no heartbeat comes for
    `idle_s`, the watch is made again (it re-delivers the latest value of every node)."""
    while True:
        raise_if_cancelling()
        try:
            kv = await bus._kv()
            watcher = await kv.watchall(inactive_threshold=max(idle_s * 3, 30.0))
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError, BusError) as exc:
            if bus.nc.is_closed:
                raise BusUnavailable(bus.url, str(exc) or type(exc).__name__) from None
            log.warning("heartbeats.watch_failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(1.0)
            continue
        try:
            on_snapshot = await _deliver_beats(bus, watcher, on_beat, on_snapshot, idle_s)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]


async def _deliver_beats(
    bus: NatsBus,
    watcher: KeyValue.KeyWatcher,
    on_beat: Callable[[NodeHeartbeat], Awaitable[None]],
    on_snapshot: Callable[[], None] | None,
    idle_s: float,
) -> Callable[[], None] | None:
    """Deliver until the watch goes quiet for `idle_s` or the connection was made again;
    returns `on_snapshot` if not called yet."""
    seen_reconnects = bus.reconnects
    quiet_since = time.monotonic()
    while True:
        raise_if_cancelling()
        try:
            entry = await watcher.updates(timeout=min(idle_s, 1.0))  # type: ignore[no-untyped-call]
        except (nats.errors.TimeoutError, TimeoutError):
            if bus.reconnects != seen_reconnects or time.monotonic() - quiet_since >= idle_s:
                return on_snapshot
            continue
        quiet_since = time.monotonic()
        if entry is None:
            if on_snapshot is not None:
                on_snapshot()
                on_snapshot = None
            continue
        stored_at = entry.created if isinstance(entry.created, datetime) else None
        bus.beats_read = (int(entry.revision or 0), stored_at or datetime.now(UTC))
        if entry.value is None or entry.operation is not None:
            continue
        try:
            hb = codec.decode_heartbeat(entry.value)
        except DecodeError:
            continue  # not ours to crash on; the bucket is not the audit trail
        if hb.node != entry.key:
            # The server lets node N's agent write only key N: a value naming another node is not its own.
            log.warning("heartbeat.refused", key=entry.key, names=hb.node, reason="a heartbeat under another node's key")
            continue
        created = stored_at or hb.ts
        # More stored after this one (entry.delta: the watch's pending count): we are reading
        # `created` while the server is further on (NatsBus.heartbeats_behind_s).
        bus.beats_behind_from = created if entry.delta else None
        await on_beat(msgspec.structs.replace(hb, ts=created))
        if on_snapshot is not None and entry.delta == 0:
            on_snapshot()
            on_snapshot = None


def note_stored(bus: NatsBus, last_seq: int) -> None:
    """The bucket holds entries up to `last_seq` (the orchestrator's probe asks): if the watch has
    not read them, it is behind from the last entry it read (heartbeats_behind_s), whether or not
    it knows. A watch whose consumer went with a stream leader reads nothing until it is made
    again (up to its idle time); meanwhile every node looked silent to the orchestrator, and was
    declared lost."""
    read = bus.beats_read
    if read is None:
        return
    if last_seq > read[0]:
        if bus.beats_behind_from is None:
            bus.beats_behind_from = read[1]
    else:
        bus.beats_behind_from = None


async def snapshot(bus: NatsBus) -> dict[str, NodeHeartbeat]:
    """A snapshot of the bucket (`ts` as the agent sent it), without creating a consumer:
    the keys come from the stream's subject list, each value from a direct get. (`kv.keys()`
    leaves an ordered consumer on the server for 5 minutes per call: a dashboard polling
    the API every second used up the server's consumers.)"""
    kv = await bus._kv()
    prefix = f"$KV.{subjects.NODES_BUCKET}."
    # Refused (an agent reads its own key alone): NotAllowed at once, not an unanswered request.
    refused, what = bucket_api(subjects.NODES_BUCKET), f"reading bucket {subjects.NODES_BUCKET}"
    with map_read_errors(f"bucket {subjects.NODES_BUCKET}"):
        listing = bus.js.stream_info(f"KV_{subjects.NODES_BUCKET}", subjects_filter=f"{prefix}>")
        info = await bus._unless_refused(listing, refused, what)
    keys = [subject.removeprefix(prefix) for subject in info.state.subjects or {}]

    async def one(key: str) -> NodeHeartbeat | None:
        try:
            with map_read_errors(f"bucket {subjects.NODES_BUCKET}"):
                entry = await bus._unless_refused(kv.get(key), refused, what)
        except nats.js.errors.KeyNotFoundError:  # deleted, or expired since the listing
            return None
        if entry.value is None:
            return None
        try:
            hb = codec.decode_heartbeat(entry.value)
        except DecodeError:
            return None  # the bucket is not the audit trail; a bad value reads as no heartbeat
        return hb if hb.node == key else None  # under another node's key: not that node's

    beats = await asyncio.gather(*(one(key) for key in keys))
    return {key: hb for key, hb in zip(keys, beats, strict=True) if hb is not None}


async def read_one(bus: NatsBus, node_id: str) -> tuple[NodeHeartbeat | None, int]:
    """Node `node_id`'s stored heartbeat (`ts` as its agent sent it; None: no key, or a value that
    is not that node's heartbeat) and the key's revision (0: never written, or expired), by a
    direct get naming the one key (an agent may read its own). NotAllowed for credentials that
    may not, or a bucket without direct gets (made by an orchestrator from before them)."""
    stream, key = f"KV_{subjects.NODES_BUCKET}", f"$KV.{subjects.NODES_BUCKET}.{node_id}"
    try:
        with map_read_errors(f"bucket {subjects.NODES_BUCKET}"):
            try:
                msg = await bus.js.get_msg(stream, subject=key, direct=True)
            except nats.js.errors.NotFoundError:
                return None, 0
            except nats.errors.NoRespondersError:
                raise bus._not_allowed(f"reading node {node_id}'s heartbeat (the bucket has no direct gets yet)") from None
    except BusError as exc:
        if isinstance(exc, NotAllowed) or not any(denied.lower() == f"$js.api.direct.get.{stream}.{key}".lower() for denied in bus.denied):
            raise
        raise bus._not_allowed(f"reading node {node_id}'s heartbeat") from None
    revision = int(msg.seq or 0)
    try:
        hb = codec.decode_heartbeat(msg.data or b"")
    except DecodeError:
        return None, revision  # a delete marker, or garbage
    return (hb if hb.node == node_id else None), revision
