"""The orchestrator's heartbeat watch only takes beats in: what they change about a node
(`registered`, `lost`) is published beside it, never awaited inside it. Awaited there, one
ack after the other, 5,000 nodes held the watch more than a TTL behind their own beats and
were declared lost while they beat (bench/fleet.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from bus.nats_bus import NatsBus
from orchestrator.core.planner import Plan
from orchestrator.runner import Published
from schemas.events import NodeHeartbeat
from tests.conftest import Stack, wait_for


def beat(node: str) -> NodeHeartbeat:
    return NodeHeartbeat(node=node, ts=datetime.now(UTC), tools=["bash"], max_jobs=2)


async def test_beats_are_taken_in_while_a_node_decision_waits_for_its_ack(stack: Stack) -> None:
    orch = stack.orchestrator
    await wait_for(orch.fleet_known.is_set, what="the fleet known")
    gate = asyncio.Event()
    held: list[str] = []
    publish = orch.runner.publish

    async def acked_late(plan: Plan) -> Published:
        if plan.key.startswith("node:") and not gate.is_set():
            held.append(plan.key)
            await gate.wait()
        return await publish(plan)

    orch.runner.publish = acked_late  # type: ignore[method-assign]
    bus = await NatsBus.connect(stack.url, name="test-beats")
    try:
        await bus.put_heartbeat(beat("n1"))
        await wait_for(lambda: "node:n1" in held, what="n1's registration waiting for its ack")
        await bus.put_heartbeat(beat("n1"))  # n1 beats again while its registration is in flight
        await bus.put_heartbeat(beat("n2"))
        await wait_for(lambda: "n2" in orch.beats, what="n2's beat taken in while n1's decision waits")
        assert not gate.is_set()

        gate.set()
        await wait_for(
            lambda: all(n in orch.nodes and orch.nodes[n].status == "online" for n in ("n1", "n2")), what="both registered"
        )
    finally:
        gate.set()
        await bus.close()
