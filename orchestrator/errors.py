"""Errors of the orchestrator's adapters and services.

    NexusError (schemas.errors)
    +-- BusError (bus.errors)         NATS / JetStream trouble, translated at the adapter
    +-- QueryError                    SQL refused or failed
    +-- OrchestratorUnavailable       nobody answers the query subject
    +-- StateAheadOfLog               the state file has applied more of a log than this log holds
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


class StateAheadOfLog(NexusError):
    """The DuckDB file was made from another log: folding this one into it would skip events."""

    def __init__(self, db: str, applied_seq: int, log_end: int) -> None:
        super().__init__(
            f"the state file {db} has applied a log up to seq {applied_seq}, but this log ends at seq {log_end}: "
            "it was made from another log (another server, account or a wiped store). Use a new --db "
            "(`nexus replay --db FILE` rebuilds one from this log), or the server the file came from"
        )
