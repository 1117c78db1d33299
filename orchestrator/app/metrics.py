"""`nexus metrics`, `GET /api/v1/metrics/pipeline` and `GET /metrics`: the per-phase metrics,
one SQL statement each (orchestrator/metrics_sql.py), run through the orchestrator's query
channel and shaped as the brief's `PipelineMetrics`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from orchestrator.app.metrics_models import (
    AnalysisMetrics,
    CoordinationMetrics,
    CountByType,
    DeployMetrics,
    ExecutionGroup,
    ExecutionMetrics,
    PipelineMetrics,
    StepLatency,
    TestMetrics,
)
from orchestrator.client import NexusClient
from orchestrator.metrics_sql import VIEWS, since_scoped


def _one(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return rows[0] if rows else {}


def _counts(rows: Sequence[dict[str, Any]]) -> list[CountByType]:
    return [CountByType(type=str(r["type"]), count=int(r["count"])) for r in rows if r["type"] is not None]


def _group(row: dict[str, Any], key: str) -> ExecutionGroup:
    return ExecutionGroup(
        name=str(row[key]),
        total_jobs=row["total_jobs"],
        successful_jobs=row["successful_jobs"],
        failed_jobs=row["failed_jobs"],
        timed_out_jobs=row["timed_out_jobs"],
        avg_duration=float(row["avg_duration_ms"]),
    )



async def pipeline_metrics(client: NexusClient, since: datetime | None = None) -> PipelineMetrics:
    """GET /api/v1/metrics/pipeline: the brief's per-phase shape plus step latencies (optionally since a time)."""
    names = list(VIEWS)[1:]  # metrics_job_steps is per job, not a summary
    results = await asyncio.gather(*(client.query(*since_scoped(VIEWS[name], since)) for name in names))
    r = {name: rows.dicts() for name, rows in zip(names, results, strict=True)}
    return PipelineMetrics(
        analysis=_analysis(r),
        coordination=_coordination(_one(r["metrics_coordination"])),
        execution=_execution(r),
        test=_test(r),
        deploy=_deploy(_one(r["metrics_deploy"])),
        latency=[_latency(row) for row in r["metrics_step_latency"]],
        generated_at=datetime.now(UTC),
    )


Results = dict[str, list[dict[str, Any]]]


def _analysis(r: Results) -> AnalysisMetrics:
    a = _one(r["metrics_analysis"])
    return AnalysisMetrics(
        total_validations=a["total_validations"],
        validation_failures=a["validation_failures"],
        failures_last_hour=a["failures_last_hour"],
        approvals_required=a["approvals_required"],
        approved=a["approved"],
        denied=a["denied"],
        avg_validation_time=float(a["avg_validation_ms"]),
        p95_validation_time=float(a["p95_validation_ms"]),
        common_findings=_counts(r["metrics_analysis_findings"]),
    )


def _coordination(c: dict[str, Any]) -> CoordinationMetrics:
    return CoordinationMetrics(
        queue_depth=c["queue_depth"],
        pending_jobs=c["pending_jobs"],
        awaiting_approval=c["awaiting_approval"],
        executing_jobs=c["executing_jobs"],
        queued_jobs=c["queued_jobs"],
        avg_time_queued=float(c["avg_time_queued_ms"]),
        p95_time_queued=float(c["p95_time_queued_ms"]),
    )


def _execution(r: Results) -> ExecutionMetrics:
    x = _one(r["metrics_execution"])
    return ExecutionMetrics(
        total_jobs=x["total_jobs"],
        successful_jobs=x["successful_jobs"],
        failed_jobs=x["failed_jobs"],
        timed_out_jobs=x["timed_out_jobs"],
        cancelled_jobs=x["cancelled_jobs"],
        lost_jobs=x["lost_jobs"],
        success_rate=float(x["success_rate"]),
        timeout_rate=float(x["timeout_rate"]),
        avg_duration=float(x["avg_duration_ms"]),
        p95_duration=float(x["p95_duration_ms"]),
        by_tool=[_group(row, "tool") for row in r["metrics_execution_by_tool"]],
        by_node=[_group(row, "node") for row in r["metrics_execution_by_node"]],
        by_user=[_group(row, "requested_by") for row in r["metrics_execution_by_user"]],
    )


def _test(r: Results) -> TestMetrics:
    t = _one(r["metrics_test"])
    return TestMetrics(
        total_runs=t["total_runs"],
        passed_runs=t["passed_runs"],
        failed_runs=t["failed_runs"],
        pass_rate=float(t["pass_rate"]),
        rollbacks=t["rollbacks"],
        failing_assertions=_counts(r["metrics_test_failures"]),
    )


def _deploy(d: dict[str, Any]) -> DeployMetrics:
    return DeployMetrics(
        total_deployments=d["total_deployments"],
        successful_deployments=d["successful_deployments"],
        failed_deployments=d["failed_deployments"],
        success_rate=float(d["success_rate"]),
        avg_pipeline_time=float(d["avg_pipeline_ms"]),
        rollbacks=d["rollbacks"],
        avg_rollback_time=float(d["avg_rollback_ms"]),
    )


def _latency(row: dict[str, Any]) -> StepLatency:
    return StepLatency(
        step=row["step"],
        from_=row["from_step"],
        to=row["to_step"],
        count=row["count"],
        mean=float(row["mean_ms"]),
        p50=float(row["p50_ms"]),
        p95=float(row["p95_ms"]),
        p99=float(row["p99_ms"]),
    )
