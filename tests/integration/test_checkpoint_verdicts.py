"""What the orchestrator's checkpoints say of the signatures it checked (Projection.verdicts):
from the first record it folded since its last checkpoint, the seqs whose signature did not
hold; nothing when there is nothing to say. And which of those verdicts a replay takes
(orchestrator.lookahead). DuckDB files, no NATS."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import orchestrator.projection
from bus.identity import Identity, Verifier
from orchestrator.core import audit
from orchestrator.lookahead import Lookahead, Released
from orchestrator.projection import Projection
from orchestrator.store import DuckDBStore
from orchestrator.trust.keyring import Keyring
from schemas import codec, subjects
from schemas.events import JobRequested
from schemas.records import Record
from schemas.trust import TrustCheckpoint

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def signed(seq: int, who: Identity, subject: str, event: object, *, alter: bool = False) -> Record:
    data = codec.encode(event)  # type: ignore[arg-type]
    headers = who.sign(subject, data)
    raw = data + b" " if alter else data
    return Record(seq=seq, subject=subject, stream_ts=T0, raw=raw, event=codec.decode(subject, raw),
                  signer=headers["Nexus-Signer"], signature=headers["Nexus-Sig"])  # fmt: skip


@pytest.fixture
def projection(tmp_path: Path) -> Projection:
    ring = Keyring(tmp_path / "keys")
    ring.ensure()
    return Projection(DuckDBStore(tmp_path / "state.duckdb"), verifier=Verifier([ring.account_public_key]))


def test_a_checkpoint_names_the_signatures_that_did_not_hold_since_the_last_one(tmp_path: Path, projection: Projection) -> None:
    ring = Keyring(tmp_path / "keys")
    alice = Identity.from_creds(ring.issue("submitter", "alice").path)
    ann = alice.announcement()
    assert projection.verdicts() == (None, ())  # nothing folded yet
    projection.apply_batch([
        signed(1, alice, ann.subject, ann.event),
        signed(2, alice, subjects.job("a", "requested"), JobRequested(command="true")),
        signed(3, alice, subjects.job("b", "requested"), JobRequested(command="true"), alter=True),
        Record(seq=4, subject=subjects.job("c", "requested"), stream_ts=T0, raw=b'{"command": "true"}',
               event=JobRequested(command="true")),  # unsigned: no verdict to give
    ])  # fmt: skip
    assert projection.verdicts() == (1, (3,))
    projection.attested(4)
    assert projection.verdicts() == (None, ())  # all said
    projection.apply_batch([signed(5, alice, subjects.job("d", "requested"), JobRequested(command="true"), alter=True)])
    assert projection.verdicts() == (5, (5,))


def test_more_failures_than_a_checkpoint_may_name_give_no_verdicts(
    tmp_path: Path, projection: Projection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(orchestrator.projection, "MAX_UNVERIFIED", 1)
    alice = Identity.from_creds(Keyring(tmp_path / "keys").issue("submitter", "alice").path)
    forged = [signed(s, alice, subjects.job(f"j{s}", "requested"), JobRequested(command="true"), alter=True) for s in (1, 2)]
    projection.apply_batch(forged)
    assert projection.verdicts() == (None, ())
    projection.attested(2)
    projection.apply_batch([signed(3, alice, subjects.job("j3", "requested"), JobRequested(command="true"), alter=True)])
    assert projection.verdicts() == (3, (3,))


def test_without_signature_checks_there_are_no_verdicts(tmp_path: Path) -> None:
    projection = Projection(DuckDBStore(tmp_path / "state.duckdb"))
    unsigned = Record(seq=1, subject=subjects.job("a", "requested"), stream_ts=T0, raw=b"{}", event=JobRequested(command="x"))
    projection.apply_batch([unsigned])
    assert projection.verdicts() == (None, ())


def test_a_replay_takes_verdicts_only_for_the_range_a_matching_checkpoint_names(tmp_path: Path) -> None:
    ring = Keyring(tmp_path / "keys")
    ring.ensure()
    orch = Identity.from_creds(ring.issue("admin", "orchestrator", service=True).path)
    alice = Identity.from_creds(ring.issue("submitter", "alice").path)
    records = [signed(1, orch, orch.announcement().subject, orch.announcement().event)]
    records += [signed(s, alice, subjects.job(f"j{s}", "requested"), JobRequested(command="true"), alter=s == 4) for s in range(2, 6)]
    chain = audit.GENESIS
    for r in records:
        chain = audit.link(chain, r.seq, r.subject, r.stream_ts, audit.digest(r.raw), r.signer, r.signature)

    def checkpoint(seq: int, **fields: object) -> Record:
        return signed(seq, orch, subjects.trust("orchestrator", "checkpoint"), TrustCheckpoint(upto_seq=5, chain=chain, **fields))  # type: ignore[arg-type]

    def fed(cp: Record) -> list[Released]:
        ahead = Lookahead(Verifier([ring.account_public_key]), audit.GENESIS)
        return ahead.add([*records, cp]) + ahead.finish()

    # Verdicts from seq 3 on: seqs 1-2 are checked one by one, 3-5 taken (4 did not hold).
    parts = fed(checkpoint(6, verified_from=3, unverified=(4,)))
    assert [([r.seq for r in p.records], p.holds) for p in parts] == [([1, 2], None), ([3, 4, 5], [True, False, True]), ([6], None)]
    # A seq named outside its range, no verdicts at all, or a chain that is not the records': nothing taken.
    for cp in (checkpoint(6, verified_from=3, unverified=(2,)), checkpoint(6), signed(6, orch, subjects.trust("orchestrator", "checkpoint"),
               TrustCheckpoint(upto_seq=5, chain=audit.GENESIS, verified_from=1))):  # fmt: skip
        assert [p.holds for p in fed(cp)] == [None]
