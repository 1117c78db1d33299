"""Per-phase metrics (JSON, Prometheus, DuckDB views) against counts made by hand from the event log."""

from __future__ import annotations

import asyncio
import json
import math
import re
from datetime import datetime
from typing import Any

import duckdb
import httpx
import pytest

from orchestrator import metrics_sql
from orchestrator.core.policy import Policy
from schemas.events import JobRequested
from schemas.records import Record
from tests.conftest import Stack, wait_for
from tests.integration.test_api import running_api

END_KINDS = {"rejected", "denied", "succeeded", "failed", "timed_out", "cancelled", "lost"}
RAN = {"succeeded", "failed", "timed_out", "cancelled", "lost"}


def quantile_cont(values: list[float], p: float) -> float:
    """DuckDB's quantile_cont: linear interpolation between closest ranks."""
    if not values:
        return 0.0
    xs = sorted(values)
    pos = (len(xs) - 1) * p
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def ms(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return (later - earlier).total_seconds() * 1000


class Hand:
    """What one job's history in the log says, counted without SQL."""

    def __init__(self, records: list[Record]) -> None:
        self.first: dict[str, datetime] = {}
        self.payloads: dict[str, dict[str, Any]] = {}
        self.end: str | None = None
        for rec in records:
            if rec.event is None:
                continue
            kind = rec.subject.split(".")[4]
            ts = rec.stream_ts  # the record's time is the server's (DESIGN §9), never the payload's
            self.first.setdefault(kind, ts)
            self.payloads.setdefault(kind, json.loads(rec.raw))
            if kind in END_KINDS and self.end is None:
                self.end = kind
                self.finished = ts
        raw_first_output = self.payloads.get("exited", {}).get("first_output_at")
        self.first_output = datetime.fromisoformat(raw_first_output) if raw_first_output else None

    def at(self, kind: str) -> datetime | None:
        return self.first.get(kind)

    @property
    def ran(self) -> bool:
        return self.end in RAN and "assigned" in self.first


async def _running(api: httpx.AsyncClient, job_id: str) -> bool:
    return (await api.get(f"/api/v1/jobs/{job_id}")).json()["status"] == "running"


@pytest.mark.timeout(180)
async def test_pipeline_metrics_match_the_log_counted_by_hand(stack: Stack) -> None:
    # Hold critical commands on production only, as this count of harmless validations expects (the default holds them anywhere).
    stack.orchestrator.policy = Policy(approval_severity_anywhere="never")
    async with running_api(stack) as api:
        # An empty log: every phase reads zero, from real SQL.
        empty = (await api.get("/api/v1/metrics/pipeline")).json()
        assert empty["execution"]["totalJobs"] == 0 and empty["analysis"]["totalValidations"] == 0
        assert all(step["count"] == 0 and step["p95"] == 0 for step in empty["latency"])

        async def submit(command: str, **extra: Any) -> str:
            resp = await api.post("/api/v1/jobs", json={"command": command, **extra})
            assert resp.status_code == 201, resp.text
            return str(resp.json()["jobId"])

        to_cancel = await submit("sleep 600")
        await wait_for(lambda: _running(api, to_cancel), what="long job running")
        ids = [to_cancel]
        ids += await asyncio.gather(
            submit("sleep 30", timeoutSeconds=0.5),
            *(submit(f"echo ok-{i}; sleep 0.{i}") for i in range(4)),
            submit("echo bad; exit 3"),
            submit("false && shutdown -h now || echo guarded"),  # critical finding, harmless: `false &&`
            submit("echo as-sh", tool="sh"),
        )
        await api.post(f"/api/v1/jobs/{to_cancel}/cancel")
        ghost = "ghost-node-job"
        await stack.client.submit(ghost, JobRequested(command="true", node="ghost"))  # the API would refuse it
        ids.append(ghost)
        for job_id in ids:
            await stack.wait_job(job_id, timeout=60)

        hands = {job_id: Hand(await stack.client.history(job_id)) for job_id in ids}
        got = (await api.get("/api/v1/metrics/pipeline")).json()
        scraped = await api.get("/metrics")
        prom = scraped.text
    assert scraped.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"  # the charset once

    ran = [h for h in hands.values() if h.ran]
    by_end = {k: sum(1 for h in ran if h.end == k) for k in RAN}
    assert by_end == {"succeeded": 6, "failed": 1, "timed_out": 1, "cancelled": 1, "lost": 0}
    durations = [float(h.payloads["exited"]["duration_ms"]) for h in ran if "exited" in h.payloads]

    x = got["execution"]
    assert (x["totalJobs"], x["successfulJobs"], x["failedJobs"], x["timedOutJobs"], x["cancelledJobs"], x["lostJobs"]) == (
        len(ran),
        by_end["succeeded"],
        by_end["failed"],
        by_end["timed_out"],
        by_end["cancelled"],
        0,
    )
    assert x["successRate"] == pytest.approx(by_end["succeeded"] / len(ran))
    assert x["timeoutRate"] == pytest.approx(1 / len(ran))
    assert x["avgDuration"] == pytest.approx(mean(durations))
    assert x["p95Duration"] == pytest.approx(quantile_cont(durations, 0.95))
    tools = {g["name"]: g["totalJobs"] for g in x["byTool"]}
    assert tools == {"bash": len(ran) - 1, "sh": 1}
    assert [(g["name"], g["totalJobs"]) for g in x["byNode"]] == [("node-1", len(ran))]

    validated = [h for h in hands.values() if "validated" in h.payloads]
    analysis_ms = [float(h.payloads["validated"]["duration_ms"]) for h in validated]
    critical = [h for h in validated if h.payloads["validated"].get("severity") == "critical"]
    a = got["analysis"]
    assert (a["totalValidations"], a["validationFailures"], a["failuresLastHour"]) == (len(validated), len(critical), len(critical))
    # The ghost job is rejected at analysis (no node could ever take it: issue 9), before any verdict.
    assert len(validated) == len(ids) - 1 and len(critical) == 1
    assert hands[ghost].end == "rejected" and "validated" not in hands[ghost].payloads
    assert a["avgValidationTime"] == pytest.approx(mean(analysis_ms))
    assert a["p95ValidationTime"] == pytest.approx(quantile_cont(analysis_ms, 0.95))
    assert a["approvalsRequired"] == 0 and {"type": "power", "count": 1} in a["commonFindings"]

    c = got["coordination"]
    assert (c["queueDepth"], c["pendingJobs"], c["executingJobs"]) == (0, 0, 0)
    waits = []
    for h in hands.values():
        left = [t for k in ("assigned", "cancelled", "rejected") if (t := h.at(k)) is not None]
        wait = ms(min(left), h.at("queued")) if left else None
        if wait is not None and wait >= 0:
            waits.append(wait)
    assert c["queuedJobs"] == sum(1 for h in hands.values() if h.at("queued"))
    assert c["avgTimeQueued"] == pytest.approx(mean(waits))

    # Phases that publish no events yet: zeros, not constants (the same SQL runs).
    assert got["test"] == {"totalRuns": 0, "passedRuns": 0, "failedRuns": 0, "passRate": 0.0, "rollbacks": 0, "failingAssertions": []}
    assert got["deploy"]["totalDeployments"] == 0 and got["deploy"]["avgRollbackTime"] == 0.0

    # Step latencies, each from the latest earlier step the job went through.
    def steps(h: Hand) -> dict[str, float | None]:
        validated_or_requested = h.at("validated") or h.at("requested")
        return {
            "requested_to_validated": ms(h.at("validated"), h.at("requested")),
            "validated_to_assigned": ms(h.at("assigned"), validated_or_requested),
            "assigned_to_accepted": ms(h.at("accepted"), h.at("assigned")),
            "accepted_to_first_output": ms(h.first_output, h.at("accepted")),
            "first_output_to_exited": ms(h.at("exited"), h.first_output or h.at("accepted")),
            "exited_to_tested": ms(h.at("tested"), h.at("exited")),
            "requested_to_finished": ms(h.finished, h.at("requested")) if h.at("exited") else None,
        }

    per_step: dict[str, list[float]] = {}
    for h in hands.values():
        for name, value in steps(h).items():
            per_step.setdefault(name, [])
            if value is not None:
                per_step[name].append(value)
    assert [s["step"] for s in got["latency"]] == list(per_step)
    for s in got["latency"]:
        values = per_step[s["step"]]
        assert s["count"] == len(values), s
        assert s["mean"] == pytest.approx(mean(values), abs=1e-3), s
        for q in ("p50", "p95", "p99"):
            assert s[q] == pytest.approx(quantile_cont(values, int(q[1:]) / 100), abs=1e-3), (s, q)
    assert next(s for s in got["latency"] if s["step"] == "assigned_to_accepted")["count"] == len(ran)

    # Prometheus text: the same numbers, in seconds.
    samples = dict(re.findall(r"^(\S+) (\S+)$", prom, re.MULTILINE))
    assert samples['nexus_execution_jobs_total{status="succeeded"}'] == str(by_end["succeeded"])
    assert samples['nexus_execution_tool_jobs_total{tool="sh",status="succeeded"}'] == "1"
    assert float(samples['nexus_job_step_seconds_count{step="assigned_to_accepted"}']) == len(ran)
    p95 = next(s["p95"] for s in got["latency"] if s["step"] == "requested_to_finished")
    assert float(samples['nexus_job_step_seconds{step="requested_to_finished",quantile="0.95"}']) == pytest.approx(p95 / 1000)
    assert "# TYPE nexus_job_step_seconds summary" in prom

    # The same SQL as DuckDB views (what `nexus sql` will see once the store creates them).
    await stack.stop_orchestrator()
    con = duckdb.connect(str(stack.db))
    try:
        for ddl in metrics_sql.view_ddl():
            con.execute(ddl)
        row = con.execute("SELECT total_jobs, successful_jobs, timed_out_jobs FROM metrics_execution").fetchone()
        assert row == (x["totalJobs"], x["successfulJobs"], x["timedOutJobs"])
        n_steps = con.execute("SELECT count(*) FROM metrics_job_steps").fetchone()
        assert n_steps == (len(ids),)
    finally:
        con.close()
