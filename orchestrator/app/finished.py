"""Use cases on a finished job: run tests on it, roll it back.

    `request_tests`  publish `test_requested` on a job that ran (NeverRan); one pending run per job (TestsPending)
    `latest_tests`   the latest results, or that a run is pending
    `rollback`       run the undo command on the job's node as a new job (one builder: app.jobs)
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import msgspec

from bus.errors import StaleDecision
from orchestrator.app.errors import AppError, InvalidTest, JobChanged, NoSuchJob, WrongState
from orchestrator.app.jobs import ANONYMOUS, SubmitJob, final_status, job_request
from orchestrator.app.narrate import kind_of
from orchestrator.app.rows import decoded
from orchestrator.client import NexusClient
from orchestrator.core.assertions import tests_problem
from orchestrator.core.views import TERMINAL
from schemas import msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import JobExited, JobRequested, JobTestRequested
from schemas.values import JobTest, TestResult


class NotFinished(WrongState):
    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"job {job_id!r} is {status}; tests run on finished jobs")


class NeverRan(WrongState):
    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"job {job_id!r} never ran ({status} before any attempt exited); tests run on a job that ran")


class TestsPending(WrongState):
    __test__ = False  # not a pytest class

    def __init__(self, job_id: str) -> None:
        super().__init__(f"tests are already running on job {job_id!r}; read the results when they end")


class NoRollbackCommand(AppError):
    http_status = 422
    slug = "no-rollback-command"
    title = "No rollback command"

    def __init__(self) -> None:
        said = "the job has no undo command: give one (`nexus rollback -c CMD`, the API's `command`)"
        super().__init__(f"{said}, or submit jobs with metadata.rollback")


class RunTests(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    tests: list[JobTest]
    by: str = ANONYMOUS


class RollBack(msgspec.Struct, frozen=True, kw_only=True):
    """Undo a finished job: `command`, or else the job's `metadata.rollback`."""

    job_id: str
    command: str | None = None
    by: str = ANONYMOUS


def tests_request(cmd: RunTests, now: datetime) -> JobTestRequested:
    """The `test_requested` event; InvalidTest for a test that could never be judged (a bad pattern)."""
    if (why := tests_problem(cmd.tests)) is not None:
        raise InvalidTest(why)
    return JobTestRequested(ts=now, tests=list(cmd.tests), requested_by=cmd.by)


async def request_tests(client: NexusClient, job_id: str, ev: JobTestRequested) -> int:
    """Publish `test_requested` on a finished job that ran (an attempt exited) with no test run
    pending; returns its sequence. A job that never ran has no exit code or output to test: its
    tests could only fail, and the failure would be recorded as the job's (NeverRan).
    The orchestrator takes one request at a time and would ignore others, whose callers
    would wait for nothing; of two racing requests one wins (JobChanged)."""
    subjects.check_id(job_id, "job id")
    history = await client.history(job_id)
    if not history:
        raise NoSuchJob(job_id)
    if (status := final_status(history)) is None:
        raise NotFinished(job_id, "not finished")
    if not any(isinstance(r.event, JobExited) for r in history):
        raise NeverRan(job_id, status)
    kinds = [kind_of(r) for r in history]
    last_tested = max((i for i, k in enumerate(kinds) if k == "tested"), default=-1)
    if "test_requested" in kinds[last_tested + 1 :]:
        raise TestsPending(job_id)
    out = Outgoing(subjects.job(job_id, "test_requested"), ev, msgids.job(job_id, "test_requested", secrets.token_hex(6)))
    try:
        return (await client.bus.publish(out, expected_seq=history[-1].seq)).seq
    except StaleDecision:
        raise JobChanged(job_id) from None


class LatestTests(msgspec.Struct, frozen=True, kw_only=True):
    """A job's latest test results. `pending`: a test run is requested and not judged yet;
    `passed` is then None and `results` empty, not the previous run's, until it is."""

    passed: bool | None = None
    results: list[TestResult] = []
    pending: bool = False


async def latest_tests(client: NexusClient, job_id: str) -> LatestTests:
    """The job's latest test results from the state; a `test_requested` the state has not
    applied yet (its row's `last_seq` is before it) counts as pending too."""
    rows = await client.query("SELECT tests_passed, test_results, retest, last_seq FROM jobs WHERE job_id = ?", [job_id])
    if not rows.rows:
        return LatestTests()
    row = decoded(rows.dicts()[0])
    asked = await client.bus.last_seq(subject=subjects.job(job_id, "test_requested"))
    if row["retest"] or asked > row["last_seq"]:
        return LatestTests(pending=True)
    return LatestTests(passed=row["tests_passed"], results=msgspec.convert(row["test_results"] or [], list[TestResult]))


async def rollback_request(client: NexusClient, cmd: RollBack, now: datetime) -> JobRequested:
    """The `requested` of the rollback job: on the job's node, in its working directory with its
    env (as a pipeline step's rollback runs with the step's), `parent` and `metadata.rollback_of`
    naming it. Its secret env entries are left out: they are sealed for the job's requester."""
    subjects.check_id(cmd.job_id, "job id")
    sql = "SELECT status, node, metadata, working_dir, env, secrets FROM jobs WHERE job_id = ?"
    rows = (await client.query(sql, [cmd.job_id])).dicts()
    if not rows:
        if not await client.history(cmd.job_id):
            raise NoSuchJob(cmd.job_id)
        rows = [{"status": "requested", "node": None, "metadata": None}]
    row: dict[str, Any] = decoded(rows[0])
    if row["status"] not in TERMINAL or row["node"] is None:
        raise WrongState(f"job {cmd.job_id!r} is {row['status']}; only a finished job that ran on a node can be rolled back")
    command = cmd.command or (row["metadata"] or {}).get("rollback")
    if not isinstance(command, str) or not command.strip():
        raise NoRollbackCommand
    env = {n: v for n, v in (row["env"] or {}).items() if n not in (row["secrets"] or [])}
    undo = SubmitJob(
        command=command,
        node=row["node"],
        working_dir=row["working_dir"],
        env=env,
        parent=cmd.job_id,
        metadata={"rollback_of": cmd.job_id},
        requested_by=cmd.by,
    )
    return job_request(undo, now)

