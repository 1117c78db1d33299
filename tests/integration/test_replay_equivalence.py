"""The fast replay (orchestrator.replay: big transactions, signatures checked in threads ahead
of the fold, rows as JSON documents) writes exactly what the live path writes, row for row.

A real nats-server with NATS decentralized auth holds a signed log of a few hundred jobs
(the orchestrator's decisions, the agent's facts, a submitter's requests, each signed by its
own identity) and everything the checks must refuse or mark: a decision by a submitter, a
payload altered after signing, an unsigned decision, a signer nobody announced, an agent
speaking for another node, payloads that do not decode (one with a NUL byte), a secret in
clear, and late events for jobs settled long before (their views come back from the file).
It is replayed twice into real DuckDB files: the reference, 50 records per transaction
verified inline (the live orchestrator's path), and `nexus replay`'s. Every table must be
equal, and the rejections must be there.

The log also holds signed checkpoints (orchestrator.lookahead): a genuine one, whose
verdicts the replay takes instead of checking each signature of its range again (a forged
fact inside that range is refused from its verdict), and checkpoints that must vouch for
nothing although each says a forgery after it held: one signed by the orchestrator whose
chain does not match, one whose own signature does not hold, one by a submitter, one by an
identity nobody announced. Their forgeries, and those at the end that no checkpoint
covers, are refused from their own signatures.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import nats
import pytest

import orchestrator.replay
from bus.identity import Identity, Verifier, signatures_hold
from bus.nats_bus import NatsBus
from orchestrator.core import audit
from orchestrator.embedded import EmbeddedNats
from orchestrator.projection import PARALLEL_FROM, Projection
from orchestrator.replay import replay
from orchestrator.store import DOC_FROM, DuckDBStore
from orchestrator.trust.keyring import Keyring
from schemas import codec, subjects
from schemas.events import (
    JobAccepted,
    JobAssigned,
    JobDispatch,
    JobExited,
    JobRequested,
    JobStarted,
    JobSucceeded,
    JobValidated,
    NodeRegistered,
)
from schemas.records import Record
from schemas.trust import TrustCheckpoint
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(120)

JOBS = 300
NODE = "n1"
TABLES = {"events": "seq", "jobs": "job_id", "nodes": "node_id", "pipelines": "pipeline_id",
          "pipeline_steps": "pipeline_id, step_id", "checkpoint": "name"}  # fmt: skip


@dataclass
class Signed:
    url: str
    admin_creds: Path
    end: int
    vouched_upto: int
    """The genuine checkpoint's `upto_seq`: records up to it are not verified one by one."""


@pytest.fixture
async def signed_log(tmp_path: Path) -> AsyncIterator[Signed]:
    ring = Keyring(tmp_path / "keys")
    ring.ensure()
    orch = Identity.from_creds(ring.issue("admin", "orchestrator", service=True).path)
    agent = Identity.from_creds(ring.issue("agent", "agent-n1", NODE).path)
    alice = Identity.from_creds(ring.issue("submitter", "alice").path)
    admin_creds = ring.issue("admin", "admin").path
    stranger_ring = Keyring(tmp_path / "other")
    stranger_ring.ensure()
    stranger = Identity.from_creds(stranger_ring.issue("admin", "intruder").path)

    server = EmbeddedNats(tmp_path / "js", port=-1, auth=ring.server_config())
    url = await server.start()
    check = await NatsBus.connect(url, name="setup", creds=admin_creds)
    await check.ensure_streams()
    nc = await nats.connect(url, user_credentials=str(admin_creds))
    published = 0

    async def put(subject: str, data: bytes, who: Identity | None, *, alter: bool = False) -> None:
        nonlocal published
        headers = who.sign(subject, data) if who is not None else {}
        await nc.publish(subject, data + b" " if alter else data, headers=headers or None)
        published += 1

    async def event(subject: str, ev: object, who: Identity | None, **kw: bool) -> None:
        await put(subject, codec.encode(ev), who, **kw)  # type: ignore[arg-type]

    async def checkpoint(*, who: Identity, chain_ok: bool = True, alter: bool = False) -> int:
        """A checkpoint of everything published so far, as the orchestrator makes it (the chain,
        and the seqs whose signature does not hold); `chain_ok=False`: the chain of one record
        less. Not genuine ones say that every signature held. Returns its `upto_seq`."""
        await nc.flush()
        await wait_for(lambda: _at_least(check, published), 30, what="the log to hold every published event")
        records = [r async for batch in check.read_records(until_seq=published) for r in batch]
        genuine = chain_ok and not alter and who is orch
        chain = audit.GENESIS
        for r in records if chain_ok else records[:-1]:
            chain = audit.link(chain, r.seq, r.subject, r.stream_ts, audit.digest(r.raw), r.signer, r.signature)
        bad = tuple(r.seq for r, h in zip(records, signatures_hold(records), strict=True) if h is False) if genuine else ()
        await event(subjects.trust("orchestrator", "checkpoint"), TrustCheckpoint(upto_seq=published, chain=chain, verified_from=1,
                                                                                  unverified=bad), who, alter=alter)  # fmt: skip
        return len(records)

    try:
        for me in (orch, agent, alice):
            ann = me.announcement()
            await event(ann.subject, ann.event, me)
        await event(subjects.node(NODE, "registered"), NodeRegistered(tools=["bash"], max_jobs=8), orch)
        ids = [f"job-{i}" for i in range(JOBS)]
        for start in range(0, JOBS, 40):  # forty at a time, interleaved as a busy log is
            group = ids[start : start + 40]
            env = {"DB_PASSWORD": "in-clear"}
            for j in group:
                await event(subjects.job(j, "requested"), JobRequested(command=f"echo {j}", env=env if j == "job-7" else {}), alice)
            for j in group:
                await event(subjects.job(j, "validated"), JobValidated(severity="info"), orch)
            for j in group:
                await event(subjects.job(j, "assigned"), JobAssigned(node=NODE), orch)
            for j in group:
                dispatch = JobDispatch(attempt=1, tool="bash", command=f"echo {j}", argv=["bash", "-c", f"echo {j}"])
                await event(subjects.dispatch(j, NODE), dispatch, orch)
            for j in group:
                await event(subjects.fact(j, "accepted"), JobAccepted(node=NODE, attempt=1), agent)
                await event(subjects.fact(j, "started"), JobStarted(node=NODE, attempt=1, pid=100), agent)
            if start == 40:  # a forged exit, then the genuine checkpoint (its verdicts name the forgery)
                await event(subjects.fact("job-41", "exited"), JobExited(node=NODE, attempt=1, exit_code=9), agent, alter=True)
                vouched_upto = await checkpoint(who=orch)
            untrusted = {120: {"who": orch, "chain_ok": False}, 160: {"who": orch, "alter": True}, 200: {"who": alice},
                         240: {"who": stranger}}  # fmt: skip
            if start in untrusted:  # checkpoints that must vouch for nothing, each after a forged exit
                await event(subjects.fact(group[1], "exited"), JobExited(node=NODE, attempt=1, exit_code=9), agent, alter=True)
                await checkpoint(**untrusted[start])  # type: ignore[arg-type]
            for j in group:
                await event(subjects.fact(j, "exited"), JobExited(node=NODE, attempt=1, exit_code=0), agent)
                await event(subjects.job(j, "succeeded"), JobSucceeded(attempt=1), orch)
        # What must be refused or marked, some about jobs settled thousands of records ago.
        await event(subjects.job("job-1", "succeeded"), JobSucceeded(attempt=1), alice)  # a submitter's decision
        await event(subjects.job("job-2", "validated"), JobValidated(severity="info"), orch, alter=True)  # altered
        await event(subjects.job("job-3", "succeeded"), JobSucceeded(attempt=1), None)  # unsigned decision
        await event(subjects.job("job-4", "succeeded"), JobSucceeded(attempt=1), stranger)  # nobody announced it
        await event(subjects.fact("job-5", "started"), JobStarted(node="n2", attempt=1, pid=1), agent)  # another node
        await put(subjects.job("job-6", "validated"), b'{"type": "job.validated", "severity": 12}', orch)  # does not decode
        await put(subjects.job("job-8", "validated"), b'{"type": "job.validated"}\x00', orch)  # a NUL byte
        await event(subjects.job("job-9", "succeeded"), JobSucceeded(attempt=1), orch)  # late: the job is settled
        await event(subjects.job("late-1", "requested"), JobRequested(command="true"), alice)  # a job still open at the end
        await nc.flush()
        await wait_for(lambda: _at_least(check, published), 30, what="the log to hold every published event")
        yield Signed(url=url, admin_creds=admin_creds, end=published, vouched_upto=vouched_upto)
    finally:
        await check.close()
        await nc.close()
        await server.stop()


async def _at_least(bus: NatsBus, n: int) -> bool:
    return await bus.last_seq() >= n


async def test_the_fast_replay_writes_what_the_live_path_writes(
    signed_log: Signed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = await NatsBus.connect(signed_log.url, name="replays", creds=signed_log.admin_creds)
    try:
        reference = DuckDBStore(tmp_path / "reference.duckdb")
        live = Projection(reference, verifier=Verifier.trusting_issuer_of(bus.identity))
        records = [r async for batch in bus.read_records() for r in batch]
        assert len(records) == signed_log.end
        for i in range(0, len(records), 50):  # the live path: small batches, verified inline, column lists
            live.apply_batch(records[i : i + 50])
        reference.close()

        fast_store = DuckDBStore(tmp_path / "fast.duckdb")
        fast = Projection(fast_store, verifier=Verifier.trusting_issuer_of(bus.identity))
        batch = 1000  # a job has 8 events: about 125 job rows a batch
        assert batch >= PARALLEL_FROM and batch // 8 >= DOC_FROM  # threads and JSON documents both used
        verified: list[int] = []

        def counted(records: Sequence[Record]) -> list[bool | None]:
            verified.extend(r.seq for r in records)
            return signatures_hold(records)

        monkeypatch.setattr(orchestrator.replay, "signatures_hold", counted)
        assert await replay(bus, fast, until_seq=signed_log.end, batch=batch) == signed_log.end
        fast_store.close()
    finally:
        await bus.close()
    # The genuine checkpoint vouched for its range; no other checkpoint vouched for anything.
    assert sorted(verified) == list(range(signed_log.vouched_upto + 1, signed_log.end + 1))

    a = duckdb.connect(str(tmp_path / "reference.duckdb"), read_only=True)
    b = duckdb.connect(str(tmp_path / "fast.duckdb"), read_only=True)
    for table, key in TABLES.items():
        want = a.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall()
        got = b.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall()
        assert len(got) == len(want), table
        for w, g in zip(want, got, strict=True):
            assert g == w, (table, w[0])

    # The log exercised what it should: rejections recorded with their reason, authors named, the secret masked.
    errors = dict(b.execute("SELECT job_id, error FROM events WHERE error IS NOT NULL AND job_id IS NOT NULL").fetchall())
    assert "only the orchestrator may publish it" in errors["job-1"]
    assert "does not verify" in errors["job-2"]
    forged = b.execute("SELECT seq, job_id, error FROM events WHERE type = 'job.exited' AND error IS NOT NULL ORDER BY seq").fetchall()
    assert [j for _, j, _ in forged] == ["job-41", "job-121", "job-161", "job-201", "job-241"]
    assert all("does not verify" in e for _, _, e in forged) and forged[0][0] <= signed_log.vouched_upto < forged[1][0]
    assert errors["job-3"].startswith("unsigned job.succeeded")
    assert "no trusted announcement" in errors["job-4"]
    assert "signed by the agent of 'n1'" in errors["job-5"]
    assert {"job-6", "job-8"} <= set(errors)
    # The late event about job-9, settled thousands of records before: its view came back from the file.
    late = b.execute("SELECT max(seq) FROM events WHERE job_id = 'job-9'").fetchone()
    assert late == b.execute("SELECT last_seq FROM jobs WHERE job_id = 'job-9'").fetchone() and late[0] > signed_log.end - 10
    unauthored = b.execute("SELECT count(*) FROM events WHERE author IS NULL").fetchone()
    # Altered, unsigned, signed by a stranger; the five forged exits, the altered and the stranger's
    # checkpoints: nobody provably made them.
    assert unauthored == (10,)
    (payload,) = b.execute("SELECT payload FROM events WHERE job_id = 'job-7' AND type = 'job.requested'").fetchone() or ("",)
    assert "in-clear" not in payload and json.loads(payload)["env"]["DB_PASSWORD"] != "in-clear"
    statuses = dict(b.execute("SELECT status, count(*) FROM jobs GROUP BY 1").fetchall())
    assert statuses == {"succeeded": JOBS, "requested": 1}
    assert b.execute("SELECT count(*) FROM jobs WHERE exit_code <> 0").fetchone() == (0,)
    chain = b.execute("SELECT count(*) FROM events WHERE chain IS NULL OR digest IS NULL").fetchone()
    assert chain == (0,)
