"""Who made a record, and whether they may: the check every reader of the log applies the same
way (the projection as it folds the log; `NexusClient.history` for the CLI, the API and the
console), so that what a reader shows is what the orchestrator counted.

A record gets its verified author (`Record.author`: the identity its signature proves, from a
trusted announcement), a request or approval is named by that identity (core.authorship.named),
and a record its author may not make loses its event and carries the reason as its error.

Output chunks are node facts too: `orchestrator.output_gate`.
"""

from __future__ import annotations

import msgspec

from bus.identity import Checked, Verifier
from bus.port import EventBus
from orchestrator.core import authorship
from schemas.limits import MAX_REASON_CHARS
from schemas.records import Record


def vet(verifier: Verifier, rec: Record, holds: bool | None = None, *, name_unsigned: bool = False) -> Record:
    """`rec` judged: its verified author set; refused (no event, the reason as its error) when
    its signature fails or its author may not make it. `holds`: whether its signature verifies,
    when already checked (None: checked here). Announcements are learnt on the way.
    `name_unsigned`: an unsigned request names no one even before any signer is known (a
    client with credentials reading one job, whose request comes before the signed decisions)."""
    problem = verifier.learn(rec, holds)
    checked = verifier.check(rec, holds) if problem is None else Checked(None, problem)
    rec = msgspec.structs.replace(rec, author=checked.author)
    enforcing = bool(verifier.known)
    why = authorship.refusal(rec, problem=checked.problem, enforcing=enforcing)
    if why is not None:
        return msgspec.structs.replace(rec, event=None, error=why[:MAX_REASON_CHARS])
    return authorship.named(rec, enforcing=enforcing or name_unsigned)


class Vetting:
    """`vet` for a reader of the log that meets signers as it goes (a followed job, a history):
    it trusts the account that issued this client's credentials and reads each new signer's
    announcement once, by a direct read. Without credentials (an open bus has no identities)
    records pass unchanged."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.verifier = Verifier.trusting_issuer_of(bus.identity)
        self._looked_up: set[str] = set()

    async def meet(self, signer: str | None) -> None:
        """Learn `signer`'s announcement, if it has one and it was not looked up before."""
        if self.verifier is None or signer is None or signer in self._looked_up:
            return
        self._looked_up.add(signer)
        announced = await self.bus.announcement(signer)
        if announced is not None:
            self.verifier.learn(announced)

    async def record(self, rec: Record) -> Record:
        if self.verifier is None:
            return rec
        await self.meet(rec.signer)
        # A job's request comes before any signed decision of it: with credentials (a bus
        # where the orchestrator enforces authorship), its free-text requester is no one's claim.
        return vet(self.verifier, rec, name_unsigned=True)

    async def records(self, records: list[Record]) -> list[Record]:
        return [await self.record(r) for r in records]


async def vetted(bus: EventBus, records: list[Record]) -> list[Record]:
    """`records` (read straight from the log) judged as the orchestrator judges them (`Vetting`)."""
    return await Vetting(bus).records(records)
