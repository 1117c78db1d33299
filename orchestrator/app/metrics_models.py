"""Response bodies of the metrics routes (GET /api/v1/metrics/pipeline), as msgspec Structs.

The shapes of the product brief, per phase; times are milliseconds, rates 0..1.
Docstrings become descriptions in the OpenAPI document.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class _Out(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    pass


class CountByType(_Out, frozen=True, kw_only=True):
    type: str
    count: int


class AnalysisMetrics(_Out, frozen=True, kw_only=True):
    """Validations are the analysis verdicts (`validated`, or rejected by policy); failures are the
    critical or refused ones. Validation time is the analysis' own compute time."""

    total_validations: int = 0
    validation_failures: int = 0
    failures_last_hour: int = 0
    approvals_required: int = 0
    approved: int = 0
    denied: int = 0
    avg_validation_time: float = 0.0
    p95_validation_time: float = 0.0
    common_findings: list[CountByType] = []


class CoordinationMetrics(_Out, frozen=True, kw_only=True):
    queue_depth: int = 0
    pending_jobs: int = 0
    awaiting_approval: int = 0
    executing_jobs: int = 0
    queued_jobs: int = 0
    avg_time_queued: float = 0.0
    p95_time_queued: float = 0.0


class ExecutionGroup(_Out, frozen=True, kw_only=True):
    """Execution counts of one tool or one node."""

    name: str
    total_jobs: int = 0
    successful_jobs: int = 0
    failed_jobs: int = 0
    timed_out_jobs: int = 0
    avg_duration: float = 0.0


class ExecutionMetrics(_Out, frozen=True, kw_only=True):
    total_jobs: int = 0
    successful_jobs: int = 0
    failed_jobs: int = 0
    timed_out_jobs: int = 0
    cancelled_jobs: int = 0
    lost_jobs: int = 0
    success_rate: float = 0.0
    timeout_rate: float = 0.0
    avg_duration: float = 0.0
    p95_duration: float = 0.0
    by_tool: list[ExecutionGroup] = []
    by_node: list[ExecutionGroup] = []
    by_user: list[ExecutionGroup] = []


class TestMetrics(_Out, frozen=True, kw_only=True):
    __test__ = False  # not a pytest class

    total_runs: int = 0
    passed_runs: int = 0
    failed_runs: int = 0
    pass_rate: float = 0.0
    rollbacks: int = 0
    failing_assertions: list[CountByType] = []


class DeployMetrics(_Out, frozen=True, kw_only=True):
    total_deployments: int = 0
    successful_deployments: int = 0
    failed_deployments: int = 0
    success_rate: float = 0.0
    avg_pipeline_time: float = 0.0
    rollbacks: int = 0
    avg_rollback_time: float = 0.0


class StepLatency(_Out, frozen=True, kw_only=True):
    """Latency of one step of a job, in milliseconds, over the jobs that went through it."""

    step: str
    from_: str = msgspec.field(name="from")
    to: str
    count: int = 0
    mean: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0


class PipelineMetrics(_Out, frozen=True, kw_only=True):
    """Per-phase metrics from the event log. Times are milliseconds."""

    analysis: AnalysisMetrics
    coordination: CoordinationMetrics
    execution: ExecutionMetrics
    test: TestMetrics
    deploy: DeployMetrics
    latency: list[StepLatency]
    generated_at: datetime
