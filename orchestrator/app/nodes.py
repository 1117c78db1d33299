"""Node queries: the optimal node, ranked once (the core's `decide.optimal_node`: live, capable,
free, then `prefer` and cost), for `nexus nodes --optimal` and `GET /api/v1/nodes/optimal`; and
the fleet as phase 1 sees it (`candidates`), for `nexus validate` and the API's validate."""

from __future__ import annotations

from datetime import datetime

import msgspec

from orchestrator.app.rows import decoded
from orchestrator.client import NexusClient
from orchestrator.core import decide
from orchestrator.core.admission import Candidate
from orchestrator.core.decide import Fleet
from orchestrator.core.views import NodeView
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


async def candidates(client: NexusClient, *, ttl_s: float, now: datetime) -> dict[str, Candidate]:
    """Every node known, registered in the log or heard from, as the orchestrator's phase 1 sees it
    (`decide.candidates`: labels and tools from the latest heartbeat, live within `ttl_s`)."""
    rows = (await client.query("SELECT node_id, tools, labels FROM nodes")).dicts()
    views = {
        row["node_id"]: NodeView(node_id=row["node_id"], tools=row["tools"] or [], labels=row["labels"] or {}) for row in map(decoded, rows)
    }
    beats = await client.bus.heartbeats()
    return decide.candidates(Fleet(views=views, heartbeats=beats, ttl_s=ttl_s), now)
