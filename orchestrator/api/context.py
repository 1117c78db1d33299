"""What every route handler gets: the Nexus client and the API's own live state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from litestar.di import NamedDependency

from orchestrator.app.follow import stop_feed
from orchestrator.client import NexusClient
from orchestrator.core.policy import Policy

STOP = object()  # put into a stream's queue: the server is stopping


@dataclass
class ApiContext:
    client: NexusClient
    auth: Literal["tokens", "open"]
    # The orchestrator's policy, so validate gives the verdict the orchestrator would.
    policy: Policy = field(default_factory=Policy)
    node_ttl_s: float = 10.0
    keepalive_s: float = 15.0
    # Queues of the SSE streams being served, so a stopping server can end them.
    streams: set[asyncio.Queue[object]] = field(default_factory=set)
    stopping: bool = False

    def stop_streams(self) -> None:
        self.stopping = True
        for queue in self.streams:
            stop_feed(queue, STOP)


# How a route handler asks for the context (Litestar's explicit named dependency).
Ctx = NamedDependency[ApiContext]
