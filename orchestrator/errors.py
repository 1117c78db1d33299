"""Errors of the orchestrator's adapters and services.

    NexusError (schemas.errors)
    +-- BusError                      NATS / JetStream trouble, translated at the adapter
    |   +-- BusUnavailable            cannot reach the server (retryable)
    |   +-- StaleDecision             optimistic concurrency refused a publish: re-read and decide again
    +-- QueryError                    SQL refused or failed
    +-- OrchestratorUnavailable       nobody answers the query subject
"""

from __future__ import annotations

from schemas.errors import NexusError


class BusError(NexusError):
    def __init__(self, message: str, *, subject: str | None = None, retryable: bool = False) -> None:
        self.subject = subject
        self.retryable = retryable
        super().__init__(message)


class BusUnavailable(BusError):
    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__(f"cannot reach NATS at {url}: {reason}", retryable=True)


class StaleDecision(BusError):
    def __init__(self, subject: str, expected_seq: int) -> None:
        self.expected_seq = expected_seq
        super().__init__(f"{subject}: another event came after seq {expected_seq}", subject=subject, retryable=True)


class QueryError(NexusError):
    pass


class OrchestratorUnavailable(NexusError):
    retryable = True

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(
            f"no orchestrator answers on {url}: start one (nexus up / nexus orchestrator) "
            "or read a stopped orchestrator's file with --db PATH"
        )
