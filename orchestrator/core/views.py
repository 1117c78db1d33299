"""Read models folded from the event log: one `JobView` per job, one `NodeView` per node."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from schemas.limits import MetaValue
from schemas.values import Finding, JobTest, TestResult

JobStatus = Literal[
    "requested",
    "validated",
    "approval_required",
    "approved",
    "denied",
    "rejected",
    "queued",
    "assigned",
    "dispatched",
    "accepted",
    "running",
    "exited",
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "lost",
]
TERMINAL: frozenset[str] = frozenset({"rejected", "denied", "succeeded", "failed", "timed_out", "cancelled", "lost"})
# States from which the job may be placed on a node.
PLACEABLE: frozenset[str] = frozenset({"validated", "approved", "queued"})
# States in which a job holds a slot on its node.
ON_NODE: frozenset[str] = frozenset({"assigned", "dispatched", "accepted", "running"})


class JobView(msgspec.Struct, kw_only=True):
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
    timeout_s: float | None = None
    priority: int = 0
    tests: list[JobTest] = []
    parent: str | None = None
    metadata: dict[str, MetaValue] = {}
    requested_by: str | None = None
    after: list[str] = []
    retries: int = 0
    idempotent: bool = False
    severity: str | None = None
    warnings: list[Finding] = []
    suggestions: list[str] = []
    validation_ms: float | None = None
    approved_by: str | None = None
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
    checks: list[TestResult] = []
    tests_passed: bool | None = None
    test_results: list[TestResult] = []
    # A later test run on the finished job (`test_requested`), and its verification job.
    retest: list[JobTest] = []
    retest_job: str | None = None
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
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def settled(self) -> bool:
        """Terminal with nothing left to decide: the projection may drop it from memory."""
        return self.terminal and not self.retest


class NodeView(msgspec.Struct, kw_only=True):
    node_id: str
    status: Literal["online", "lost"] = "online"
    tools: list[str] = []
    labels: dict[str, str] = {}
    max_jobs: int = 1
    hostname: str = ""
    version: str = ""
    registered_at: datetime | None = None
    lost_at: datetime | None = None
    last_seq: int = 0
