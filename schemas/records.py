"""A message of the event log as readers see it: position, subject, server time, bytes, and the decoded event."""

from __future__ import annotations

from datetime import datetime

import msgspec

from schemas.events import Event


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """One message of NEXUS_EVENTS as the reducer sees it.

    `event` is None when the payload did not decode; `error` then says why.
    `stream_ts` is the server's timestamp, used when the payload has no `ts`.
    """

    seq: int
    subject: str
    stream_ts: datetime
    raw: bytes
    event: Event | None = None
    error: str | None = None
