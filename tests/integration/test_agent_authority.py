"""The agent's check of a dispatch's signer: a lookup that fails is not a verdict.

A refusal is final (the agent terminates the message), so a signer whose announcement cannot
be read at the moment (JetStream starting, or a cluster electing a leader) must not be
refused: `Authority.refusal` raises CannotCheckYet and the message is delivered again. Real
keys from a real keyring; the bus is a stand-in for its one lookup, which fails or answers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from agent.authority import Authority, CannotCheckYet
from bus.errors import BusError
from bus.identity import Identity
from schemas import codec, subjects
from schemas.envelope import Envelope
from schemas.events import JobAccepted, JobDispatch
from schemas.records import Record

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


class _Lookups:
    """What Authority uses of a bus: its identity, and announcements by key."""

    def __init__(self, identity: Identity, announced: Record | None, *, failures: int) -> None:
        self.identity = identity
        self._announced = announced
        self.failures = failures
        self.asked = 0

    async def announcement(self, key: str) -> Record | None:
        self.asked += 1
        if self.asked <= self.failures:
            raise BusError(f"announcement of {key}: no answer from JetStream (NoRespondersError)", retryable=True)
        return self._announced


def _signed(signer: Identity, subject: str, event: Envelope, seq: int) -> Record:
    raw = codec.encode(event)
    headers = signer.sign(subject, raw)
    signer_key, signature = headers["Nexus-Signer"], headers["Nexus-Sig"]
    return Record(seq=seq, subject=subject, stream_ts=NOW, raw=raw, event=event, signer=signer_key, signature=signature)  # type: ignore[arg-type]


def _signed_dispatch(signer: Identity) -> Record:
    event = JobDispatch(attempt=1, tool="bash", command="true", argv=["bash", "-c", "true"], expires_at=NOW + timedelta(minutes=15))
    return _signed(signer, subjects.dispatch("j-1", "n1"), event, 7)


def _announcement(of: Identity) -> Record:
    out = of.announcement()
    return _signed(of, out.subject, out.event, 3)


@pytest.fixture
def identities(tmp_path: Path) -> tuple[Identity, Identity]:
    from orchestrator.trust.keyring import Keyring

    keyring = Keyring(tmp_path / "creds")
    keyring.ensure()
    agent = Identity.from_creds(keyring.issue("agent", "agent-n1", node="n1").path)
    orchestrator = Identity.from_creds(keyring.issue("admin", "orchestrator", service=True).path)
    return agent, orchestrator


async def test_a_failed_lookup_defers_and_the_next_delivery_is_obeyed(identities: tuple[Identity, Identity]) -> None:
    agent, orchestrator = identities
    bus = _Lookups(agent, _announcement(orchestrator), failures=1)
    authority = Authority(bus)  # type: ignore[arg-type]
    record = _signed_dispatch(orchestrator)
    with pytest.raises(CannotCheckYet):
        await authority.refusal(record, NOW)
    assert await authority.refusal(record, NOW) is None  # delivered again: the lookup answers, it may run
    assert bus.asked == 2


async def test_a_signer_nobody_announced_is_refused(identities: tuple[Identity, Identity]) -> None:
    agent, orchestrator = identities
    bus = _Lookups(agent, None, failures=0)  # the lookup answers: no such announcement
    why = await Authority(bus).refusal(_signed_dispatch(orchestrator), NOW)  # type: ignore[arg-type]
    assert why is not None and "announcement" in why


def test_an_agent_connects_under_the_private_inbox_its_credentials_grant(identities: tuple[Identity, Identity], tmp_path: Path) -> None:
    """New agent credentials grant `_INBOX_NODE.<node>.>` only, and the bus takes that prefix
    from them; older ones (shared `_INBOX.>`) keep the default until issued again; other
    roles use the default `_INBOX`, which foreign NATS clients expect."""
    from orchestrator.trust import nats_jwt
    from orchestrator.trust.keyring import Keyring

    agent, orchestrator = identities
    assert agent.claims["nats"]["sub"]["allow"] == ["_INBOX_NODE.n1.>"]
    assert agent.inbox_prefix == subjects.node_inbox("n1") == "_INBOX_NODE.n1"
    assert orchestrator.inbox_prefix is None
    keyring = Keyring(tmp_path / "creds")
    older = dict(agent.claims["nats"], sub={"allow": ["_INBOX.>"]})
    token = nats_jwt.encode(keyring._seed("account"), agent.key, "agent-n1", older)
    assert Identity(token, agent._kp.seed).inbox_prefix is None


async def test_only_the_nodes_own_signed_facts_are_its_facts(identities: tuple[Identity, Identity], tmp_path: Path) -> None:
    """On DESIGN §3's `nexus.evt.job.<id>.accepted` any agent may publish a fact about any job:
    when the agent reads a job's history back (is this dispatch still runnable? is the stored
    `accepted` ours?), only facts naming its node and signed by its agent or the orchestrator
    are its node's; another agent's, even naming this node, must not stop a dispatch here."""
    from orchestrator.trust.keyring import Keyring

    agent, orchestrator = identities
    rogue = Identity.from_creds(Keyring(tmp_path / "creds").issue("agent", "agent-n2", node="n2").path)
    announced = {who.key: _announcement(who) for who in (agent, orchestrator, rogue)}

    class _Bus(_Lookups):
        async def announcement(self, key: str) -> Record | None:
            return announced.get(key)

    authority = Authority(_Bus(agent, None, failures=0))  # type: ignore[arg-type]
    subject, fact = subjects.fact("j-1", "accepted"), JobAccepted(node="n1", attempt=1, instance="i")
    assert await authority.is_fact_of(_signed(agent, subject, fact, 9), "n1")
    assert await authority.is_fact_of(_signed(orchestrator, subject, fact, 9), "n1")
    assert not await authority.is_fact_of(_signed(rogue, subject, fact, 9), "n1")  # names n1, signed by n2's agent
    assert not await authority.is_fact_of(_signed(agent, subject, JobAccepted(node="n2", attempt=1), 9), "n1")  # another node's
    unsigned = Record(seq=9, subject=subject, stream_ts=NOW, raw=codec.encode(fact), event=fact)
    assert not await authority.is_fact_of(unsigned, "n1")
    forged = msgspec.structs.replace(_signed(agent, subject, fact, 9), raw=codec.encode(JobAccepted(node="n1", attempt=2)))
    assert not await authority.is_fact_of(forged, "n1")  # altered after signing

    # Without credentials nothing can be checked: the fact's word is taken.
    class _Open:
        identity = None

    assert await Authority(_Open()).is_fact_of(unsigned, "n1")  # type: ignore[arg-type]
