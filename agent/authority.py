"""Whether a dispatch or cancel may be obeyed: signed by the orchestrator, for this node, unexpired.

With credentials (an authenticated bus) the agent runs nothing it cannot verify:
the message must carry a valid signature (bus.identity) by an identity with the
admin role whose credentials chain to the account that issued this agent's own.
The orchestrator's identity is learnt from its announcement on the log, on demand.
Without credentials (a bus without auth) nothing can be verified; the agent says so
once at start and obeys (see docs/security.md).
"""

from __future__ import annotations

from datetime import datetime

from bus.errors import BusError
from bus.identity import Verifier
from bus.logs import Logger
from bus.port import EventBus
from schemas.events import JobDispatch
from schemas.records import Record

log = Logger("nexus.agent")


class CannotCheckYet(Exception):
    """The signer's announcement could not be read now (the bus is starting or failing over).
    Not a verdict: the message is delivered again later, neither obeyed nor refused."""


class Authority:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.verifier = Verifier.trusting_issuer_of(bus.identity)
        if self.verifier is None:
            log.warning("agent.unverified", detail="no credentials: dispatches cannot be verified; run agents with --creds")

    async def refusal(self, rec: Record, now: datetime) -> str | None:
        """Why this dispatch/cancel must not be obeyed (None: it may). Raises CannotCheckYet
        when the signer is new and its announcement cannot be read at the moment."""
        if self.verifier is None:
            return None
        checked = self.verifier.check(rec)
        if checked.author is None and rec.signer is not None and rec.signer not in self.verifier.known:
            await self._learn(rec.signer)
            checked = self.verifier.check(rec)
        if checked.author is None:
            return checked.problem or "unsigned: only the orchestrator's signed dispatches run here"
        if checked.author.role != "admin":
            return f"signed by {checked.author.name!r} ({checked.author.role}), not by the orchestrator"
        if isinstance(rec.event, JobDispatch):
            if rec.event.expires_at is None:
                return "the dispatch carries no expiry"
            if rec.event.expires_at < now:
                return f"the dispatch expired at {rec.event.expires_at.isoformat()}"
        return None

    async def _learn(self, key: str) -> None:
        assert self.verifier is not None
        try:
            if (announced := await self.bus.announcement(key)) is not None:
                self.verifier.learn(announced)
        except BusError as exc:
            log.warning("agent.identity_lookup_failed", signer=key, error=str(exc))
            raise CannotCheckYet(str(exc)) from None
