"""The narrator: one event of a job told for people, the same on every surface."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrator.app.narrate import details, narrate, status_after, verdict_reason
from schemas import subjects
from schemas.events import (
    JobCancel,
    JobDenied,
    JobDispatch,
    JobLost,
    JobRequested,
    JobStarted,
    JobSucceeded,
    JobTimedOut,
)
from schemas.pipelines import PipelineApprovalRequired, PipelineStepStarted, PipelineSucceeded, StepJob
from schemas.records import Record

AT = datetime(2026, 1, 1, tzinfo=UTC)


def rec(event: object, kind: str, *, node: str | None = None, seq: int = 1) -> Record:
    subject = subjects.job("j1", kind) + (f".{node}" if node else "")
    return Record(seq=seq, subject=subject, stream_ts=AT, raw=b"{}", event=event)  # type: ignore[arg-type]


def test_each_family_says_what_happened() -> None:
    assert narrate(rec(JobRequested(command="echo hi", requested_by="ann"), "requested")).message == "requested by ann: bash: echo hi"
    started = narrate(rec(JobStarted(node="web-1", attempt=1, pid=42), "started"))
    assert (started.message, started.node, started.attempt) == ("started on web-1, pid 42", "web-1", 1)
    dispatch = JobDispatch(attempt=1, tool="bash", command="true", argv=["true"])
    assert narrate(rec(dispatch, "dispatch", node="web-2")).message == "dispatched to node web-2: bash: true"
    assert narrate(rec(JobCancel(attempt=2), "cancel", node="web-3")).node == "web-3"
    assert narrate(rec(JobSucceeded(attempt=1, exit_code=0), "succeeded")).message == "succeeded (exit code 0)"


def test_a_lost_job_that_will_be_retried_is_queued_again() -> None:
    lost = rec(JobLost(node="n1", attempt=1, reason="agent vanished", will_retry=True), "lost")
    told = narrate(lost)
    assert (told.message, told.level) == ("lost on node n1: agent vanished; trying again", "error")
    assert status_after(lost, "running") == "queued"
    final = rec(JobLost(node="n1", attempt=1, reason="agent vanished"), "lost")
    assert status_after(final, "running") == "lost"


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (JobTimedOut(attempt=1, timeout_s=1.5), "timed out after 1.5s"),
        (JobTimedOut(attempt=1), "timed out"),
        (JobDenied(by="bob", reason="change freeze"), "denied by bob: change freeze"),
        (JobSucceeded(attempt=1, exit_code=0), None),
    ],
)
def test_verdict_reason(event: object, reason: str | None) -> None:
    assert verdict_reason(event) == reason


def test_an_undecodable_record_says_why_and_other_families_list_their_fields() -> None:
    bad = Record(seq=3, subject=subjects.job("j1", "started"), stream_ts=AT, raw=b"x", error="not JSON")
    told = narrate(bad)
    assert (told.category, told.message, told.level) == ("started", "started: not JSON", "warning")
    assert status_after(bad, "assigned") == "running"
    done = Record(seq=4, subject=subjects.pipeline("p1", "succeeded"), stream_ts=AT, raw=b"{}", event=PipelineSucceeded())
    assert narrate(done).message == "succeeded"
    assert details(JobStarted(node="n", attempt=1, pid=7)) == "node=n, attempt=1, pid=7"
    # `nexus pipeline run` progress: a step's jobs by id, lists as their items (it printed `jobs=[{'job_id': ...}]`).
    jobs = [StepJob(job_id="p-s0-0", node="a"), StepJob(job_id="p-s0-1")]
    assert details(PipelineStepStarted(step="build", batch=0, jobs=jobs, nodes=["a"])) == "step=build, batch=0, jobs=p-s0-0 p-s0-1, nodes=a"
    gate = PipelineApprovalRequired(step="go", timeout_s=60.0, approvers=["alice", "bob"])
    assert details(gate) == "step=go, timeout_s=60.0, approvers=alice bob"
