"""The projection resumes from its checkpoint after a restart, and replay rebuilds identical tables."""

from __future__ import annotations

import duckdb

from orchestrator.client import new_job_id
from schemas.events import JobRequested
from tests.conftest import Stack, wait_for

TABLES = {"events": "seq", "jobs": "job_id", "nodes": "node_id"}


async def _submit(stack: Stack, n: int, command: str = "echo run") -> list[str]:
    ids = []
    for _ in range(n):
        job_id = new_job_id()
        await stack.client.submit(job_id, JobRequested(command=command))
        ids.append(job_id)
    return ids


async def _event_seq_stats(stack: Stack) -> list[int]:
    rows = await stack.client.query("SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM events")
    return rows.rows[0]


async def test_restart_resumes_from_checkpoint_without_loss_or_duplicates(stack: Stack) -> None:
    first = await _submit(stack, 3)
    for job_id in first:
        assert (await stack.wait_job(job_id))["status"] == "succeeded"
    checkpoint = stack.orchestrator.applied_seq
    await stack.stop_orchestrator()

    # While no orchestrator runs, jobs pile up in the log; nothing is lost.
    second = await _submit(stack, 4)
    await stack.start_orchestrator()
    assert stack.orchestrators[-1][3].checkpoint() >= checkpoint
    for job_id in second:
        assert (await stack.wait_job(job_id))["status"] == "succeeded"

    last = await stack.client.bus.last_seq()
    await wait_for(lambda: stack.orchestrator.applied_seq >= last, what="projection caught up")
    count, distinct, low, high = await _event_seq_stats(stack)
    assert (count, distinct, low) == (high, high, 1)  # every event once, no gap
    started = await stack.client.query("SELECT job_id, count(*) FROM events WHERE type = 'job.started' GROUP BY 1")
    assert sorted(r[0] for r in started.rows) == sorted(first + second)
    assert all(r[1] == 1 for r in started.rows)


async def test_replay_rebuilds_identical_tables(stack: Stack) -> None:
    ids = await _submit(stack, 3)
    ids += await _submit(stack, 1, "exit 4")
    for job_id in ids:
        await stack.wait_job(job_id)
    audit = stack.tmp / "audit.duckdb"
    code, _, err = await stack.nexus("replay", "--db", str(audit))
    assert code == 0, err
    assert b"replayed" in err
    code, _, err = await stack.nexus("replay", "--db", str(audit))
    assert code == 1 and b"exists" in err  # never overwrites by accident

    replayed_to = duckdb.connect(str(audit), read_only=True).execute("SELECT max(seq) FROM events").fetchone()[0]
    await wait_for(lambda: stack.orchestrator.applied_seq >= replayed_to, what="live projection at the replayed seq")
    await stack.stop_orchestrator()
    live = duckdb.connect(str(stack.db), read_only=True)
    copy = duckdb.connect(str(audit), read_only=True)
    for table, key in TABLES.items():
        where = f"WHERE seq <= {replayed_to}" if table == "events" else ""
        a = live.execute(f"SELECT * FROM {table} {where} ORDER BY {key}").fetchall()
        b = copy.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall()
        assert a == b, table
        assert a, table


async def test_replay_until_a_sequence(stack: Stack) -> None:
    (job_id,) = await _submit(stack, 1)
    await stack.wait_job(job_id)
    history = await stack.client.history(job_id)
    requested_seq = history[0].seq
    audit = stack.tmp / "until.duckdb"
    code, _, err = await stack.nexus("replay", "--db", str(audit), "--until", str(requested_seq))
    assert code == 0, err
    con = duckdb.connect(str(audit), read_only=True)
    assert con.execute("SELECT max(seq) FROM events").fetchone()[0] == requested_seq
    assert con.execute("SELECT status FROM jobs WHERE job_id = ?", [job_id]).fetchone()[0] == "requested"
