"""Coordination against real agents: capacity under a burst, approvals, dependencies, validation."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from orchestrator.client import new_job_id
from schemas.events import JobRequested
from tests.conftest import Stack, wait_for


async def test_burst_of_300_jobs_on_3_agents_never_exceeds_capacity(stack: Stack) -> None:
    for name in ("burst-a", "burst-b", "burst-c"):
        await stack.start_agent(name, max_jobs=2, labels={"pool": "burst"})
    ids = [f"burst-{i:03d}" for i in range(300)]
    for job_id in ids:
        await stack.client.submit(job_id, JobRequested(command="echo $0 >/dev/null", labels={"pool": "burst"}))

    async def all_done() -> bool:
        rows = await stack.client.query(
            "SELECT count(*) FROM jobs WHERE job_id LIKE 'burst-%' AND status IN ('succeeded','failed','rejected','lost')"
        )
        return rows.rows[0][0] == len(ids)

    await wait_for(all_done, timeout=240, what="300 jobs done")
    rows = await stack.client.query("SELECT status, count(*) FROM jobs WHERE job_id LIKE 'burst-%' GROUP BY 1")
    assert dict(rows.rows) == {"succeeded": 300}

    events = await stack.client.query(
        "SELECT seq, type, job_id, node_id FROM events WHERE job_id LIKE 'burst-%' ORDER BY seq"
    )
    running: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)
    per_job: dict[str, list[str]] = defaultdict(list)
    for _seq, kind, job_id, node in events.rows:
        per_job[job_id].append(kind)
        if kind == "job.started":
            running[node] += 1
            peak[node] = max(peak[node], running[node])
        elif kind == "job.exited":
            running[node] -= 1
    assert set(peak) == {"burst-a", "burst-b", "burst-c"}  # spread over all three
    assert max(peak.values()) <= 2, dict(peak)
    for job_id in ids:  # every job ran and ended exactly once
        kinds = per_job[job_id]
        assert kinds.count("job.started") == 1 and kinds.count("job.exited") == 1 and kinds.count("job.succeeded") == 1, kinds
    print(f"burst: peak per node {dict(peak)}")


async def test_critical_command_on_production_waits_for_approval(stack: Stack) -> None:
    await stack.start_agent("prod-1", labels={"env": "prod"})
    # Critical by analysis, harmless by construction: `false &&` never runs the rm.
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command="false && rm -rf /", node="prod-1"))

    async def held() -> bool:
        row = await stack.job(job_id)
        return bool(row and row["status"] == "approval_required")

    await wait_for(held, what="job held for approval")
    row = await stack.job(job_id)
    assert row is not None and row["severity"] == "critical"
    history = [r.subject.split(".")[4] for r in await stack.client.history(job_id)]
    assert "dispatch" not in history and "started" not in history  # never runs before approval

    code, _, err = await stack.nexus("approve", job_id, "--by", "alice", "--reason", "change 42")
    assert code == 0, err
    row = await stack.wait_job(job_id)
    assert row["status"] == "failed" and row["exit_code"] == 1 and row["approved_by"] == "alice"
    history = [r.subject.split(".")[4] for r in await stack.client.history(job_id)]
    assert history.index("approved") < history.index("dispatch") < history.index("started")

    code, _, err = await stack.nexus("approve", job_id)
    assert code == 1 and b"not waiting for approval" in err


async def test_denied_job_never_runs(stack: Stack) -> None:
    await stack.start_agent("prod-2", labels={"env": "prod"})
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command="false && rm -rf /", node="prod-2"))
    await wait_for(lambda: _status(stack, job_id, "approval_required"), what="held")
    code, _, err = await stack.nexus("deny", job_id, "--reason", "not today")
    assert code == 0, err
    row = await stack.wait_job(job_id)
    assert row["status"] == "denied" and "not today" in row["reason"]
    history = [r.subject.split(".")[4] for r in await stack.client.history(job_id)]
    assert "started" not in history


async def test_after_waits_for_the_dependency(stack: Stack) -> None:
    await stack.client.submit("dep-first", JobRequested(command="sleep 0.5"))
    await stack.client.submit("dep-second", JobRequested(command="echo second", after=["dep-first"]))
    await stack.client.submit("dep-broken", JobRequested(command="exit 1"))
    await stack.client.submit("dep-never", JobRequested(command="echo never", after=["dep-broken"]))
    second = await stack.wait_job("dep-second")
    first = await stack.wait_job("dep-first")
    assert second["status"] == "succeeded" and second["requested_at"] < first["finished_at"]
    never = await stack.wait_job("dep-never")
    assert never["status"] == "rejected" and "dep-broken" in never["reason"]


async def test_validate_prints_the_brief_shape(stack: Stack) -> None:
    code, out, _ = await stack.nexus("validate", "--json", "--label", "env=prod", "--", "rm -rf /var/www/*")
    body = json.loads(out)
    assert code == 1 and body["valid"] is False and body["approval_required"] is True
    assert {"type", "message", "severity"} <= set(body["warnings"][0]) and body["warnings"][0]["severity"] == "critical"
    assert body["suggestions"]
    code, out, _ = await stack.nexus("validate", "--json", "--", 'echo "rm -rf /"')
    assert code == 0 and json.loads(out)["valid"] is True and json.loads(out)["warnings"] == []
    code, out, _ = await stack.nexus("validate", "--", "bash", "-c", "rm -rf /")
    assert code == 1 and b"critical" in out


async def _status(stack: Stack, job_id: str, status: str) -> bool:
    row = await stack.job(job_id)
    return bool(row and row["status"] == status)



async def test_nodes_optimal_answers_like_the_scheduler(stack: Stack) -> None:
    await stack.start_agent("eu-1", labels={"region": "eu", "cost": "3"}, max_jobs=2)
    await stack.start_agent("eu-2", labels={"region": "eu", "cost": "1"}, max_jobs=2)
    code, out, err = await stack.nexus("nodes", "--optimal", "--tool", "bash", "--label", "region=eu", "--json")
    assert code == 0, err
    body = json.loads(out)
    assert body["node_id"] == "eu-2" and "cost=1" in body["reason"]
    code, out, _ = await stack.nexus("nodes", "--optimal", "--tool", "no-such-tool")
    assert code == 1
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command="true", labels={"region": "eu"}))
    row = await stack.wait_job(job_id)
    assert row["node"] == "eu-2"


async def test_cancel_removes_a_queued_job_and_priority_orders_the_queue(stack: Stack, tmp_path: Path) -> None:
    await stack.stop_agent("node-1")
    await stack.start_agent("solo", max_jobs=1, labels={"pool": "solo"})
    blocker, low, high, dropped = (new_job_id() for _ in range(4))
    sel = {"pool": "solo"}
    gate = tmp_path / "gate"  # the blocker holds the only slot until the queue is checked
    await stack.client.submit(blocker, JobRequested(command=f"while [ ! -e {gate} ]; do sleep 0.05; done", labels=sel))
    await wait_for(lambda: _status(stack, blocker, "running"), what="blocker running")
    await stack.client.submit(low, JobRequested(command="true", labels=sel, priority=0))
    await stack.client.submit(dropped, JobRequested(command="true", labels=sel))
    await stack.client.submit(high, JobRequested(command="true", labels=sel, priority=5))
    for job_id in (low, dropped, high):
        await wait_for(lambda j=job_id: _status(stack, j, "queued"), what="queued")  # type: ignore[misc]
    code, _, err = await stack.nexus("cancel", dropped)
    assert code == 0, err
    assert (await stack.wait_job(dropped))["status"] == "cancelled"
    gate.touch()
    for job_id in (blocker, low, high):
        assert (await stack.wait_job(job_id))["status"] == "succeeded"
    started = await stack.client.query("SELECT job_id FROM events WHERE type = 'job.started' ORDER BY seq")
    order = [r[0] for r in started.rows]
    assert dropped not in order
    assert order.index(high) < order.index(low)  # higher priority first, though submitted later
