"""The projection's knowledge of who signs survives a restart (real DuckDB file, real keys)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bus.identity import Identity, Verifier
from orchestrator.projection import Projection
from orchestrator.store import DuckDBStore
from orchestrator.trust.keyring import Keyring
from schemas import codec, msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import JobRequested
from schemas.records import Record

T0 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


def signed(me: Identity, seq: int, out: Outgoing) -> Record:
    raw = codec.encode(out.event)
    headers = me.sign(out.subject, raw)
    return Record(
        seq=seq, subject=out.subject, stream_ts=T0, raw=raw, event=codec.decode(out.subject, raw),
        signer=headers["Nexus-Signer"], signature=headers["Nexus-Sig"],
    )  # fmt: skip


def test_a_restarted_projection_still_knows_who_signed_before(tmp_path: Path) -> None:
    ring = Keyring(tmp_path / "keys")
    ring.ensure()
    me = Identity.from_creds(ring.issue("submitter", "alice").path)
    db = tmp_path / "nexus.duckdb"

    def request(job_id: str) -> Outgoing:
        return Outgoing(subjects.job(job_id, "requested"), JobRequested(ts=T0, command="true"), msgids.job_request(job_id))

    store = DuckDBStore(db)
    first = Projection(store, verifier=Verifier([ring.account_public_key]))
    first.apply_batch([signed(me, 1, me.announcement()), signed(me, 2, request("j1"))])
    assert first.jobs["j1"].requested_by == "alice"
    store.close()

    # A new process on the same file: it resumes after seq 2 and never sees the announcement again.
    store = DuckDBStore(db)
    again = Projection(store, verifier=Verifier([ring.account_public_key]))
    again.apply_batch([signed(me, 3, request("j2"))])
    (row,) = store.query("SELECT error, author FROM events WHERE seq = 3")[1]
    assert row == (None, "alice")
    assert again.jobs["j2"].requested_by == "alice"
    store.close()


def test_history_signed_under_a_retired_account_still_verifies_when_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = Keyring(tmp_path / "old"), Keyring(tmp_path / "new")
    old.ensure()
    new.ensure()
    before = Identity.from_creds(old.issue("submitter", "alice").path)
    now = Identity.from_creds(new.issue("admin", "orchestrator", service=True).path)
    ann = signed(before, 1, before.announcement())
    verifier = Verifier.trusting_issuer_of(now)
    assert verifier is not None and verifier.learn(ann) is not None  # the old account is not trusted by default
    monkeypatch.setenv("NEXUS_TRUSTED_ACCOUNTS", old.account_public_key)
    verifier = Verifier.trusting_issuer_of(now)
    assert verifier is not None and verifier.learn(ann) is None
    assert verifier.check(signed(before, 2, Outgoing(subjects.job("j1", "requested"), JobRequested(ts=T0, command="true"), "x"))).author
