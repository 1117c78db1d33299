"""Agents' dispatches through NEXUS_DISPATCH: who may read a node's consumer there, which stream
an agent's credentials let it use, and how a copy is read back as the event it copies."""

from __future__ import annotations

from pathlib import Path

from nats.aio.msg import Msg

from bus.identity import Identity
from bus.nats_translate import to_delivered_record
from orchestrator.trust.keyring import Keyring
from orchestrator.trust.roles import ROLES, permissions
from schemas import codec, subjects
from schemas.events import JobDispatch
from schemas.trust import SIG_HEADER, SIGNER_HEADER

DISPATCH = subjects.DISPATCH_STREAM


def test_an_agent_may_pull_and_ack_its_own_consumer_on_nexus_dispatch_and_no_one_elses() -> None:
    mine = permissions("agent", "n1").publish
    for allowed in ("CONSUMER.INFO", "CONSUMER.MSG.NEXT"):
        assert f"$JS.API.{allowed}.{DISPATCH}.agent-n1" in mine
    assert f"$JS.ACK.{DISPATCH}.agent-n1.>" in mine
    assert not [p for p in mine if DISPATCH in p and "agent-n1" not in p]
    # No one but admin (">") names a consumer of NEXUS_DISPATCH, nor creates one there.
    for role in ROLES:
        if role not in ("admin", "agent"):
            assert not [p for p in permissions(role).publish if DISPATCH in p], role


def test_credentials_without_the_new_permission_keep_the_agent_on_the_log_consumer(tmp_path: Path) -> None:
    ring = Keyring(tmp_path / "creds")
    ring.ensure()
    now = Identity.from_creds(ring.issue("agent", "a1", node="n1").path)
    assert now.may_publish(f"$JS.API.CONSUMER.MSG.NEXT.{DISPATCH}.agent-n1")
    assert not now.may_publish(f"$JS.API.CONSUMER.MSG.NEXT.{DISPATCH}.agent-n2")
    before = Identity.from_creds(ring.issue("agent", "a2", node="n1").path)
    allowed = before.claims["nats"]["pub"]["allow"]
    allowed[:] = [p for p in allowed if DISPATCH not in p]  # as issued before NEXUS_DISPATCH existed
    assert not before.may_publish(f"$JS.API.CONSUMER.MSG.NEXT.{DISPATCH}.agent-n1")
    assert Identity.from_creds(ring.issue("admin", "root").path).may_publish(f"$JS.API.CONSUMER.MSG.NEXT.{DISPATCH}.agent-n1")


def _copy(data: bytes, source: str | None, headers: dict[str, str] | None = None) -> Msg:
    """A message of NEXUS_DISPATCH as a pull delivers it (its own sequence 7, at some time)."""
    hdrs = {**(headers or {}), **({"Nats-Stream-Source": source} if source is not None else {})}
    reply = f"$JS.ACK.{DISPATCH}.agent-n1.1.7.7.1733400000000000000.0"
    return Msg(_client=None, subject=subjects.delivery("n1"), reply=reply, data=data, headers=hdrs)  # type: ignore[arg-type]


def test_a_copy_reads_as_the_event_it_copies_with_its_subject_and_sequence_in_the_log() -> None:
    original = subjects.dispatch("j1", "n1")
    data = codec.encode(JobDispatch(attempt=1, tool="bash", command="echo hi", argv=["bash", "-c", "echo hi"]))
    source = f"NEXUS_EVENTS 4242 nexus.evt.job.*.dispatch.*\fnexus.evt.job.*.cancel.* nexus.deliver.x {original} AbCd"
    rec = to_delivered_record(_copy(data, source, {SIGNER_HEADER: "UKEY", SIG_HEADER: "sig"}))
    assert (rec.seq, rec.subject, rec.signer, rec.signature, rec.error) == (4242, original, "UKEY", "sig", None)
    assert isinstance(rec.event, JobDispatch) and rec.event.command == "echo hi"


def test_a_message_that_is_not_a_copy_of_the_log_is_an_error_record() -> None:
    data = codec.encode(JobDispatch(attempt=1, tool="bash", command="echo hi", argv=["bash", "-c", "echo hi"]))
    for source in (None, "", "NEXUS_OUTPUT 5 a b nexus.evt.job.j1.dispatch.n1", "NEXUS_EVENTS x a b nexus.evt.job.j1.dispatch.n1"):
        rec = to_delivered_record(_copy(data, source))
        assert rec.event is None and rec.error, source
    garbage = to_delivered_record(_copy(b"\xff", f"NEXUS_EVENTS 9 a b {subjects.dispatch('j1', 'n1')}"))
    assert (garbage.seq, garbage.event) == (9, None) and garbage.error
