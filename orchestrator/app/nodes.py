"""Node queries: the fleet as people see it (`fleet`), for `nexus nodes` and `GET /api/v1/nodes`;
the optimal node, ranked once (the core's `decide.optimal_node`: live, capable, free, then
`prefer` and cost), for `nexus nodes --optimal` and `GET /api/v1/nodes/optimal`; and the fleet
as phase 1 sees it (`candidates`), for `nexus validate` and the API's validate."""

from __future__ import annotations

from datetime import datetime
from secrets import token_hex
from typing import Literal

import msgspec

from orchestrator.app.errors import UnknownNode
from orchestrator.app.rows import decoded
from orchestrator.client import NexusClient
from orchestrator.core import decide
from orchestrator.core.admission import Candidate
from orchestrator.core.decide import Fleet
from orchestrator.core.views import NodeView
from schemas import msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import NodeDrained, NodeHeartbeat, NodeUndrained
from schemas.limits import Labels, Name

NodeStatus = Literal["online", "drained", "stopped", "lost", "unregistered", "unknown"]


class NodeState(msgspec.Struct, frozen=True, kw_only=True):
    """A node: its registration from the event log (the `nodes` table), its load and liveness
    from its heartbeat in the `nexus-nodes` bucket. `status`: `online` as registered, `drained`
    when an operator took it out of placement (`nexus nodes --drain`), `stopped`
    when its agent's last heartbeat says it stopped cleanly, `lost` when the orchestrator found it
    silent, `unregistered` when heard from but not registered yet, `unknown` when the orchestrator
    did not answer (`heard`: only heartbeats to go by). `live` only while it beats."""

    node_id: str
    status: NodeStatus
    live: bool
    tools: list[str] = []
    labels: dict[str, str] = {}
    max_jobs: int = 1
    active_jobs: int = 0
    hostname: str = ""
    version: str = ""
    registered_at: datetime | None = None
    last_seen: datetime | None = None


_NODE_SQL = "SELECT node_id, status, drained, tools, labels, max_jobs, hostname, version, registered_at, last_seen FROM nodes"


async def fleet(client: NexusClient, *, ttl_s: float, now: datetime) -> dict[str, NodeState]:
    """Every node known, registered in the log or heard from, by id. A node stays listed once
    registered: its heartbeat leaves the bucket some time after it stops, its registration does not."""
    rows = (await client.query(_NODE_SQL)).dicts()
    # One read of the bucket per call, and no consumer left behind (see NatsBus.heartbeats).
    beats = await client.bus.heartbeats()
    out: dict[str, NodeState] = {}
    for row in map(decoded, rows):
        hb = beats.get(row["node_id"])
        status: NodeStatus = "stopped" if hb is not None and hb.stopped else row["status"]
        registered = status == "online"
        if registered and row["drained"]:
            status = "drained"
        out[row["node_id"]] = NodeState(
            node_id=row["node_id"],
            status=status,
            live=registered and _live(hb, now, ttl_s),
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
            out[node_id] = _from_heartbeat(hb, "unregistered", now, ttl_s)
    return dict(sorted(out.items()))


async def heard(client: NexusClient, *, ttl_s: float, now: datetime) -> dict[str, NodeState]:
    """The nodes as their heartbeats in the bucket say, for when the orchestrator does not answer
    (`nexus nodes` while it is down: which agents still beat is what one wants to know then).
    Registration is not known: `unknown`, or `stopped` when the agent said so."""
    beats = await client.bus.heartbeats()
    return {node_id: _from_heartbeat(hb, "unknown", now, ttl_s) for node_id, hb in sorted(beats.items())}


def _from_heartbeat(hb: NodeHeartbeat, status: NodeStatus, now: datetime, ttl_s: float) -> NodeState:
    return NodeState(
        node_id=hb.node,
        status="stopped" if hb.stopped else status,
        live=_live(hb, now, ttl_s),
        tools=hb.tools,
        labels=hb.labels,
        max_jobs=hb.max_jobs,
        active_jobs=hb.active_jobs,
        hostname=hb.hostname,
        version=hb.version,
        last_seen=hb.ts,
    )


def _live(hb: NodeHeartbeat | None, now: datetime, ttl_s: float) -> bool:
    """Beating: a heartbeat within `ttl_s`, and not the last one of an agent that stopped."""
    return hb is not None and not hb.stopped and (now - hb.ts).total_seconds() <= ttl_s


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
    drained = {row["node_id"]: NodeView(node_id=row["node_id"], drained=True) for row in (await client.query(_DRAINED_SQL)).dicts()}
    fleet = Fleet(views=drained, heartbeats=beats, load={n: hb.active_jobs for n, hb in beats.items()}, ttl_s=ttl_s)
    node, why = decide.optimal_node(fleet, query.tool, query.labels, query.prefer, now)
    candidates = sorted(decide.capable_nodes(fleet, query.tool, query.labels, now))
    return OptimalChoice(node=node, candidates=candidates, reason=why)


_DRAINED_SQL = "SELECT node_id FROM nodes WHERE drained"


class DrainNode(msgspec.Struct, frozen=True, kw_only=True):
    """Take a node out of placement (`drain`), or put it back (`drain=False`)."""

    node_id: str
    drain: bool = True
    reason: str = ""
    by: str | None = None
    """Who asks, when an admin service asks for its caller (the API: the token's user); else the
    identity that signs it."""


async def drain(client: NexusClient, change: DrainNode, *, now: datetime) -> int:
    """Publish `node.drained` (no new job goes to the node; what it runs goes on; jobs asked for on
    it wait) or `node.undrained`, signed by this client's identity; the log's sequence. Only an
    admin may (the server refuses anyone else; the log refuses an unsigned one once identities are
    enforced). A node the orchestrator never registered is refused: UnknownNode."""
    node_id = subjects.check_id(change.node_id, "node id")
    if not (await client.query("SELECT node_id FROM nodes WHERE node_id = ?", [node_id])).dicts():
        raise UnknownNode(node_id)
    identity = client.bus.identity
    by = change.by or (identity.author.name if identity is not None else None)
    kind = "drained" if change.drain else "undrained"
    event = NodeDrained(ts=now, reason=change.reason, by=by) if change.drain else NodeUndrained(ts=now, by=by)
    published = await client.bus.publish(Outgoing(subjects.node(node_id, kind), event, msgids.node_change(node_id, kind, token_hex(8))))
    return published.seq


async def candidates(client: NexusClient, *, ttl_s: float, now: datetime) -> dict[str, Candidate]:
    """Every node known, registered in the log or heard from, as the orchestrator's phase 1 sees it
    (`decide.candidates`: labels and tools from the latest heartbeat, live within `ttl_s`)."""
    rows = (await client.query("SELECT node_id, tools, labels FROM nodes")).dicts()
    views = {
        row["node_id"]: NodeView(node_id=row["node_id"], tools=row["tools"] or [], labels=row["labels"] or {}) for row in map(decoded, rows)
    }
    beats = await client.bus.heartbeats()
    return decide.candidates(Fleet(views=views, heartbeats=beats, ttl_s=ttl_s), now)
