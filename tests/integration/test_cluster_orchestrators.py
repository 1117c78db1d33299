"""Issue 15: two orchestrators at once on one 3-node cluster (active-active, docs/operations.md).

Both fold the whole log into their own DuckDB file and decide; per-job optimistic
concurrency lets one decision per job state win, the other re-reads. Capacity is
counted by each alone, so the agent enforces --max-jobs itself. Shown here, on real
processes: every job exactly once, no node above its maximum at any instant (the
jobs record it themselves under flock), a kill -9 of one orchestrator mid-burst
leaves the other to finish, and both answer queries with the same state at the
same applied sequence.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from orchestrator.core.decide import argv_for
from schemas import msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import JobCancel, JobDispatch
from schemas.limits import DISPATCH_TTL_S
from tests.conftest import wait_for
from tests.integration.cluster_support import NexusCluster, Work, facts_once

pytestmark = pytest.mark.timeout(240)
MAX_JOBS = 2


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NexusCluster]:
    c = NexusCluster(tmp_path)
    try:
        await c.start()
        yield c
    finally:
        await c.close()


async def test_two_orchestrators_one_killed_mid_burst(cluster: NexusCluster) -> None:
    work = Work(cluster.root / "work")
    await cluster.start_orchestrator("orchestrator-a")
    await cluster.start_orchestrator("orchestrator-b")
    for node in ("n1", "n2", "n3"):
        await cluster.start_agent(node, max_jobs=MAX_JOBS)

    ids = [f"burst-{i:03d}" for i in range(90)]
    acked = {job_id: await cluster.submit(job_id, work.command(job_id, 0.3)) for job_id in ids}

    async def a_third_done() -> bool:
        got = await cluster.statuses(ids)
        return got is not None and sum(s == "succeeded" for s in got.values()) >= len(ids) // 3

    await wait_for(a_third_done, 120, what="a third of the burst done")
    # Both took part in deciding before one dies.
    for name in ("orchestrator-a", "orchestrator-b"):
        assert "orchestrator.caught_up" in cluster.log_text(name) or "orchestrator.started" in cluster.log_text(name)
    await cluster.kill(cluster.orchestrators["orchestrator-a"])

    ended = await cluster.all_ended(ids, 180)
    assert {j: s for j, s in ended.items() if s != "succeeded"} == {}
    assert {j: n for j in ids if (n := work.runs(j)) != 1} == {}, "every command ran exactly once"
    peaks = work.peak()
    assert set(peaks) == {"n1", "n2", "n3"} and max(peaks.values()) <= MAX_JOBS, peaks
    assert {j: seq for j, seq in acked.items() if await cluster.stored_subject(seq) != f"nexus.evt.job.{j}.requested"} == {}
    assert await facts_once(cluster, ids) == {}

    # The killed one comes back on its own file, catches up, and both answer alike.
    await cluster.start_orchestrator("orchestrator-a")
    sql = "SELECT job_id, status, node, attempt FROM jobs WHERE job_id LIKE 'burst-%' ORDER BY job_id"

    async def both_agree() -> bool:
        answers = {}
        for _ in range(16):
            name, result = await cluster.ask(sql)
            assert result.error is None, result.error
            answers[name] = result
        if set(answers) != {"orchestrator-a", "orchestrator-b"}:
            return False
        a, b = answers["orchestrator-a"], answers["orchestrator-b"]
        return a.checkpoint == b.checkpoint and a.rows == b.rows and len(a.rows) == len(ids)

    await wait_for(both_agree, 60, what="both orchestrators answering the same rows at the same applied sequence")

    # The log both wrote stays evidence (checkpoints signed by either), and replays to the same jobs.
    code, out = await cluster.nexus("audit", "verify")
    assert code == 0, out
    replayed = cluster.root / "replayed.duckdb"
    code, out = await cluster.nexus("replay", "--db", str(replayed))
    assert code == 0, out
    with duckdb.connect(str(replayed), read_only=True) as con:
        rows = con.execute(sql).fetchall()
    _, now = await cluster.ask(sql)
    assert [list(r) for r in rows] == now.rows


async def test_the_agent_refuses_to_run_beyond_max_jobs(cluster: NexusCluster) -> None:
    """What two orchestrators racing can do at worst: more dispatches to a node than it
    allows. Here the test itself signs them (as an admin identity, as an orchestrator
    would) and sends 6 at once to a node of --max-jobs 2: they are accepted, at most 2
    run at any instant, each exactly once; one cancelled while waiting never starts."""
    work = Work(cluster.root / "work")
    await cluster.start_orchestrator("orchestrator-a")
    await cluster.start_agent("n1", max_jobs=MAX_JOBS)
    assert cluster.observer is not None
    bus = cluster.observer.bus
    now = datetime.now(UTC)
    ids = [f"over-{i}" for i in range(6)]
    for job_id in ids:
        command = work.command(job_id, 0.5)
        ev = JobDispatch(ts=now, attempt=1, tool="bash", command=command, argv=argv_for("bash", command),
                         expires_at=now + timedelta(seconds=DISPATCH_TTL_S))  # fmt: skip
        await bus.publish(Outgoing(subjects.dispatch(job_id, "n1"), ev, msgids.job(job_id, "dispatch", 1)))
    waiting = ids[-1]
    await wait_for(lambda: f"job_id={waiting}" in _slot_waits(cluster), 60, what=f"{waiting} waiting for a slot")
    cancel = JobCancel(ts=datetime.now(UTC), attempt=1)
    await bus.publish(Outgoing(subjects.cancel(waiting, "n1"), cancel, msgids.job(waiting, "cancel", 1)))

    async def exited(job_id: str) -> list[str]:  # the agent's facts (the orchestrator never saw these jobs requested)
        return [r.kind for r in await cluster.records(job_id) if r.kind == "exited"]

    async def all_exited() -> bool:
        return all([await exited(j) for j in ids])

    await wait_for(all_exited, 60, what="every dispatch to end")
    assert {j: len(await exited(j)) for j in ids} == dict.fromkeys(ids, 1)  # fmt: skip
    assert {j: work.runs(j) for j in ids} == {**dict.fromkeys(ids[:-1], 1), waiting: 0}
    assert work.peak() == {"n1": MAX_JOBS}
    last = next(r for r in await cluster.records(waiting) if r.kind == "exited")
    assert getattr(last.event, "killed_by", None) == "cancel"


def _slot_waits(cluster: NexusCluster) -> str:
    return "\n".join(line for line in cluster.log_text("agent-n1").splitlines() if "job.waiting_for_slot" in line)
