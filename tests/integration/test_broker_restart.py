"""kill -9 of nats-server mid-burst, restart on the same store: everything resumes by itself.

With 3 agents and 200 jobs in flight, nothing acked is lost, nothing runs twice,
every job ends terminal, and a job waiting for a node that is merely not heard
from waits (queued) instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bus.nats_bus import NatsBus
from orchestrator.client import NexusClient, new_job_id
from orchestrator.embedded import EmbeddedNats
from schemas.events import JobRequested
from tests.conftest import Stack, wait_for

TERMINAL = ("rejected", "denied", "succeeded", "failed", "timed_out", "cancelled", "lost")


@pytest.fixture
async def server_and_stack(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedNats, Stack]]:
    server = EmbeddedNats(tmp_path / "jetstream", port=-1)
    url = await server.start()
    bus = await NatsBus.connect(url, name="test-client", daemon=True)
    stack = Stack(url=url, db=tmp_path / "nexus.duckdb", tmp=tmp_path, client=NexusClient(bus))
    try:
        await stack.start_orchestrator()
        yield server, stack
    finally:
        for node in list(stack.agents):
            await stack.stop_agent(node)
        while stack.orchestrators:
            await stack.stop_orchestrator()
        await bus.close()
        await server.stop()


async def _restart(server: EmbeddedNats, down_s: float) -> EmbeddedNats:
    assert server.proc is not None
    server.proc.kill()  # kill -9: no goodbye to anyone
    await server.proc.wait()
    await asyncio.sleep(down_s)  # the outage itself is the scenario, not a wait for a condition
    again = EmbeddedNats(server.store_dir, port=server.port)
    await again.start()
    return again


async def _statuses(stack: Stack, ids: list[str]) -> dict[str, str]:
    rows = await stack.client.query("SELECT job_id, status FROM jobs WHERE job_id IN (SELECT unnest(?::VARCHAR[]))", [ids])
    return {r[0]: r[1] for r in rows.rows}


@pytest.mark.timeout(240)
async def test_broker_kill_and_restart_mid_burst(server_and_stack: tuple[EmbeddedNats, Stack], tmp_path: Path) -> None:
    server, stack = server_and_stack
    for n in range(3):
        await stack.start_agent(f"node-{n}", max_jobs=4)
    marks = tmp_path / "marks"
    marks.mkdir()
    ids = [new_job_id() + f"-{i}" for i in range(200)]
    for job_id in ids:
        # Each run leaves one line: a command run twice would leave two.
        await stack.client.submit(job_id, JobRequested(command=f"echo {job_id} >> {marks}/{job_id}; sleep 0.2"))

    async def some_done() -> bool:
        return sum(s in TERMINAL for s in (await _statuses(stack, ids)).values()) >= 20

    await wait_for(some_done, 60, what="20 jobs done before the kill")
    server = await _restart(server, down_s=3.0)
    try:
        async def all_done() -> dict[str, str] | None:
            with contextlib.suppress(Exception):
                st = await _statuses(stack, ids)
                return st if len(st) == len(ids) and all(s in TERMINAL for s in st.values()) else None
            return None

        statuses = await wait_for(all_done, 150, what="every job terminal after the broker came back")
        counts: dict[str, int] = {}
        for s in statuses.values():
            counts[s] = counts.get(s, 0) + 1
        # Nothing rejected for a node that was only not heard from; at most the jobs
        # that ran during the outage may be `lost` (outcome unknown), never re-run.
        assert counts.get("rejected", 0) == 0, counts
        assert counts.get("succeeded", 0) + counts.get("lost", 0) == len(ids), counts
        for job_id in ids:
            path = marks / job_id
            lines = path.read_text().splitlines() if path.exists() else []
            assert len(lines) <= 1, f"{job_id} ran {len(lines)} times"
            if statuses[job_id] == "succeeded":
                assert lines == [job_id]

        # A new job pinned to a live node runs (the heartbeat watch came back).
        pinned = new_job_id()
        await stack.client.submit(pinned, JobRequested(command="echo pinned", node="node-1"))
        assert (await stack.wait_job(pinned, timeout=30))["status"] == "succeeded"
    finally:
        # The services stop while the restarted server still runs (the outage under test is over),
        # then the server: the fixture's own teardown holds the first, killed one.
        for node in list(stack.agents):
            await stack.stop_agent(node)
        while stack.orchestrators:
            await stack.stop_orchestrator()
        await server.stop()
