"""Whether a dispatch or cancel may be obeyed: signed by the orchestrator, for this node, unexpired;
and whose a node fact read back from the log is.

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
from bus.identity import Checked, Verifier
from bus.logs import Logger
from bus.port import EventBus
from schemas.events import JobDispatch, NodeFact
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
        checked = await self._checked(rec)
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

    async def is_fact_of(self, rec: Record, node: str) -> bool:
        """Whether `rec` is a fact of node `node` (accepted, started, exited): one naming it,
        signed by its agent or the orchestrator. On DESIGN §3's subject (`nexus.evt.job.<id>.
        accepted`) any agent may publish a fact about any job; the others count for no one, so
        they must not stop a dispatch here either. Without credentials nothing can be checked:
        a fact's word (its `node`) is taken. Raises CannotCheckYet as `refusal` does."""
        if not isinstance(rec.event, NodeFact) or rec.event.node != node:
            return False
        if self.verifier is None:
            return True
        author = (await self._checked(rec)).author
        return author is not None and (author.role == "admin" or (author.role == "agent" and author.node == node))

    async def _checked(self, rec: Record) -> Checked:
        assert self.verifier is not None
        checked = self.verifier.check(rec)
        if checked.author is None and rec.signer is not None and rec.signer not in self.verifier.known:
            await self._learn(rec.signer)
            checked = self.verifier.check(rec)
        return checked

    async def _learn(self, key: str) -> None:
        assert self.verifier is not None
        try:
            if (announced := await self.bus.announcement(key)) is not None:
                self.verifier.learn(announced)
        except BusError as exc:
            log.warning("agent.identity_lookup_failed", signer=key, error=str(exc))
            raise CannotCheckYet(str(exc)) from None
