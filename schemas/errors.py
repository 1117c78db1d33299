"""Errors of the wire layer.

NexusError                 root of every Nexus error (all packages derive from it)
+-- InvalidId              a job, pipeline or node id that breaks the id rule
+-- InvalidSubject         a subject that is not one of Nexus's shapes
+-- DecodeError            a payload that does not decode for its subject
"""

from __future__ import annotations


class NexusError(Exception):
    """Root of all Nexus errors. `retryable` says whether trying again may help."""

    retryable: bool = False


class InvalidId(NexusError):
    def __init__(self, value: str, what: str = "id") -> None:
        self.value = value
        self.what = what
        super().__init__(f"invalid {what} {value!r}: ids match [A-Za-z0-9_-]{{1,64}} (no dots, spaces or wildcards)")


class InvalidSubject(NexusError):
    def __init__(self, subject: str, reason: str) -> None:
        self.subject = subject
        self.reason = reason
        super().__init__(f"subject {subject!r}: {reason}")


class DecodeError(NexusError):
    """A payload on `subject` could not be decoded; `data` holds the raw bytes."""

    def __init__(self, subject: str, data: bytes, reason: str) -> None:
        self.subject = subject
        self.data = data
        self.reason = reason
        super().__init__(f"cannot decode payload on {subject}: {reason}")
