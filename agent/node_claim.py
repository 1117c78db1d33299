"""One agent per node id: the node's heartbeat key, claimed at start and written only where
this agent left it.

Two agents started with one `--node` (a systemd unit and a manual start, two hosts given one
id) would share the node's dispatch consumer, and each heartbeat naming another instance makes
the orchestrator call the node's running jobs lost ("the agent restarted") and run idempotent
ones again while they still run. So:

- At start, when the key holds a heartbeat of another instance (not its last, written as it
  stopped cleanly: `stopped`), the agent watches the key for
  about that instance's interval (`silence_s`). Written again: that agent is alive, and this one
  refuses to start (NodeTaken). Silent: it was an agent that died (one being replaced after a
  crash), and this one takes the key over with a compare-and-set on the revision it watched.
- While running, every heartbeat is a compare-and-set on the agent's own last revision. If the
  key moved and holds another instance's heartbeat, two agents share the id (this one was
  stalled past the other's start, or both started at once): this one stops (NodeTaken) rather
  than both running. Its own heartbeat (a put whose answer was lost), none (expired) or a value
  that is no heartbeat of this node is written over.

Credentials issued before agents could read their own key (`perms:8`) cannot tell: the agent
says so and heartbeats as before.
"""

from __future__ import annotations

import asyncio
import time

from bus.errors import HeartbeatMoved, NotAllowed
from bus.logs import Logger
from bus.port import EventBus
from schemas.errors import NexusError
from schemas.events import NodeHeartbeat

log = Logger("nexus.agent")

POLL_S = 0.1  # how often the key is read while watching it
LONGEST_INTERVAL_S = 60.0  # a stored interval is the holder's word: never wait longer than this for it


class NodeTaken(NexusError):
    """Another agent runs as this node (it heartbeats under the node's key)."""

    def __init__(self, node: str, holder: NodeHeartbeat, *, while_running: bool) -> None:
        self.node = node
        self.holder = holder
        where = f"instance {holder.instance or '?'} on host {holder.hostname or '?'}"
        if while_running:
            what = f"another agent started as node {node} ({where}) while this one ran; this one stops"
        else:
            what = f"another agent is running as node {node} ({where}); this one does not start"
        super().__init__(f"{what}. One node id, one agent: stop the other one or give this one its own --node")


def silence_s(interval_s: float) -> float:
    """How long a heartbeat key must stay unwritten before its holder counts as gone."""
    return 1.5 * min(max(interval_s, 0.1), LONGEST_INTERVAL_S) + 0.5


class NodeClaim:
    """The agent's hold on its node's heartbeat key: `take` once, then `beat`."""

    def __init__(self, bus: EventBus, node: str, instance: str) -> None:
        self.bus = bus
        self.node = node
        self.instance = instance
        self.revision: int | None = None  # None: not claimed, or credentials that cannot check

    async def take(self, beat: NodeHeartbeat) -> None:
        """Write the first heartbeat, unless another agent is alive on this node (NodeTaken)."""
        try:
            held, revision = await self.bus.node_heartbeat(self.node)
        except NotAllowed as exc:
            log.warning("agent.cannot_check_node", node=self.node, error=str(exc),
                        fix="issue this agent new credentials: nexus creds new --role agent --node NODE")  # fmt: skip
            await self.bus.put_heartbeat(beat)
            return
        while True:
            if held is not None and held.instance != self.instance and not held.stopped:
                revision = await self._until_silent(held, revision)
            try:
                self.revision = await self.bus.put_heartbeat(beat, revision=revision)
                return
            except HeartbeatMoved:
                held, revision = await self.bus.node_heartbeat(self.node)
                if held is not None and held.instance != self.instance:
                    raise NodeTaken(self.node, held, while_running=False) from None  # written just now: alive

    async def _until_silent(self, held: NodeHeartbeat, revision: int) -> int:
        """The key's revision once it went unwritten for `silence_s`; NodeTaken if its holder writes."""
        wait_s = silence_s(held.interval_s)
        log.info("agent.node_held", node=self.node, holder=held.instance, hostname=held.hostname, waiting_s=round(wait_s, 2))
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(POLL_S, left))
            now, now_revision = await self.bus.node_heartbeat(self.node)
            if now_revision == revision:
                continue
            if now is not None and now.instance != self.instance:
                raise NodeTaken(self.node, now, while_running=False)
            revision = now_revision  # written, but not by an agent (gone, or garbage): keep watching
        log.info("agent.node_taken_over", node=self.node, previous=held.instance)
        return revision

    async def beat(self, beat: NodeHeartbeat) -> None:
        """Write a heartbeat where this agent left the key; NodeTaken if another agent wrote it."""
        if self.revision is None:
            await self.bus.put_heartbeat(beat)
            return
        try:
            self.revision = await self.bus.put_heartbeat(beat, revision=self.revision)
        except HeartbeatMoved:
            held, revision = await self.bus.node_heartbeat(self.node)
            if held is not None and held.instance != self.instance:
                raise NodeTaken(self.node, held, while_running=True) from None
            self.revision = await self.bus.put_heartbeat(beat, revision=revision)
