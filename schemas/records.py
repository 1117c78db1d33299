"""A message of the event log as readers see it: position, subject, server time, bytes, and the decoded event."""

from __future__ import annotations

from datetime import datetime

import msgspec

from schemas import subjects
from schemas.errors import InvalidSubject
from schemas.events import Event


class Author(msgspec.Struct, frozen=True, kw_only=True):
    """A verified identity (bus.identity.Verifier): its public nkey, the name it was issued
    to (`nexus creds new --name`), its role, and for an agent its node."""

    key: str
    name: str
    role: str
    node: str | None = None
    service: bool = False
    """An admin service (the API, the orchestrator) that may name the user it acts for."""


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
    signer: str | None = None
    """The `Nexus-Signer` header: the public nkey that signed it (None: unsigned)."""
    signature: str | None = None
    """The `Nexus-Sig` header: Ed25519 over the subject and the payload bytes."""
    author: Author | None = None
    """Who provably made it, once checked (projection); None: unsigned or unproven."""

    @property
    def ref(self) -> subjects.SubjectRef | None:
        """The subject, parsed (None when it is not a valid Nexus event subject)."""
        try:
            return subjects.parse(self.subject)
        except InvalidSubject:
            return None

    @property
    def kind(self) -> str:
        """The kind named by the subject (`exited`, `dispatch`, ...), even for a payload that did not decode."""
        ent = subjects.entity_of(self.subject)
        return ent.kind if ent is not None else self.subject
