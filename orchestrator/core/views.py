"""Read models folded from the event log: one `JobView` per job, one `NodeView` per node."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Literal

import msgspec

from schemas.limits import MetaValue
from schemas.values import Finding, JobTest, TestResult


class JobStatus(enum.StrEnum):
    """Where a job is in its lifecycle. A `str`: stored values and comparisons stay the plain names."""

    REQUESTED = "requested"
    VALIDATED = "validated"
    APPROVAL_REQUIRED = "approval_required"
    APPROVED = "approved"
    DENIED = "denied"
    REJECTED = "rejected"
    QUEUED = "queued"
    ASSIGNED = "assigned"
    DISPATCHED = "dispatched"
    ACCEPTED = "accepted"
    RUNNING = "running"
    EXITED = "exited"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"

    @property
    def terminal(self) -> bool:
        """The job has ended; no event changes its status any more."""
        return self in _TERMINAL

    @property
    def placeable(self) -> bool:
        """The job may be placed on a node."""
        return self in _PLACEABLE

    @property
    def on_node(self) -> bool:
        """The job holds a slot on its node."""
        return self in _ON_NODE

    @property
    def before_dispatch(self) -> bool:
        """Nothing has been sent to a node yet: a cancel ends the job at once."""
        return self in _BEFORE_DISPATCH


S = JobStatus
_TERMINAL = frozenset({S.REJECTED, S.DENIED, S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLED, S.LOST})
_PLACEABLE = frozenset({S.VALIDATED, S.APPROVED, S.QUEUED})
_ON_NODE = frozenset({S.ASSIGNED, S.DISPATCHED, S.ACCEPTED, S.RUNNING})
_BEFORE_DISPATCH = frozenset({S.REQUESTED, S.VALIDATED, S.APPROVAL_REQUIRED, S.APPROVED, S.QUEUED})
del S

# Derived from the enum, for code that needs the set (SQL parameters, membership of plain strings).
TERMINAL: frozenset[str] = frozenset(s.value for s in JobStatus if s.terminal)
PLACEABLE: frozenset[str] = frozenset(s.value for s in JobStatus if s.placeable)
ON_NODE: frozenset[str] = frozenset(s.value for s in JobStatus if s.on_node)


class JobView(msgspec.Struct, frozen=True, kw_only=True):
    """One job, as the log tells it. Immutable: the reducer makes a new view with `msgspec.structs.replace`."""

    job_id: str
    status: JobStatus
    command: str
    tool: str = "bash"
    requested_node: str | None = None
    node: str | None = None
    labels: dict[str, str] = {}
    prefer: dict[str, str] = {}
    working_dir: str | None = None
    env: dict[str, str] = {}
    """The job's env, secret values shown as schemas.secrets.MASK (they never reach a view)."""
    secrets: list[str] = []
    """Names of the secret env entries: the decider seals them for the node from the job's request in the log."""
    timeout_s: float | None = None
    priority: int = 0
    tests: list[JobTest] = []
    parent: str | None = None
    metadata: dict[str, MetaValue] = {}
    requested_by: str | None = None
    requester: str | None = None
    """The verified identity that published the job's `requested` (`nexus creds new --name`; None:
    unsigned, or a bus without credentials); `requested_by` may name the user an admin service acted for."""
    requester_role: str | None = None
    """That identity's role. A pipeline step counts only a job the orchestrator (admin) requested."""
    after: list[str] = []
    retries: int = 0
    idempotent: bool = False
    tty: bool = True
    severity: str | None = None
    warnings: list[Finding] = []
    suggestions: list[str] = []
    validation_ms: float | None = None
    approved_by: str | None = None
    deciders: list[str] | None = None
    """Who may approve or deny the job's current hold (JobApprovalRequired.deciders); None: anyone allowed."""
    attempt: int = 0
    instance: str = ""
    exit_code: int | None = None
    signal: int | None = None
    killed_by: str | None = None
    reason: str | None = None
    placement: str | None = None
    duration_ms: int | None = None
    output_bytes: int = 0
    chunks: int = 0
    output_dropped: int = 0
    """Output of the attempt read past its node's limit and not kept (JobExited.output_dropped)."""
    checks: list[TestResult] = []
    tests_passed: bool | None = None
    test_results: list[TestResult] = []
    # A later test run on the finished job (`test_requested`), its verification job and who asked.
    retest: list[JobTest] = []
    retest_job: str | None = None
    retest_by: str | None = None
    # Every test request taken so far, by its content's digest: a copy published again is refused.
    test_requests: list[str] = []
    rollback_job: str | None = None
    rolled_back_at: datetime | None = None
    cancel_requested: bool = False
    cancel_sent: bool = False
    requested_at: datetime | None = None
    validated_at: datetime | None = None
    queued_at: datetime | None = None
    assigned_at: datetime | None = None
    accepted_at: datetime | None = None
    started_at: datetime | None = None
    exited_at: datetime | None = None
    finished_at: datetime | None = None
    first_seq: int = 0
    last_seq: int = 0

    @property
    def state(self) -> JobStatus:
        # A view built by hand may carry the plain string; the enum owns what it means.
        return JobStatus(self.status)

    # The sets answer for a plain string as for the member (a StrEnum hashes and compares as its
    # value), without making a member: these are asked for every job on every decision round.
    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def placeable(self) -> bool:
        return self.status in PLACEABLE

    @property
    def on_node(self) -> bool:
        return self.status in ON_NODE

    @property
    def settled(self) -> bool:
        """Terminal with nothing left to decide: the projection may drop it from memory."""
        return self.terminal and not self.retest


class NodeView(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    status: Literal["online", "lost"] = "online"
    tools: list[str] = []
    labels: dict[str, str] = {}
    max_jobs: int = 1
    hostname: str = ""
    version: str = ""
    registered_at: datetime | None = None
    lost_at: datetime | None = None
    last_seen: datetime | None = None
    """The last heartbeat known when the node was found lost (`node.lost`'s `last_seen`, else the
    time of its latest registration): it outlives the heartbeat, which the bucket drops after its TTL."""
    last_seq: int = 0
    drained: bool = False
    """Taken out of placement by an operator (`node.drained`) until `node.undrained`: registrations keep it."""
    drained_at: datetime | None = None
    drain_reason: str | None = None
