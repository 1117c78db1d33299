"""Node queries: the optimal node, ranked once (the core's `decide.optimal_node`: live, capable,
free, then `prefer` and cost), for `nexus nodes --optimal` and `GET /api/v1/nodes/optimal`."""

from __future__ import annotations

from datetime import datetime

import msgspec

from orchestrator.client import NexusClient
from orchestrator.core import decide
from orchestrator.core.decide import Fleet
from schemas.limits import Labels, Name


class FindOptimalNode(msgspec.Struct, frozen=True, kw_only=True):
    """Where would a job with this tool, node selectors and soft preferences go now?"""

    tool: Name = "bash"
    labels: Labels = {}
    prefer: Labels = {}


class OptimalChoice(msgspec.Struct, frozen=True, kw_only=True):
    node: str | None
    candidates: list[str]
    reason: str


async def optimal_node(client: NexusClient, query: FindOptimalNode, *, ttl_s: float, now: datetime) -> OptimalChoice:
    """The scheduler's choice, from the nodes' heartbeats (their load as they report it)."""
    beats = await client.bus.heartbeats()
    fleet = Fleet(views={}, heartbeats=beats, load={n: hb.active_jobs for n, hb in beats.items()}, ttl_s=ttl_s)
    node, why = decide.optimal_node(fleet, query.tool, query.labels, query.prefer, now)
    candidates = sorted(decide.capable_nodes(fleet, query.tool, query.labels, now))
    return OptimalChoice(node=node, candidates=candidates, reason=why)
