"""Errors of the orchestrator's adapters and services.

    NexusError (schemas.errors)
    +-- BusError (bus.errors)         NATS / JetStream trouble, translated at the adapter
    +-- QueryError                    SQL refused or failed
    +-- OrchestratorUnavailable       nobody answers the query subject
"""

from __future__ import annotations

from bus.urls import redact_url
from schemas.errors import NexusError


class QueryError(NexusError):
    pass


class OrchestratorUnavailable(NexusError):
    retryable = True

    def __init__(self, url: str) -> None:
        self.url = redact_url(url)
        super().__init__(
            f"no orchestrator answers on {self.url}: start one (nexus up / nexus orchestrator) "
            "or read a stopped orchestrator's file with --db PATH"
        )
