"""Node routes: the fleet, one node, the node the orchestrator would pick now, and draining one.

Registration (tools, labels, capacity) comes from the `nodes` table, liveness
and the agent's own load from its heartbeat in the `nexus-nodes` bucket (app.nodes.fleet).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from orchestrator.api.auth import identity_of, require
from orchestrator.api.context import ApiContext, Ctx
from orchestrator.api.errors import ProblemError, unknown_node
from orchestrator.api.models import DrainRecorded, DrainRequest, NodeList, NodeOut, NoFields, OptimalNode
from orchestrator.api.openapi import problems
from orchestrator.app import nodes as nodes_app
from orchestrator.app.nodes import DrainNode, FindOptimalNode
from schemas import subjects
from schemas.limits import MAX_LABELS, MAX_NAME_CHARS


async def fleet(ctx: ApiContext) -> dict[str, NodeOut]:
    """Every node known from the log or from a heartbeat, by id (app.nodes.fleet, as `nexus nodes`)."""
    nodes = await nodes_app.fleet(ctx.client, ttl_s=ctx.node_ttl_s, now=datetime.now(UTC))
    return {node_id: msgspec.convert(node, NodeOut, from_attributes=True) for node_id, node in nodes.items()}


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


@post(
    "/api/v1/nodes/{node_id:str}/drain",
    status_code=202,
    guards=[require("admin")],
    summary="Take a node out of placement (maintenance): no new job goes there",
    responses=problems(404, body=True),
)
async def drain_node(
    node_id: FromPath[str], ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[DrainRequest | None] = None
) -> DrainRecorded:
    """`node.drained` in the log, by the caller: what the node runs goes on, jobs asked for on it
    wait, no other job goes there until `undrain` (as `nexus nodes --drain`)."""
    change = DrainNode(node_id=node_id, reason=(data.reason or "") if data is not None else "", by=identity_of(request.scope).user)
    seq = await nodes_app.drain(ctx.client, change, now=datetime.now(UTC))
    return DrainRecorded(node_id=node_id, drained=True, seq=seq)


@post(
    "/api/v1/nodes/{node_id:str}/undrain",
    status_code=202,
    guards=[require("admin")],
    summary="Let a drained node take jobs again",
    responses=problems(404, body=True),
)
async def undrain_node(
    node_id: FromPath[str], ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[NoFields | None] = None
) -> DrainRecorded:
    change = DrainNode(node_id=node_id, drain=False, by=identity_of(request.scope).user)
    seq = await nodes_app.drain(ctx.client, change, now=datetime.now(UTC))
    return DrainRecorded(node_id=node_id, drained=False, seq=seq)


ROUTES = [list_nodes, optimal_node, get_node, drain_node, undrain_node]
