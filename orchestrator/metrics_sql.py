"""Per-phase metrics, computed by SQL over the `events` and `jobs` tables.

Each metric is one SELECT in `VIEWS`. The application layer runs
them through the orchestrator (`NexusClient.query`, orchestrator/app/metrics.py); the store creates the same statements as
DuckDB views named after their keys, so `nexus sql "SELECT * FROM metrics_execution"`
gives what the API serves. Plain SQL, no I/O: the store and the application layer both use it.

Times are milliseconds; rates are 0..1; an empty phase reports zeros.

    metrics_job_steps          one row per job: when it reached each step
                               (requested, validated, queued, assigned, accepted, first output byte,
                               exited, tested, finished), from the first event of each kind
    metrics_step_latency       per step: count, mean, p50, p95, p99. A step starts at the latest
                               earlier step the job went through (no analysis yet: `assigned`
                               counts from `requested`; no output: `exited` counts from `accepted`)
    metrics_analysis           analysis verdicts: job.validated events plus job.rejected with an analysis
                               code (invalid_request, permission_denied, policy_denied); failures are those rejections
                               and validations of severity critical; failures in the last hour;
                               holds for approval, approvals and denials that counted (not ignored, an
                               approval not answered with a new hold); mean/p95 of the analysis'
                               own time (`duration_ms` of job.validated)
    metrics_analysis_findings  warning types in job.validated payloads (`warnings[].type`), by count
    metrics_coordination       queue depth (queued), pending (not on a node yet: requested, validated,
                               held for approval, approved, queued), of which held for approval,
                               executing (on a node), jobs ever queued, mean/p95 time from queued to
                               leaving the queue
    metrics_execution          jobs that ended after being assigned to a node: by outcome, success
                               and timeout rate, mean/p95 duration (exited jobs)
    metrics_execution_by_tool  the same per tool
    metrics_execution_by_node  the same per node
    metrics_test               job.tested events: runs, passed (payload `passed`), pass rate, and
                               rollbacks (pipeline.rolled_back events: the rollback frequency)
    metrics_test_failures      failing assertion types (`results[]` with `passed` false), by count
    metrics_deploy             pipelines that ended (pipeline.succeeded / pipeline.failed), success rate,
                               mean pipeline time (requested -> ended), rollbacks and mean rollback time
                               (pipeline.rollback_started -> pipeline.rolled_back)

Only events that decoded and applied cleanly count (`error IS NULL`), so a
kind this build cannot decode reads as zero rather than as garbage. The
first output byte is `first_output_at` in the `job.exited` payload (see
INTEGRATION.md); without it that step counts no jobs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


def ms_between(later: str, earlier: str) -> str:
    return f"(epoch_us({later}) - epoch_us({earlier})) / 1000.0"


def _z(expr: str) -> str:
    return f"coalesce({expr}, 0)"


_OK = "error IS NULL"
# Every JSON access is wrapped in try(): filters may run in any order, and a payload
# that failed to decode (kept with its error) is not JSON at all.

JOB_STEPS = f"""
SELECT j.job_id, j.tool, j.node, j.status,
       j.requested_at,
       min(e.ts) FILTER (WHERE e.type = 'job.validated') AS validated_at,
       min(e.ts) FILTER (WHERE e.type = 'job.queued') AS queued_at,
       min(e.ts) FILTER (WHERE e.type = 'job.assigned') AS assigned_at,
       min(e.ts) FILTER (WHERE e.type = 'job.accepted') AS accepted_at,
       min(TRY_CAST(try(json_extract_string(e.payload, '$.first_output_at')) AS TIMESTAMPTZ))
           FILTER (WHERE e.type = 'job.exited') AS first_output_at,
       min(e.ts) FILTER (WHERE e.type = 'job.exited') AS exited_at,
       min(e.ts) FILTER (WHERE e.type = 'job.tested') AS tested_at,
       j.finished_at
FROM jobs AS j
LEFT JOIN events AS e ON e.job_id = j.job_id AND e.{_OK}
GROUP BY ALL
"""

# (order, step, from, to, latency expression over metrics_job_steps)
STEPS: list[tuple[int, str, str, str, str]] = [
    (1, "requested_to_validated", "requested", "validated", ms_between("validated_at", "requested_at")),
    (2, "validated_to_assigned", "validated", "assigned", ms_between("assigned_at", "coalesce(validated_at, requested_at)")),
    (3, "assigned_to_accepted", "assigned", "accepted", ms_between("accepted_at", "assigned_at")),
    (4, "accepted_to_first_output", "accepted", "first_output", ms_between("first_output_at", "accepted_at")),
    (5, "first_output_to_exited", "first_output", "exited", ms_between("exited_at", "coalesce(first_output_at, accepted_at)")),
    (6, "exited_to_tested", "exited", "tested", ms_between("tested_at", "exited_at")),
    (
        7,
        "requested_to_finished",
        "requested",
        "finished",
        f"CASE WHEN exited_at IS NOT NULL THEN {ms_between('finished_at', 'requested_at')} END",
    ),
]

_STEP_ROWS = "\n  UNION ALL ".join(f"SELECT '{name}' AS step, {expr} AS ms FROM job_steps" for _, name, _, _, expr in STEPS)
_STEP_NAMES = ", ".join(f"({order}, '{name}', '{src}', '{dst}')" for order, name, src, dst, _ in STEPS)

STEP_LATENCY = f"""
WITH job_steps AS ({JOB_STEPS}),
step_ms AS (
  {_STEP_ROWS}
),
steps(step_order, step, from_step, to_step) AS (VALUES {_STEP_NAMES})
SELECT s.step_order, s.step, s.from_step, s.to_step,
       count(m.ms) AS count,
       {_z("avg(m.ms)")} AS mean_ms,
       {_z("quantile_cont(m.ms, 0.5)")} AS p50_ms,
       {_z("quantile_cont(m.ms, 0.95)")} AS p95_ms,
       {_z("quantile_cont(m.ms, 0.99)")} AS p99_ms
FROM steps AS s LEFT JOIN step_ms AS m ON m.step = s.step
GROUP BY ALL
ORDER BY s.step_order
"""

ANALYSIS_REJECT_CODES = ("invalid_request", "permission_denied", "policy_denied")  # rejections decided by the analysis phase

ANALYSIS = f"""
WITH holds AS (
  -- An approval the orchestrator answered with a new hold (the policy does not let its author approve) did not count.
  SELECT type, lead(type) OVER (PARTITION BY job_id ORDER BY seq) AS next_type
  FROM events WHERE type IN ('job.approved', 'job.approval_required') AND {_OK}
),
verdicts AS (
  SELECT ts,
         CASE WHEN type = 'job.validated' THEN TRY_CAST(try(json_extract(payload, '$.duration_ms')) AS DOUBLE) END AS ms,
         (type = 'job.rejected' OR try(json_extract_string(payload, '$.severity')) = 'critical') AS failed
  FROM events
  WHERE {_OK} AND (type = 'job.validated' OR (type = 'job.rejected'
        AND try(json_extract_string(payload, '$.code')) IN {ANALYSIS_REJECT_CODES!r}))
)
SELECT count(*) AS total_validations,
       count(*) FILTER (WHERE failed) AS validation_failures,
       count(*) FILTER (WHERE failed AND ts >= now() - INTERVAL 1 HOUR) AS failures_last_hour,
       (SELECT count(*) FROM events WHERE type = 'job.approval_required' AND {_OK}) AS approvals_required,
       (SELECT count(*) FROM holds WHERE type = 'job.approved' AND next_type IS DISTINCT FROM 'job.approval_required') AS approved,
       (SELECT count(*) FROM events WHERE type = 'job.denied' AND {_OK}) AS denied,
       {_z("avg(ms)")} AS avg_validation_ms,
       {_z("quantile_cont(ms, 0.95)")} AS p95_validation_ms
FROM verdicts
"""

ANALYSIS_FINDINGS = f"""
SELECT try(json_extract_string(w, '$.type')) AS type, count(*) AS count
FROM (SELECT unnest(try(json_extract(payload, '$.warnings[*]'))) AS w FROM events WHERE type = 'job.validated' AND {_OK})
GROUP BY 1
ORDER BY count DESC, type
"""

COORDINATION = f"""
WITH q AS (
  SELECT job_id,
         min(ts) FILTER (WHERE type = 'job.queued') AS queued_at,
         min(ts) FILTER (WHERE type IN ('job.assigned', 'job.cancelled', 'job.rejected')) AS left_at
  FROM events WHERE job_id IS NOT NULL AND {_OK}
  GROUP BY job_id
),
waits AS (SELECT {ms_between("left_at", "queued_at")} AS ms FROM q WHERE queued_at IS NOT NULL AND left_at >= queued_at)
SELECT (SELECT count(*) FROM jobs WHERE status = 'queued') AS queue_depth,
       (SELECT count(*) FROM jobs WHERE status IN ('requested', 'validated', 'approval_required', 'approved', 'queued'))
           AS pending_jobs,
       (SELECT count(*) FROM jobs WHERE status = 'approval_required') AS awaiting_approval,
       (SELECT count(*) FROM jobs WHERE status IN ('assigned', 'dispatched', 'accepted', 'running', 'exited')) AS executing_jobs,
       (SELECT count(*) FROM q WHERE queued_at IS NOT NULL) AS queued_jobs,
       {_z("avg(ms)")} AS avg_time_queued_ms,
       {_z("quantile_cont(ms, 0.95)")} AS p95_time_queued_ms
FROM waits
"""

_EXECUTED = "status IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'lost') AND assigned_at IS NOT NULL"
_EXECUTION_COLUMNS = f"""
       count(*) AS total_jobs,
       count(*) FILTER (WHERE status = 'succeeded') AS successful_jobs,
       count(*) FILTER (WHERE status = 'failed') AS failed_jobs,
       count(*) FILTER (WHERE status = 'timed_out') AS timed_out_jobs,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled_jobs,
       count(*) FILTER (WHERE status = 'lost') AS lost_jobs,
       {_z("count(*) FILTER (WHERE status = 'succeeded') / nullif(count(*), 0)")} AS success_rate,
       {_z("count(*) FILTER (WHERE status = 'timed_out') / nullif(count(*), 0)")} AS timeout_rate,
       {_z("avg(duration_ms) FILTER (WHERE exited_at IS NOT NULL)")} AS avg_duration_ms,
       {_z("quantile_cont(duration_ms, 0.95) FILTER (WHERE exited_at IS NOT NULL)")} AS p95_duration_ms"""

EXECUTION = f"SELECT{_EXECUTION_COLUMNS}\nFROM jobs WHERE {_EXECUTED}"
EXECUTION_BY_TOOL = f"SELECT tool,{_EXECUTION_COLUMNS}\nFROM jobs WHERE {_EXECUTED}\nGROUP BY tool ORDER BY tool"
EXECUTION_BY_NODE = f"SELECT node,{_EXECUTION_COLUMNS}\nFROM jobs WHERE {_EXECUTED} AND node IS NOT NULL\nGROUP BY node ORDER BY node"
EXECUTION_BY_USER = (
    f"SELECT coalesce(requested_by, '(unknown)') AS requested_by,{_EXECUTION_COLUMNS}\nFROM jobs WHERE {_EXECUTED}\nGROUP BY 1 ORDER BY 1"
)

_PASSED = "coalesce(TRY_CAST(try(json_extract(payload, '$.passed')) AS BOOLEAN), false)"

TEST = f"""
SELECT count(*) AS total_runs,
       count(*) FILTER (WHERE {_PASSED}) AS passed_runs,
       count(*) FILTER (WHERE NOT {_PASSED}) AS failed_runs,
       {_z(f"count(*) FILTER (WHERE {_PASSED}) / nullif(count(*), 0)")} AS pass_rate,
       (SELECT count(*) FROM events WHERE type = 'pipeline.rolled_back' AND {_OK}) AS rollbacks
FROM events WHERE type = 'job.tested' AND {_OK}
"""

TEST_FAILURES = f"""
SELECT try(json_extract_string(r, '$.type')) AS type, count(*) AS count
FROM (SELECT unnest(try(json_extract(payload, '$.results[*]'))) AS r FROM events WHERE type = 'job.tested' AND {_OK})
WHERE NOT coalesce(TRY_CAST(try(json_extract(r, '$.passed')) AS BOOLEAN), false)
GROUP BY 1
ORDER BY count DESC, type
"""

DEPLOY = f"""
WITH p AS (
  SELECT pipeline_id,
         min(ts) FILTER (WHERE type = 'pipeline.requested') AS requested_at,
         min(ts) FILTER (WHERE type = 'pipeline.succeeded') AS succeeded_at,
         min(ts) FILTER (WHERE type = 'pipeline.failed') AS failed_at,
         min(ts) FILTER (WHERE type = 'pipeline.rollback_started') AS rollback_started_at,
         min(ts) FILTER (WHERE type = 'pipeline.rolled_back') AS rolled_back_at
  FROM events WHERE pipeline_id IS NOT NULL AND {_OK}
  GROUP BY pipeline_id
),
ended AS (SELECT *, coalesce(succeeded_at, failed_at) AS ended_at FROM p WHERE succeeded_at IS NOT NULL OR failed_at IS NOT NULL),
rb AS (SELECT {ms_between("rolled_back_at", "rollback_started_at")} AS ms FROM p WHERE rolled_back_at IS NOT NULL)
SELECT (SELECT count(*) FROM ended) AS total_deployments,
       (SELECT count(*) FROM ended WHERE succeeded_at IS NOT NULL) AS successful_deployments,
       (SELECT count(*) FROM ended WHERE succeeded_at IS NULL) AS failed_deployments,
       {_z("(SELECT count(*) FROM ended WHERE succeeded_at IS NOT NULL) / nullif((SELECT count(*) FROM ended), 0)")} AS success_rate,
       {_z(f"(SELECT avg({ms_between('ended_at', 'requested_at')}) FROM ended)")} AS avg_pipeline_ms,
       (SELECT count(*) FROM rb) AS rollbacks,
       {_z("(SELECT avg(ms) FROM rb)")} AS avg_rollback_ms
"""

VIEWS: dict[str, str] = {
    "metrics_job_steps": JOB_STEPS,
    "metrics_step_latency": STEP_LATENCY,
    "metrics_analysis": ANALYSIS,
    "metrics_analysis_findings": ANALYSIS_FINDINGS,
    "metrics_coordination": COORDINATION,
    "metrics_execution": EXECUTION,
    "metrics_execution_by_tool": EXECUTION_BY_TOOL,
    "metrics_execution_by_node": EXECUTION_BY_NODE,
    "metrics_execution_by_user": EXECUTION_BY_USER,
    "metrics_test": TEST,
    "metrics_test_failures": TEST_FAILURES,
    "metrics_deploy": DEPLOY,
}


def view_ddl() -> list[str]:
    """The statements the store runs at start to (re)create the metrics views."""
    return [f"CREATE OR REPLACE VIEW {name} AS {sql.strip()}" for name, sql in VIEWS.items()]


def since_scoped(sql: str, since: datetime | None) -> tuple[str, list[Any]]:
    """The same query over events and jobs since a time: CTEs named like the tables shadow them."""
    if since is None:
        return sql, []
    scope = "WITH events AS (SELECT * FROM main.events WHERE ts >= ?), jobs AS (SELECT * FROM main.jobs WHERE requested_at >= ?)"
    return f"{scope} SELECT * FROM ({sql.strip()})", [since, since]
