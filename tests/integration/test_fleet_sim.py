"""The fleet simulator (bench/fleet_sim.py) speaks the real protocol: 20 simulated agents, each
with its own agent credentials, against a real orchestrator on an authenticated nats-server.

All register; a fan-out of `echo hi` (one job per node) ends `succeeded` everywhere with the
output stored, and every node fact is signed by the node that ran the job; a `false` fails."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.fleet_sim import Fleet, node_name
from bus.nats_bus import NatsBus
from bus.nats_setup import MAX_CONSUMERS
from orchestrator.client import NexusClient, new_job_id
from orchestrator.core import planner
from orchestrator.embedded import EmbeddedNats
from orchestrator.service import Orchestrator
from orchestrator.store import DuckDBStore
from orchestrator.trust.keyring import Keyring
from schemas import subjects
from schemas.events import JobRequested
from tests.conftest import wait_for

NODES = 20
TERMINAL = ("succeeded", "failed", "rejected", "timed_out", "cancelled", "lost")


@dataclass
class SimStack:
    orchestrator: Orchestrator
    admin: NatsBus
    client: NexusClient
    fleet: Fleet


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[SimStack]:
    ring = Keyring(tmp_path / "keys")
    ring.ensure()
    orch_creds = ring.issue("admin", "orchestrator", service=True).path
    alice = ring.issue("submitter", "alice").path
    creds_dir = tmp_path / "sim-creds"
    for i in range(NODES):
        ring.issue("agent", node_name(i), node=node_name(i), out=creds_dir / f"{node_name(i)}.creds")
    server = EmbeddedNats(tmp_path / "js", port=-1, auth=ring.server_config())
    url = await server.start()
    admin = await NatsBus.connect(url, name="test-orchestrator", daemon=True, creds=orch_creds)
    store = DuckDBStore(tmp_path / "nexus.duckdb")
    orch = Orchestrator(admin, store, node_ttl_s=5.0)
    task = asyncio.create_task(orch.run())
    client_bus = await NatsBus.connect(url, name="test-alice", creds=alice)
    fleet = Fleet(url, creds_dir, NODES, heartbeat_s=0.5)
    try:
        await wait_for(lambda: orch.caught_up.is_set() or task.done(), what="orchestrator caught up")
        async with asyncio.timeout(60):
            await fleet.start()
        yield SimStack(orch, admin, NexusClient(client_bus), fleet)
    finally:
        await fleet.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client_bus.close()
        await admin.close()
        store.close()
        await server.stop()


async def test_simulated_fleet_registers_and_runs_a_fan_out(sim: SimStack) -> None:
    nodes = [node_name(i) for i in range(NODES)]
    orch = sim.orchestrator
    await wait_for(lambda: all(n in orch.nodes and orch.nodes[n].status == "online" for n in nodes), what="every simulated node online")

    jobs = {new_job_id(): n for n in nodes}
    failing = new_job_id()
    await asyncio.gather(*(sim.client.submit(j, JobRequested(command="echo hi", node=n)) for j, n in jobs.items()))
    await sim.client.submit(failing, JobRequested(command="false", node=nodes[0]))
    ids = [*jobs, failing]

    async def finished() -> dict[str, str] | None:
        rows = await sim.client.query(
            f"SELECT job_id, status, node FROM jobs WHERE job_id IN ({','.join('?' for _ in ids)})", ids
        )
        found = {r[0]: (r[1], r[2]) for r in rows.rows}
        done = len(found) == len(ids) and all(s in TERMINAL for s, _ in found.values())
        return {j: f"{s}@{n}" for j, (s, n) in found.items()} if done else None

    statuses = await wait_for(finished, 60, what="the fan-out to finish")
    assert {j: statuses[j] for j in jobs} == {j: f"succeeded@{n}" for j, n in jobs.items()}
    assert statuses[failing] == f"failed@{nodes[0]}"

    # Folded in, the orchestrator's decisions are no longer in flight: it keeps nothing per job it
    # ever decided (its in-flight map grew by every job until a restart), nor the finished jobs.
    assert {planner.job_key(j) for j in ids} & orch.runner.pending.keys() == set()
    assert set(ids) & set(orch.jobs) == set() and not orch.jobs.queued and orch.jobs.load == {}

    for job_id in jobs:  # the output each simulated agent published, as stored
        chunks = [c.data async for c in sim.admin.output_chunks(job_id)]
        assert b"".join(chunks) == b"hi\n"

    # Every fact of a job was signed by the identity of the node that ran it.
    cols, rows = orch.store.query(
        "SELECT job_id, node_id, author, author_role FROM events WHERE type IN ('job.accepted', 'job.started', 'job.exited')"
    )
    facts = [r for r in rows if r[0] in jobs]
    assert len(facts) == 3 * NODES
    assert all(author == node == jobs[job_id] and role == "agent" for job_id, node, author, role in facts), facts
    assert cols == ["job_id", "node_id", "author", "author_role"]


async def test_more_than_a_thousand_nodes_get_a_dispatch_consumer(tmp_path: Path) -> None:
    """nats-server 2.15 limits a stream to 1,000 consumers unless it sets its own limit; one
    durable per node: node 1,001 was refused. A stream made before the limit gets it on start
    (NEXUS_EVENTS holds the durables of agents whose credentials predate NEXUS_DISPATCH)."""
    server = EmbeddedNats(tmp_path / "js", port=-1)
    url = await server.start()
    bus = await NatsBus.connect(url, name="test-limits")
    try:
        # As an older Nexus made it: no consumer limit of its own.
        await bus.js.add_stream(name=subjects.EVENTS_STREAM, subjects=[subjects.EVENTS_ALL])
        await bus.ensure_streams()
        info = await bus.js.stream_info(subjects.EVENTS_STREAM)
        assert info.config.max_consumers == MAX_CONSUMERS
        info = await bus.js.stream_info(subjects.DISPATCH_STREAM)  # where the durables are now
        assert info.config.max_consumers == MAX_CONSUMERS
        gate = asyncio.Semaphore(32)

        async def provision(i: int) -> None:
            async with gate:
                await bus.provision_dispatches(f"n{i}")

        await asyncio.gather(*(provision(i) for i in range(1001)))
        info = await bus.js.stream_info(subjects.DISPATCH_STREAM)
        assert info.state.consumer_count == 1001
    finally:
        await bus.close()
        await server.stop()
