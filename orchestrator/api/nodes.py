"""Node routes: the fleet, one node, and the node the orchestrator would pick now.

Registration (tools, labels, capacity) comes from the `nodes` table, liveness
and the agent's own load from its heartbeat in the `nexus-nodes` bucket.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar import get
from litestar.params import FromPath, QueryParameter

from orchestrator.api.auth import require
from orchestrator.api.context import ApiContext, Ctx
from orchestrator.api.errors import ProblemError, unknown_node
from orchestrator.api.models import NodeList, NodeOut, OptimalNode
from orchestrator.api.openapi import problems
from orchestrator.app import nodes as nodes_app
from orchestrator.app.nodes import FindOptimalNode
from orchestrator.app.rows import decoded
from schemas import subjects
from schemas.events import NodeHeartbeat
from schemas.limits import MAX_LABELS, MAX_NAME_CHARS

_NODE_SQL = "SELECT node_id, status, tools, labels, max_jobs, hostname, version, registered_at, last_seen FROM nodes"


async def fleet(ctx: ApiContext) -> dict[str, NodeOut]:
    """Every node known from the log or from a heartbeat, by id."""
    rows = (await ctx.client.query(_NODE_SQL)).dicts()
    # One read of the bucket per request, and no consumer left behind (see NatsBus.heartbeats).
    beats = await ctx.client.bus.heartbeats()
    now = datetime.now(UTC)
    out: dict[str, NodeOut] = {}
    for row in map(decoded, rows):
        hb = beats.get(row["node_id"])
        out[row["node_id"]] = NodeOut(
            node_id=row["node_id"],
            status=row["status"],
            live=row["status"] == "online" and _live(hb, now, ctx.node_ttl_s),
            tools=row["tools"] or [],
            labels=row["labels"] or {},
            max_jobs=row["max_jobs"],
            active_jobs=hb.active_jobs if hb else 0,
            hostname=row["hostname"],
            version=row["version"],
            registered_at=msgspec.convert(row["registered_at"], datetime | None),
            # Its heartbeat, else the last one known when it was found lost (the bucket forgets it).
            last_seen=hb.ts if hb else msgspec.convert(row["last_seen"], datetime | None),
        )
    for node_id, hb in beats.items():
        if node_id not in out:  # heard from, not registered by the orchestrator yet
            out[node_id] = _from_heartbeat(hb, now, ctx.node_ttl_s)
    return dict(sorted(out.items()))


def _live(hb: NodeHeartbeat | None, now: datetime, ttl_s: float) -> bool:
    return hb is not None and (now - hb.ts).total_seconds() <= ttl_s


def _from_heartbeat(hb: NodeHeartbeat, now: datetime, ttl_s: float) -> NodeOut:
    return NodeOut(
        node_id=hb.node,
        status="unregistered",
        live=_live(hb, now, ttl_s),
        tools=hb.tools,
        labels=hb.labels,
        max_jobs=hb.max_jobs,
        active_jobs=hb.active_jobs,
        hostname=hb.hostname,
        version=hb.version,
        last_seen=hb.ts,
    )


async def node_known(ctx: ApiContext, node_id: str) -> bool:
    """Whether the orchestrator would accept `node_id` as a target (registered or heard from)."""
    rows = await ctx.client.query("SELECT 1 FROM nodes WHERE node_id = ?", [node_id])
    if rows.rows:
        return True
    return node_id in await ctx.client.bus.heartbeats()


@get("/api/v1/nodes", guards=[require("viewer")], summary="Registered nodes with tools, labels, load and liveness", responses=problems())
async def list_nodes(ctx: Ctx) -> NodeList:
    return NodeList(nodes=list((await fleet(ctx)).values()))


@get(
    "/api/v1/nodes/optimal",
    guards=[require("viewer")],
    summary="The node a job with this tool would go to now",
    responses=problems(),
)
async def optimal_node(
    ctx: Ctx,
    tool: Annotated[str, QueryParameter(max_length=MAX_NAME_CHARS, description="The tool the job needs.")] = "bash",
    label: Annotated[
        list[str] | None,
        QueryParameter(max_items=MAX_LABELS, description="Node selector KEY=VALUE; repeatable."),
    ] = None,
    prefer: Annotated[
        list[str] | None,
        QueryParameter(max_items=MAX_LABELS, description="Soft preference KEY=VALUE, as a job's `prefer`; repeatable."),
    ] = None,
) -> OptimalNode:
    """Ranked as the scheduler ranks: live nodes with the tool matching every `label`, not at
    their max concurrent jobs, then by `prefer`, cost and load (`orchestrator.core.decide`)."""
    query = FindOptimalNode(tool=tool, labels=_pairs(label, "label"), prefer=_pairs(prefer, "prefer"))
    choice = await nodes_app.optimal_node(ctx.client, query, ttl_s=ctx.node_ttl_s, now=datetime.now(UTC))
    node = (await fleet(ctx)).get(choice.node) if choice.node is not None else None
    return OptimalNode(tool=tool, node=node, candidates=choice.candidates, reason=choice.reason)


def _pairs(items: list[str] | None, name: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ProblemError(400, "invalid-parameter", "Bad request", f"{name} must look like KEY=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


@get("/api/v1/nodes/{node_id:str}", guards=[require("viewer")], summary="One node", responses=problems(404))
async def get_node(node_id: FromPath[str], ctx: Ctx) -> NodeOut:
    subjects.check_id(node_id, "node id")
    node = (await fleet(ctx)).get(node_id)
    if node is None:
        raise unknown_node(node_id)
    return node


ROUTES = [list_nodes, optimal_node, get_node]
