"""The per-phase metrics of `GET /api/v1/metrics/pipeline` as time series, for charts.

`metrics_history(client, since, now, buckets)` cuts [since, now] into equal buckets
(without `since`: from the first job requested) and answers, per bucket: jobs
requested, their outcomes (by the time they finished), analysis failures (as the
snapshot counts them: rejections by the analysis and critical verdicts), the queue depth at the bucket's end, p50/p95 of each lifecycle step
(`metrics_sql.STEPS`, the same definitions as the snapshot) of the jobs requested in
it, and deploys: pipelines that ended, succeeded, and the mean rollback time.
One SQL statement per figure family, over the orchestrator's tables, through the
query channel as every other read.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import msgspec

from orchestrator.client import NexusClient
from orchestrator.metrics_sql import ANALYSIS_REJECT_CODES, JOB_STEPS, STEPS, ms_between

MAX_BUCKETS = 200
_FAILED = ("failed", "timed_out", "lost", "cancelled")


class StepPoint(msgspec.Struct, frozen=True, kw_only=True):
    p50_ms: float | None = None
    p95_ms: float | None = None


class Bucket(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    start: datetime
    requested: int = 0
    succeeded: int = 0
    failed: int = 0
    validation_failures: int = 0
    queue_depth: int = 0
    deploys: int = 0
    deploys_succeeded: int = 0
    rollback_ms: float | None = None
    steps: dict[str, StepPoint] = {}


class MetricsHistory(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    since: datetime
    until: datetime
    bucket_s: float
    steps: list[str]
    buckets: list[Bucket]


def _bucket(ts: str, since: str = "$1::TIMESTAMPTZ", width_us: str = "$2::BIGINT") -> str:
    return f"CAST(floor((epoch_us({ts}) - epoch_us({since})) / {width_us}) AS BIGINT)"


async def metrics_history(client: NexusClient, since: datetime | None, now: datetime, buckets: int = 30) -> MetricsHistory:
    buckets = max(1, min(buckets, MAX_BUCKETS))
    if since is None:
        first = await client.query("SELECT min(requested_at) FROM jobs")
        since = _as_time(first.rows[0][0]) if first.rows and first.rows[0][0] is not None else now - timedelta(hours=1)
    since = min(since, now - timedelta(seconds=1))
    width = (now - since) / buckets
    width_us = max(1, int(width.total_seconds() * 1_000_000))
    p = [since, width_us]
    b = _bucket
    step_rows = " UNION ALL ".join(
        f"SELECT {b('requested_at')} AS b, '{name}' AS step, {expr} AS ms FROM js" for _, name, _, _, expr in STEPS
    )
    jobs_sql = f"""
        SELECT {b("requested_at")} AS b, count(*) AS n FROM jobs WHERE requested_at >= $1 GROUP BY 1"""
    ends_sql = f"""
        SELECT {b("finished_at")} AS b,
               count(*) FILTER (WHERE status = 'succeeded') AS ok,
               count(*) FILTER (WHERE status IN {_FAILED}) AS bad
        FROM jobs WHERE finished_at >= $1 GROUP BY 1"""
    # The snapshot's definition (metrics.ANALYSIS): rejections by the analysis and critical validations.
    refused_sql = f"""
        SELECT {b("ts")} AS b, count(*) AS n FROM events
        WHERE error IS NULL AND ts >= $1 AND (
          (type = 'job.validated' AND try(json_extract_string(payload, '$.severity')) = 'critical')
          OR (type = 'job.rejected' AND try(json_extract_string(payload, '$.code')) IN {ANALYSIS_REJECT_CODES!r}))
        GROUP BY 1"""
    steps_sql = f"""
        WITH js AS ({JOB_STEPS}), m AS ({step_rows})
        SELECT b, step, quantile_cont(ms, 0.5) AS p50, quantile_cont(ms, 0.95) AS p95
        FROM m WHERE ms IS NOT NULL AND b >= 0 GROUP BY ALL"""
    depth_sql = """
        WITH q AS (
          SELECT job_id, min(ts) FILTER (WHERE type = 'job.queued') AS queued_at,
                 min(ts) FILTER (WHERE type IN ('job.assigned', 'job.cancelled', 'job.rejected')) AS left_at
          FROM events WHERE job_id IS NOT NULL AND error IS NULL GROUP BY job_id),
        edges AS (SELECT range AS b, $1::TIMESTAMPTZ + to_microseconds((range + 1) * $2::BIGINT) AS t FROM range($3))
        SELECT edges.b, count(q.job_id) AS depth FROM edges
        LEFT JOIN q ON q.queued_at <= edges.t AND (q.left_at IS NULL OR q.left_at > edges.t)
        GROUP BY 1"""
    deploy_sql = f"""
        WITH p AS (
          SELECT pipeline_id,
                 min(ts) FILTER (WHERE type IN ('pipeline.succeeded', 'pipeline.failed')) AS ended_at,
                 bool_or(type = 'pipeline.succeeded') AS ok,
                 min(ts) FILTER (WHERE type = 'pipeline.rollback_started') AS rb_start,
                 min(ts) FILTER (WHERE type = 'pipeline.rolled_back') AS rb_end
          FROM events WHERE type LIKE 'pipeline.%' AND error IS NULL GROUP BY pipeline_id)
        SELECT {b("ended_at")} AS b, count(*) AS n, count(*) FILTER (WHERE ok) AS ok,
               avg({ms_between("rb_end", "rb_start")}) FILTER (WHERE rb_end IS NOT NULL) AS rb_ms
        FROM p WHERE ended_at >= $1 GROUP BY 1"""
    jobs, ends, refused, steps, depth, deploys = await asyncio.gather(
        client.query(jobs_sql, p),
        client.query(ends_sql, p),
        client.query(refused_sql, p),
        client.query(steps_sql, p),
        client.query(depth_sql, [*p, buckets]),
        client.query(deploy_sql, p),
    )
    rows: list[dict[str, Any]] = [{"steps": {}} for _ in range(buckets)]

    def at(raw: Any) -> dict[str, Any] | None:
        i = int(raw)
        return rows[min(i, buckets - 1)] if i >= 0 else None  # `now` itself falls in the last bucket

    for r in jobs.dicts():
        if (row := at(r["b"])) is not None:
            row["requested"] = row.get("requested", 0) + r["n"]
    for r in ends.dicts():
        if (row := at(r["b"])) is not None:
            row["succeeded"] = row.get("succeeded", 0) + r["ok"]
            row["failed"] = row.get("failed", 0) + r["bad"]
    for r in refused.dicts():
        if (row := at(r["b"])) is not None:
            row["validation_failures"] = row.get("validation_failures", 0) + r["n"]
    for r in steps.dicts():
        if (row := at(r["b"])) is not None:
            row["steps"][r["step"]] = StepPoint(p50_ms=r["p50"], p95_ms=r["p95"])
    for r in depth.dicts():
        if (row := at(r["b"])) is not None:
            row["queue_depth"] = r["depth"]
    for r in deploys.dicts():
        if (row := at(r["b"])) is not None:
            row |= {"deploys": r["n"], "deploys_succeeded": r["ok"], "rollback_ms": r["rb_ms"]}
    out = [Bucket(start=since + width * i, **row) for i, row in enumerate(rows)]
    return MetricsHistory(since=since, until=now, bucket_s=width.total_seconds(), steps=[s[1] for s in STEPS], buckets=out)


def _as_time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else msgspec.convert(value, datetime, strict=False)
