"""The projection's active jobs keep their indexes (queued, slots per node, settled) in step
with every change, and the planner reads the same fleet and due jobs from them as a full
scan of every active job gives (what it did before the indexes)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from orchestrator.core import planner
from orchestrator.core.active_jobs import ActiveJobs
from orchestrator.core.views import JobStatus, JobView
from schemas.values import ExitCodeTest

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NODES = ["n1", "n2", "n3", None, ""]


def scanned_load(jobs: dict[str, JobView], pending: planner.Pending) -> dict[str, int]:
    """The slots taken, by a walk over every active job (the planner's former way)."""
    load: dict[str, int] = {}
    for job_id, job in jobs.items():
        node = job.node if job.on_node else None
        mine = pending.get(planner.job_key(job_id))
        if mine is not None and mine.seq > job.last_seq and mine.node:
            node = mine.node
        if node:
            load[node] = load.get(node, 0) + 1
    return load


def random_job(rnd: random.Random, job_id: str) -> JobView:
    status = rnd.choice(list(JobStatus))
    retest = [ExitCodeTest()] if rnd.random() < 0.2 else []
    return JobView(job_id=job_id, status=status, command="true", node=rnd.choice(NODES),
                   last_seq=rnd.randint(1, 50), first_seq=rnd.randint(1, 50), retest=retest)  # fmt: skip


def test_the_indexes_follow_every_put_and_drop() -> None:
    rnd = random.Random(7)
    plain: dict[str, JobView] = {}
    active = ActiveJobs()
    for step in range(5_000):
        job_id = f"j{rnd.randint(1, 60)}"
        if rnd.random() < 0.2:
            plain.pop(job_id, None)
            active.drop(job_id)
        else:
            plain[job_id] = random_job(rnd, job_id)
            active.put(plain[job_id])
        if step % 50:
            continue
        pending: dict[str, planner.InFlight] = {
            planner.job_key(f"j{rnd.randint(1, 80)}"): planner.InFlight(seq=rnd.randint(1, 50), node=rnd.choice(NODES))
            for _ in range(10)
        }
        pending[planner.pipeline_key("p1")] = planner.InFlight(seq=99, node="n1")  # not a job's: no slot
        assert dict(active) == plain
        assert set(active.queued) == {j for j, v in plain.items() if v.status == "queued"}
        assert active.settled == {j for j, v in plain.items() if v.settled}
        assert active.load == scanned_load(plain, {})
        fleet = planner.fleet({}, {}, active, pending, ttl_s=10, quiet_since=NOW)
        assert fleet.load == scanned_load(plain, pending)
        due = planner.jobs_due(active, ["j1", "j999"], active.queued, pending, lambda _u, p: p)
        expected = {j for j, v in plain.items() if v.status == "queued" or j == "j1"}
        expected = {j for j in expected if not planner.waiting(pending, planner.job_key(j), plain[j].last_seq)}
        assert {v.job_id for v in due} == expected
        assert ActiveJobs(active.snapshot()).load == active.load


def test_due_jobs_come_by_priority_then_by_request_order() -> None:
    rnd = random.Random(11)
    seqs = rnd.sample(range(1, 2**63), 500)  # any sequence JetStream may give (below 2**64)
    views = [JobView(job_id=f"j{i}", status="queued", command="true", first_seq=seq, priority=rnd.randint(-3, 3))
             for i, seq in enumerate(seqs)]  # fmt: skip
    active = ActiveJobs({v.job_id: v for v in views})
    touched = JobView(job_id="t", status="validated", command="true", first_seq=2**63, priority=9)
    active.put(touched)
    due = planner.jobs_due(active, ["t"], active.queued, {}, lambda _user, priority: priority)
    assert [v.job_id for v in due] == [v.job_id for v in sorted([*views, touched], key=lambda v: (-v.priority, v.first_seq))]
    # While no slot is free the queue is not due at all: only what the batch touched.
    alone = planner.jobs_due(active, ["j1", "t"], (), {}, lambda _user, priority: priority)
    assert [v.job_id for v in alone] == sorted(["t", "j1"], key=lambda j: (-active[j].priority, active[j].first_seq))
