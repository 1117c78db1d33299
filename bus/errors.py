"""Errors of the event log and bus, translated from nats-py in one place (bus.nats_bus).

    NexusError (schemas.errors)
    +-- BusError                      NATS / JetStream trouble; `retryable` says if the same call may succeed later
        +-- BusUnavailable            cannot reach the server (retryable)
        +-- StaleDecision             optimistic concurrency refused a publish: re-read and decide again
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
