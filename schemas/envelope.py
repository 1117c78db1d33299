"""The envelope every event shares, and what a publisher hands to the bus.

Envelope    base of every event Struct: `type` (the tag), `v`, `ts`
Outgoing    one event to publish: subject, event, Nats-Msg-Id (see schemas.msgids)
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

import msgspec

from schemas.limits import Int64

SCHEMA_VERSION = 1

Timestamp = Annotated[datetime, msgspec.Meta(tz=True, description="RFC 3339 UTC time")]
# (?!\n) because a Python `$` also matches before a final newline.
Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}(?!\n)$")]


class Envelope(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", forbid_unknown_fields=False):
    """What every event shares: `type` (the tag), `v` and `ts`."""

    v: Int64 = SCHEMA_VERSION
    ts: Timestamp | None = None

    claims_its_id: ClassVar[bool] = False
    """True when the msg id is a claim that the first holder wins: a request's id is its
    requester's idempotency key, an `accepted` is one process's claim on an attempt.
    False (facts and decisions): the id names this one event, and a foreign message
    holding it does not make ours a duplicate (bus.port.id_taken_by_another)."""


class Outgoing(msgspec.Struct, frozen=True):
    """One event to publish; `msg_id` (built by schemas.msgids) makes a retry harmless."""

    subject: str
    event: Envelope
    msg_id: str
