"""Per-phase metrics as Prometheus text (format 0.0.4), for `GET /metrics`: the numbers of
`metrics.pipeline_metrics` under `nexus_*` names."""

from __future__ import annotations

from orchestrator.app.metrics_models import PipelineMetrics


class _Exposition:
    """Prometheus text format 0.0.4: HELP and TYPE once per family, then samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{label_text}}} {_number(value)}" if labels else f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def prometheus_text(m: PipelineMetrics) -> str:
    """The same metrics for Prometheus (seconds, as Prometheus expects, not milliseconds)."""
    p = _Exposition()
    p.family("nexus_analysis_validations_total", "counter", "Jobs analysed (job.validated events and the analysis' rejections).")
    p.sample("nexus_analysis_validations_total", m.analysis.total_validations)
    p.family("nexus_analysis_validation_failures_total", "counter", "Analyses that found the command invalid.")
    p.sample("nexus_analysis_validation_failures_total", m.analysis.validation_failures)
    p.family("nexus_analysis_approvals_required_total", "counter", "Holds for approval (a refused answer renews one).")
    p.sample("nexus_analysis_approvals_required_total", m.analysis.approvals_required)

    p.family("nexus_coordination_queue_depth", "gauge", "Jobs queued for lack of node capacity.")
    p.sample("nexus_coordination_queue_depth", m.coordination.queue_depth)
    p.family("nexus_coordination_jobs", "gauge", "Jobs not finished, by phase: pending (not on a node yet) or executing.")
    p.sample("nexus_coordination_jobs", m.coordination.pending_jobs, state="pending")
    p.sample("nexus_coordination_jobs", m.coordination.executing_jobs, state="executing")
    p.family("nexus_coordination_time_queued_seconds_mean", "gauge", "Mean time a queued job waited.")
    p.sample("nexus_coordination_time_queued_seconds_mean", m.coordination.avg_time_queued / 1000)

    e = m.execution
    p.family("nexus_execution_jobs_total", "counter", "Jobs that ended after being assigned to a node, by outcome.")
    for status, n in (("succeeded", e.successful_jobs), ("failed", e.failed_jobs), ("timed_out", e.timed_out_jobs),
                      ("cancelled", e.cancelled_jobs), ("lost", e.lost_jobs)):  # fmt: skip
        p.sample("nexus_execution_jobs_total", n, status=status)
    p.family("nexus_execution_tool_jobs_total", "counter", "Ended jobs per tool, by outcome.")
    for g in e.by_tool:
        for status, n in (("succeeded", g.successful_jobs), ("failed", g.failed_jobs), ("timed_out", g.timed_out_jobs)):
            p.sample("nexus_execution_tool_jobs_total", n, tool=g.name, status=status)
    p.family("nexus_execution_node_jobs_total", "counter", "Ended jobs per node, by outcome.")
    for g in e.by_node:
        for status, n in (("succeeded", g.successful_jobs), ("failed", g.failed_jobs), ("timed_out", g.timed_out_jobs)):
            p.sample("nexus_execution_node_jobs_total", n, node=g.name, status=status)
    p.family("nexus_execution_duration_seconds_mean", "gauge", "Mean run time of exited jobs.")
    p.sample("nexus_execution_duration_seconds_mean", e.avg_duration / 1000)
    p.family("nexus_execution_tool_duration_seconds_mean", "gauge", "Mean run time of exited jobs per tool.")
    for g in e.by_tool:
        p.sample("nexus_execution_tool_duration_seconds_mean", g.avg_duration / 1000, tool=g.name)

    p.family("nexus_test_runs_total", "counter", "Test runs on jobs (job.tested events), by result.")
    p.sample("nexus_test_runs_total", m.test.passed_runs, result="passed")
    p.sample("nexus_test_runs_total", m.test.failed_runs, result="failed")
    p.family("nexus_test_assertion_failures_total", "counter", "Failing assertions by type.")
    for c in m.test.failing_assertions:
        p.sample("nexus_test_assertion_failures_total", c.count, type=c.type)

    p.family("nexus_deploy_deployments_total", "counter", "Pipelines that ended, by result.")
    p.sample("nexus_deploy_deployments_total", m.deploy.successful_deployments, result="succeeded")
    p.sample("nexus_deploy_deployments_total", m.deploy.failed_deployments, result="failed")
    p.family("nexus_deploy_rollbacks_total", "counter", "Pipelines rolled back (pipeline.rolled_back events).")
    p.sample("nexus_deploy_rollbacks_total", m.deploy.rollbacks)
    p.family("nexus_deploy_rollback_seconds_mean", "gauge", "Mean rollback time.")
    p.sample("nexus_deploy_rollback_seconds_mean", m.deploy.avg_rollback_time / 1000)

    p.family("nexus_job_step_seconds", "summary", "Latency of each step of a job (requested -> ... -> tested).")
    for s in m.latency:
        for q, v in (("0.5", s.p50), ("0.95", s.p95), ("0.99", s.p99)):
            p.sample("nexus_job_step_seconds", v / 1000, step=s.step, quantile=q)
        p.sample("nexus_job_step_seconds_sum", s.mean * s.count / 1000, step=s.step)
        p.sample("nexus_job_step_seconds_count", s.count, step=s.step)
    return p.text()
