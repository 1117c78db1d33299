"""Errors of the event log and bus, translated from the client library in one place per adapter.

NexusError (schemas.errors)
+-- BusError                      NATS / JetStream trouble; `retryable` says if the same call may succeed later
    +-- BusUnavailable            cannot reach the server (retryable)
    +-- StaleDecision             optimistic concurrency refused a publish: re-read and decide again
    +-- NotSetUp                  a stream or the heartbeat bucket does not exist (yet: retryable)
    +-- RequestTimedOut           a request got no answer in time (retryable; also a TimeoutError)
    +-- HeartbeatMoved            a node's heartbeat key was not at the revision a put expected
    +-- NotAllowed                the server refuses this operation to these credentials
"""

from __future__ import annotations

from bus.urls import redact_url
from schemas.errors import NexusError


class BusError(NexusError):
    def __init__(self, message: str, *, subject: str | None = None, retryable: bool = False) -> None:
        self.subject = subject
        self.retryable = retryable
        super().__init__(message)


class BusUnavailable(BusError):
    def __init__(self, url: str, reason: str) -> None:
        self.url = redact_url(url)  # printed and logged: never with its password
        super().__init__(f"cannot reach NATS at {self.url}: {redact_url(reason)}", retryable=True)


class StaleDecision(BusError):
    """The entity's last sequence was not `expected_seq`; `last_seq`: what it was, when the
    server said (a cluster's stream leader may not)."""

    def __init__(self, subject: str, expected_seq: int, last_seq: int | None = None) -> None:
        self.expected_seq = expected_seq
        self.last_seq = last_seq
        super().__init__(f"{subject}: another event came after seq {expected_seq}", subject=subject, retryable=True)


class NotSetUp(BusError):
    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"{what} does not exist (has the orchestrator set up the streams?)", retryable=True)


class RequestTimedOut(BusError, TimeoutError):
    def __init__(self, subject: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(f"no answer on {subject} within {timeout_s:g}s", subject=subject, retryable=True)


class HeartbeatMoved(BusError):
    """Node `node`'s heartbeat key was not at `expected` (someone else wrote it): read it and decide."""

    def __init__(self, node: str, expected: int) -> None:
        self.node = node
        self.expected = expected
        super().__init__(f"the heartbeat of node {node} moved past revision {expected}", retryable=True)


class NotAllowed(BusError):
    """The server refuses this operation to these credentials (its permissions)."""
