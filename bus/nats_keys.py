"""The NATS adapter's side of the `nexus-keys` bucket: the orchestrator's public sealing key.

Readable by every identity (clients seal secrets to it), written by the orchestrator
only (the server's permissions, issue 11). Not the audit trail: a key that is missing or
does not decode reads as "no key", and a client then refuses to publish a secret.

Part of the NATS adapter (with bus.nats_bus): nats-py errors stop here.
"""

from __future__ import annotations

import nats.js.errors
from nats.js import JetStreamContext

from bus.errors import NotSetUp
from bus.logs import Logger
from bus.nats_translate import map_read_errors
from bus.port import StreamLimits
from schemas import codec
from schemas.errors import DecodeError
from schemas.secrets import KEYS_BUCKET, ORCHESTRATOR_KEY, OrchestratorKey

log = Logger("nexus.bus")


async def ensure_bucket(js: JetStreamContext, limits: StreamLimits) -> None:
    """Create the bucket if it does not exist (no TTL: the key stays until replaced)."""
    await js.create_key_value(
        bucket=KEYS_BUCKET,
        description="Nexus public keys: where clients seal env secrets to",
        history=5,
        replicas=limits.replicas or 1,
    )


async def put_orchestrator_key(js: JetStreamContext, key: OrchestratorKey) -> None:
    with map_read_errors(f"bucket {KEYS_BUCKET}"):
        kv = await js.key_value(KEYS_BUCKET)
        await kv.put(ORCHESTRATOR_KEY, codec.encode(key))


async def orchestrator_key(js: JetStreamContext) -> OrchestratorKey | None:
    """The published key; None when there is none (no bucket, no key, or a value that does not decode).
    Raises BusError when JetStream cannot be asked now."""
    try:
        with map_read_errors(f"bucket {KEYS_BUCKET}"):
            kv = await js.key_value(KEYS_BUCKET)
            entry = await kv.get(ORCHESTRATOR_KEY)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError, NotSetUp):
        return None
    if not entry.value:
        return None
    try:
        return codec.decode_orchestrator_key(entry.value)
    except DecodeError as exc:
        log.warning("keys.bad_value", bucket=KEYS_BUCKET, key=ORCHESTRATOR_KEY, reason=exc.reason)
        return None
