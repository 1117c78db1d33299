"""The NATS adapter's setup: the two streams and the heartbeat bucket, created or updated (DESIGN.md §2).

Part of the NATS adapter (with bus.nats_bus): nats-py errors stop here.
"""

from __future__ import annotations

import asyncio
import time

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api

from bus import nats_keys
from bus.errors import BusError
from bus.logs import Logger
from bus.port import StreamLimits
from schemas import subjects

STREAM_CONFIG_DIFFERS = 10058  # JSStreamNameExistErr: "stream name already in use with a different configuration"

log = Logger("nexus.bus")

# nats-server 2.15 limits a stream to 1,000 consumers unless the stream sets its own limit
# (and reads 0 or -1 as "use that default"). NEXUS_EVENTS holds one durable consumer per
# node plus short-lived readers, so a 1,000-node fleet hit it (bench/fleet.py): the
# 1,000th node was never provisioned. A high explicit limit still stops a runaway.
MAX_CONSUMERS = 1_000_000

# A freshly formed cluster answers "temporarily unavailable" (or not at all) until it has
# elected a JetStream meta leader and each stream's Raft group: waited out up to this long.
SETUP_DEADLINE_S = 60.0
# No responders at all means no JetStream on this server; on a member that is still
# starting it lasts a moment only.
NO_JETSTREAM_AFTER_S = 5.0
_UNAVAILABLE = (503, 504)  # JetStream not ready yet (no meta leader, no stream leader yet)
# "stream not found" for a stream just listed or created: a forming cluster's members do not all
# know it yet (CI saw an update of NEXUS_EVENTS answered so while its Raft group was elected).
# Setting up again is harmless: a stream that really is missing is created on the next try.
STREAM_NOT_FOUND = 10059
# "no suitable peers for placement": fewer members online than the streams' replicas, as while a
# cluster forms (CI saw it once); a cluster that stays short says so after the deadline.
NO_PEERS = 10005
STREAM_NAME_IN_USE = 10058  # JetStream's "stream name already in use with a different configuration"


async def ensure_streams(js: JetStreamContext, limits: StreamLimits, *, deadline_s: float = SETUP_DEADLINE_S) -> None:
    """`_ensure_streams`, retried while the cluster is not ready yet, with a progress log."""
    started = time.monotonic()
    tries = 0
    while True:
        tries += 1
        try:
            await _ensure_streams(js, limits)
            if tries > 1:
                log.info("streams.ready", tries=tries, waited_s=round(time.monotonic() - started, 1))
            return
        except nats.js.errors.APIError as exc:
            settling = exc.code in _UNAVAILABLE or exc.err_code in (STREAM_NOT_FOUND, NO_PEERS)
            if not settling or time.monotonic() - started > deadline_s:
                raise BusError(f"cannot set up JetStream streams: {exc.description}") from None
            why = exc.description or "JetStream temporarily unavailable"
        except nats.errors.NoRespondersError:
            if time.monotonic() - started > NO_JETSTREAM_AFTER_S:
                raise BusError("JetStream is not enabled on this server (start nats-server with -js)") from None
            why = "no JetStream responders yet"
        except nats.errors.TimeoutError:
            if time.monotonic() - started > deadline_s:
                raise BusError(f"JetStream did not answer within {deadline_s:g} s (enabled? a cluster with a meta leader?)") from None
            why = "JetStream did not answer"
        log.info("streams.waiting", reason=why, tries=tries, hint="a new cluster elects its JetStream leaders first")
        await asyncio.sleep(min(0.25 * tries, 2.0))


# How long a dispatch waits in NEXUS_DISPATCH for its node (a node down that long has its jobs
# `lost` long before; the log keeps the dispatch for ever).
DISPATCH_MAX_AGE_S = 7 * 24 * 3600.0


async def _ensure_dispatch_stream(js: JetStreamContext, limits: StreamLimits) -> None:
    """NEXUS_DISPATCH (schemas.subjects): no subjects of its own, so nothing reaches it but what
    the server copies from NEXUS_EVENTS, each with a `Nats-Stream-Source` header naming the
    event's subject and sequence there. Made on an existing log, it starts at the log's end."""
    transforms = [api.SubjectTransform(src=src, dest=subjects.DELIVERY_DEST) for src in subjects.DELIVERY_SOURCES]
    cfg = api.StreamConfig(
        name=subjects.DISPATCH_STREAM,
        description="Nexus dispatches and cancels, one subject per node, for the agents (the log is NEXUS_EVENTS)",
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        discard=api.DiscardPolicy.OLD,
        max_age=DISPATCH_MAX_AGE_S,
        num_replicas=limits.replicas or 1,
        max_consumers=MAX_CONSUMERS,
    )
    try:
        info = await js.stream_info(subjects.DISPATCH_STREAM)
    except nats.js.errors.NotFoundError:
        start = int((await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq) + 1
        cfg.sources = [api.StreamSource(name=subjects.EVENTS_STREAM, opt_start_seq=start, subject_transforms=transforms)]
        try:
            await js.add_stream(cfg)
            return
        except nats.js.errors.APIError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
        info = await js.stream_info(subjects.DISPATCH_STREAM)  # another orchestrator made it just now
    cfg.sources = info.config.sources  # where its copying started stays as it was
    if limits.replicas is None:  # never shrink what an operator raised
        cfg.num_replicas = info.config.num_replicas
    await js.update_stream(cfg)


async def _ensure_streams(js: JetStreamContext, limits: StreamLimits) -> None:
    """Create or update NEXUS_EVENTS, NEXUS_OUTPUT, NEXUS_DISPATCH, the nexus-nodes bucket and the nexus-keys bucket."""
    events = api.StreamConfig(
        name=subjects.EVENTS_STREAM,
        description="Nexus event log: the source of truth",
        subjects=[subjects.EVENTS_ALL],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        discard=api.DiscardPolicy.NEW,
        deny_delete=True,
        deny_purge=True,
        duplicate_window=120.0,
        num_replicas=limits.replicas or 1,
        allow_direct=True,
        max_consumers=MAX_CONSUMERS,
    )
    output = api.StreamConfig(
        name=subjects.OUTPUT_STREAM,
        description="Raw PTY output chunks of Nexus jobs",
        subjects=[subjects.OUTPUT_ALL],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        discard=api.DiscardPolicy.OLD,
        max_age=limits.output_max_age_s,
        max_bytes=limits.output_max_bytes,
        duplicate_window=120.0,
        compression=api.StoreCompression.S2,
        num_replicas=limits.replicas or 1,
        allow_direct=True,
        max_consumers=MAX_CONSUMERS,
    )
    for cfg in (events, output):
        try:
            info = await js.stream_info(cfg.name or "")
            if limits.replicas is None:  # never shrink what an operator raised
                cfg.num_replicas = info.config.num_replicas
            try:
                await js.update_stream(cfg)
            except nats.js.errors.APIError:
                if cfg.max_consumers == info.config.max_consumers:
                    raise
                # A server before 2.12 cannot change a stream's consumer limit (nor does it
                # impose one of its own): keep the stream's.
                cfg.max_consumers = info.config.max_consumers
                await js.update_stream(cfg)
        except nats.js.errors.NotFoundError:
            await js.add_stream(cfg)
    await _ensure_dispatch_stream(js, limits)
    await _ensure_nodes_bucket(js, limits)
    await nats_keys.ensure_bucket(js, limits)


async def _ensure_nodes_bucket(js: JetStreamContext, limits: StreamLimits) -> None:
    """The heartbeat bucket, with direct gets: an agent reads its own key back by a direct get
    naming it (the only read its credentials allow there; agent.node_claim)."""
    try:
        await js.create_key_value(
            bucket=subjects.NODES_BUCKET,
            description="Nexus node heartbeats (liveness, not audit)",
            history=1,
            ttl=max(limits.node_ttl_s * 6, 60.0),
            replicas=limits.replicas or 1,
            direct=True,
        )
    except nats.js.errors.BadRequestError as exc:
        info = await js.stream_info(f"KV_{subjects.NODES_BUCKET}")
        if exc.err_code != STREAM_CONFIG_DIFFERS or info.config.allow_direct:
            raise
        info.config.allow_direct = True  # a bucket made before agents read their key
        await js.update_stream(info.config)
