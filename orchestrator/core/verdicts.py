"""Phase 4 (test) and the verdict of a job, and tests run later on a finished job.

Pure: the output scan and the verification job come in as arguments.
"""

from __future__ import annotations

from datetime import datetime

from orchestrator.core.assertions import OutputScan, evaluate
from orchestrator.core.outgoing import out
from orchestrator.core.views import JobView
from schemas import msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import JobCancelled, JobFailed, JobRequested, JobRolledBack, JobSucceeded, JobTested, JobTimedOut
from schemas.values import NODE_TESTS, ExitCodeTest, JobTest, TestResult


def exited(job: JobView, now: datetime, output: OutputScan | str | None) -> list[Outgoing]:
    """Phase 4: the attempt's tests, then the verdict."""
    if not job.tests or job.killed_by is not None or job.exit_code is None:
        return [verdict(job, now)]
    results = evaluate(job.tests, job.exit_code, output, job.checks)
    passed = all(r.passed for r in results)
    tested = out(job, JobTested(ts=now, attempt=job.attempt, passed=passed, results=results), "tested")
    # Without an explicit exit_code test, "exited as expected" still means exit 0.
    exit_ok = job.exit_code == 0 or any(isinstance(t, ExitCodeTest) for t in job.tests)
    if passed and exit_ok:
        return [tested, out(job, JobSucceeded(ts=now, attempt=job.attempt, exit_code=job.exit_code), "succeeded")]
    problems = [] if exit_ok else [f"exit code {job.exit_code}"]
    failed = ", ".join(f"{r.type} (expected {r.expected}, got {r.actual})" for r in results if not r.passed)
    if failed:
        problems.append(f"tests failed: {failed}")
    failure = JobFailed(ts=now, attempt=job.attempt, reason="; ".join(problems), exit_code=job.exit_code)
    return [tested, out(job, failure, "failed")]


def rollback_done(job: JobView, now: datetime) -> Outgoing | None:
    """When a rollback job succeeds, the job it undid is marked `rolled_back`."""
    target = job.metadata.get("rollback_of")
    if job.status != "succeeded" or not isinstance(target, str) or not subjects.is_valid_id(target):
        return None
    ev = JobRolledBack(ts=now, rollback_job=job.job_id)
    return Outgoing(subjects.job(target, "rolled_back"), ev, msgids.job(target, "rolled_back", job.job_id))


def retest(job: JobView, now: datetime, verification: JobView | None, output: OutputScan | str | None) -> list[Outgoing]:
    """Tests on a finished job: node-side ones through a verification job on its node."""
    node_tests: list[JobTest] = [t for t in job.retest if isinstance(t, NODE_TESTS)]
    checks: list[TestResult] = []
    if node_tests:
        child = verification
        if child is None:
            if job.node is None or job.retest_job is None:
                results = [TestResult(type="node", passed=False, expected="a node to check on", actual="the job never ran on a node")]
                return [out(job, JobTested(ts=now, attempt=job.attempt, passed=False, results=results), "tested")]
            # Checked where the job ran: its working directory and env (secret values are sealed
            # for the job's requester, so its secret entries are left out).
            req = JobRequested(
                command="true",
                node=job.node,
                working_dir=job.working_dir,
                env={n: v for n, v in job.env.items() if n not in job.secrets},
                tests=node_tests,
                parent=job.job_id,
                metadata={"verifies": job.job_id},
                requested_by=job.retest_by,
                ts=now,
            )
            return [Outgoing(subjects.job(job.retest_job, "requested"), req, msgids.job_request(job.retest_job))]
        if not child.terminal:
            return []
        checks = [r for r in child.test_results if r.type in ("file_exists", "http_ok", "command")] or list(child.checks)
    missing = "no result from the agent"
    if node_tests and verification is not None and not checks:  # it never ran: say why (a policy refused it, say)
        missing = f"no result: the verification job {verification.job_id} was {verification.status}" + (
            f" ({verification.reason})" if verification.reason else ""
        )
    results = evaluate(job.retest, job.exit_code, output, checks, no_exit_code(job), missing)
    tested = JobTested(ts=now, attempt=job.attempt, passed=all(r.passed for r in results), results=results)
    return [Outgoing(subjects.job(job.job_id, "tested"), tested, msgids.job(job.job_id, "tested", job.last_seq))]


def no_exit_code(job: JobView) -> str:
    """What an exit_code test of `job` got when the job has no exit code, and why."""
    if job.exited_at is None:
        return f"no exit code (the job never exited: {job.status})"
    why = [f"killed by signal {job.signal}"] if job.signal else []
    why += {"cancel": ["cancelled"], "timeout": ["timed out"]}.get(job.killed_by or "", [])
    return f"no exit code ({', '.join(why) or job.reason or 'did not exit normally'})"


def verdict(job: JobView, now: datetime) -> Outgoing:
    a = job.attempt
    if job.killed_by == "timeout":
        return out(job, JobTimedOut(ts=now, attempt=a, timeout_s=job.timeout_s), "timed_out")
    if job.killed_by == "cancel":
        return out(job, JobCancelled(ts=now, reason="cancelled while running"), "cancelled")
    if job.exit_code is None:
        reason = job.reason or (f"killed by signal {job.signal}" if job.signal else "did not exit normally")
        return out(job, JobFailed(ts=now, attempt=a, reason=reason), "failed")
    expected = next((t.expected for t in job.tests if isinstance(t, ExitCodeTest)), 0)
    if job.exit_code != expected:
        reason = f"exit code {job.exit_code}" + (f", expected {expected}" if expected else "")
        return out(job, JobFailed(ts=now, attempt=a, reason=reason, exit_code=job.exit_code), "failed")
    return out(job, JobSucceeded(ts=now, attempt=a, exit_code=job.exit_code), "succeeded")
