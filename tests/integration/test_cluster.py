"""Issue 15: Nexus on a real 3-node JetStream cluster (replicas 3, TLS, authenticated routes).

    leader loss       kill -9 the NEXUS_EVENTS stream leader with jobs in flight, then kill -9
                      a non-leader and restart it: every acked event is still there, no
                      command ran twice, every job ended, facts once each
    agent failover    an agent whose server dies mid-job reconnects to another member, keeps
                      running the job, and its facts and output arrive once, byte for byte
    follower loss     the member holding the orchestrator's log follower (an R1 ordered consumer)
                      dies: the orchestrator follows again and decides what came meanwhile
    forming cluster   an orchestrator started while only one member is up (no JetStream meta
                      leader) waits, says so, and sets up its streams once the cluster forms
    bucket election   the heartbeat bucket's leader dies: while it elects another, no heartbeat is
                      stored, and no node is declared lost for it (even with a TTL shorter than
                      the election)

Two orchestrators at once are in test_cluster_orchestrators.py. Speed (stall length,
dispatch latency) is measured by bench/cluster_failover.py, not asserted here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nats.errors
import nats.js.errors
import pytest

from schemas import subjects
from tests.conftest import wait_for
from tests.integration.cluster_support import NexusCluster, Work, facts_once
from tests.integration.ops_support import CLUSTER

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NexusCluster]:
    c = NexusCluster(tmp_path)
    try:
        await c.start()
        yield c
    finally:
        await c.close()


async def check_exactly_once(cluster: NexusCluster, work: Work, acked: dict[str, int]) -> None:
    ids = sorted(acked)
    ended = await cluster.all_ended(ids, 120)
    assert {j: s for j, s in ended.items() if s != "succeeded"} == {}
    assert {j: n for j in ids if (n := work.runs(j)) != 1} == {}, "every command ran exactly once"
    # Every acknowledged `requested` is still in the log where its ack said.
    lost = {j: seq for j, seq in acked.items() if await cluster.stored_subject(seq) != f"nexus.evt.job.{j}.requested"}
    assert lost == {}
    assert await facts_once(cluster, ids) == {}


async def test_leader_loss_then_member_restart(cluster: NexusCluster) -> None:
    work = Work(cluster.root / "work")
    await cluster.start_orchestrator("orchestrator-a")
    for node in ("n1", "n2", "n3"):
        await cluster.start_agent(node, max_jobs=4)
    info = await cluster.js.stream_info("NEXUS_EVENTS")
    assert info.config.num_replicas == 3 and info.cluster is not None and len(info.cluster.replicas or []) == 2

    acked: dict[str, int] = {}
    first = [f"lead-{i:03d}" for i in range(36)]
    for job_id in first:
        acked[job_id] = await cluster.submit(job_id, work.command(job_id, 1.0))

    async def some_running() -> bool:
        got = await cluster.statuses(first)
        return got is not None and sum(s in ("running", "succeeded") for s in got.values()) >= 3

    await wait_for(some_running, 60, what="jobs in flight")
    leader = await cluster.stream_leader()
    await cluster.kill_member(leader)
    # Submitted while the old leader is gone: the stream elects another and takes them.
    during = [f"during-{i:03d}" for i in range(12)]
    for job_id in during:
        acked[job_id] = await cluster.submit(job_id, work.command(job_id, 0.2))
    assert await cluster.stream_leader() != leader
    await check_exactly_once(cluster, work, acked)

    # A non-leader dies and comes back on its store; the cluster keeps going meanwhile.
    await cluster.restart_member(leader)
    leader = await cluster.stream_leader()
    follower = next(n for n in CLUSTER if n != leader)
    await cluster.kill_member(follower)
    after = [f"after-{i:03d}" for i in range(24)]
    for job_id in after[:12]:
        acked[job_id] = await cluster.submit(job_id, work.command(job_id, 0.2))
    await cluster.restart_member(follower)
    for job_id in after[12:]:
        acked[job_id] = await cluster.submit(job_id, work.command(job_id, 0.2))
    await check_exactly_once(cluster, work, acked)
    assert set(work.peak()) == {"n1", "n2", "n3"}
    assert max(work.peak().values()) <= 4


async def test_agent_loses_its_server_mid_job(cluster: NexusCluster) -> None:
    await cluster.start_orchestrator("orchestrator-a")
    await cluster.start_agent("solo", max_jobs=2)
    marks = cluster.root / "marks"
    marks.mkdir()
    # Prints a line every 0.1 s for about 4 s; the agent's server dies in the middle.
    lines = 40
    command = f"echo run >> {marks}/job; for i in $(seq 1 {lines}); do echo line-$i; sleep 0.1; done"
    seq = await cluster.submit("failover-1", command)

    async def printing() -> bool:
        got = await cluster.statuses(["failover-1"])
        return got == {"failover-1": "running"}

    await wait_for(printing, 60, what="the job running")
    member = await wait_for(lambda: cluster.member_of("nexus-agent-solo"), 30, what="the agent's connection")
    await cluster.kill_member(member)
    # It reconnects to another member by itself (it was given all three URLs).
    await wait_for(lambda: cluster.member_of("nexus-agent-solo"), 30, what="the agent connected again")
    assert await cluster.member_of("nexus-agent-solo") != member

    ended = await cluster.all_ended(["failover-1"], 90)
    assert ended == {"failover-1": "succeeded"}
    assert (marks / "job").read_text() == "run\n", "the command ran once"
    assert await cluster.stored_subject(seq) == "nexus.evt.job.failover-1.requested"
    assert await facts_once(cluster, ["failover-1"]) == {}
    kinds = [r.kind for r in await cluster.history("failover-1")]
    assert kinds.count("started") == 1 and kinds.count("exited") == 1, kinds
    # Output: every chunk once, in order, and the bytes the command printed.
    assert cluster.observer is not None
    chunks = [c async for c in cluster.observer.bus.output_chunks("failover-1")]
    assert [c.number for c in chunks] == list(range(1, len(chunks) + 1))
    text = b"".join(c.data for c in chunks).decode()
    assert text == "".join(f"line-{i}\n" for i in range(1, lines + 1))


async def test_orchestrator_waits_for_the_cluster_to_form(tmp_path: Path) -> None:
    cluster = NexusCluster(tmp_path)
    try:
        await cluster.start(members=1)  # one of three: no quorum, so no JetStream meta leader
        proc = await cluster.start_orchestrator("orchestrator-a", wait=False)
        await wait_for(lambda: "streams.waiting" in cluster.log_text("orchestrator-a"), 60, what="the orchestrator waiting")
        assert proc.returncode is None
        assert "orchestrator.started" not in cluster.log_text("orchestrator-a")
        await cluster.start_rest()
        await wait_for(lambda: "orchestrator.started" in cluster.log_text("orchestrator-a"), 90, what="the orchestrator started")
        assert "streams.ready" in cluster.log_text("orchestrator-a")
        info = await cluster.js.stream_info("NEXUS_EVENTS")
        assert info.config.num_replicas == 3
        await cluster.start_agent("n1")
        work = Work(tmp_path / "work")
        seq = await cluster.submit("formed-1", work.command("formed-1", 0))
        assert await cluster.all_ended(["formed-1"], 60) == {"formed-1": "succeeded"}
        assert await cluster.stored_subject(seq) == "nexus.evt.job.formed-1.requested"
    finally:
        await cluster.close()


async def test_the_orchestrator_follows_again_when_its_consumer_dies(cluster: NexusCluster) -> None:
    work = Work(cluster.root / "work")
    await cluster.start_orchestrator("orchestrator-a")
    await cluster.start_agent("n1", max_jobs=4)
    acked = {"warm-1": await cluster.submit("warm-1", work.command("warm-1", 0))}
    await cluster.all_ended(["warm-1"], 60)
    # The orchestrator's ordered consumer: the stream's one consumer without a durable name
    # (an agent's short-lived reads are named read-...).
    infos = await cluster.js.consumers_info("NEXUS_EVENTS")
    ordered = [i for i in infos if not i.config.durable_name and not i.name.startswith("read-")]
    hosts = [i.cluster.leader for i in ordered if i.cluster is not None]
    assert len(hosts) == 1 and hosts[0] in CLUSTER, hosts
    await cluster.kill_member(hosts[0])
    for i in range(6):
        job_id = f"meanwhile-{i}"
        acked[job_id] = await cluster.submit(job_id, work.command(job_id, 0.1))
    await check_exactly_once(cluster, work, acked)


async def test_no_node_is_lost_while_the_heartbeat_bucket_elects_a_leader(cluster: NexusCluster) -> None:
    ttl = 3  # shorter than any election (4 to 9 s): without the check every node would be lost
    await cluster.start_orchestrator("orchestrator-a", "--node-ttl", str(ttl))
    for node in ("n1", "n2"):
        await cluster.start_agent(node)
    bucket = f"KV_{subjects.NODES_BUCKET}"
    leader = await cluster.stream_leader(bucket)
    # The orchestrator keeps its connection (a reconnect would excuse the silence by itself).
    home = await cluster.member_of("nexus-orchestrator")
    if home == leader:
        await cluster.js._nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{bucket}", b"", timeout=5)
        leader = await wait_for(lambda: _other_leader(cluster, bucket, home), 30, what="the bucket's leader elsewhere")
    await cluster.kill_member(leader)

    async def lost() -> int | None:
        """`node.lost` events in the log (None while the log itself answers no one)."""
        try:
            info = await cluster.js.stream_info(subjects.EVENTS_STREAM, subjects_filter="nexus.evt.node.*.lost")
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
            return None
        return sum((info.state.subjects or {}).values())

    async def over() -> bool:
        return "nodes.heartbeats_resumed" in cluster.log_text("orchestrator-a") or bool(await lost())

    await wait_for(over, 60, what="the election to end")

    async def counted() -> tuple[int] | None:
        n = await lost()
        return None if n is None else (n,)

    assert await wait_for(counted, 30, what="the log answering") == (0,)
    # Then for two TTLs more: the orchestrator's heartbeat watch may have lost its consumer with
    # the leader and read nothing until it is made again (its idle time, 10 s); that silence is
    # the watch's, not the nodes' (it had every node lost ~3 s after the election, 1 run in 3).
    window_end = asyncio.get_running_loop().time() + 2 * ttl
    while asyncio.get_running_loop().time() < window_end:  # an absence over a window: polled to its end
        assert await wait_for(counted, 30, what="the log answering") == (0,)
        await asyncio.sleep(0.25)
    assert "nodes.heartbeats_stalled" in cluster.log_text("orchestrator-a")
    rows = await cluster.try_query("SELECT node_id, status FROM nodes ORDER BY node_id")
    assert rows is not None and rows.rows == [["n1", "online"], ["n2", "online"]]


async def _other_leader(cluster: NexusCluster, stream: str, not_on: str | None) -> str | None:
    leader = await cluster.stream_leader(stream)
    return leader if leader != not_on else None
