"""Routes on a finished job: run tests on it, read their results, roll it back.

Tests run once the job ended (node-side checks in a verification job on its
node); the orchestrator takes one test request per job at a time, so a second
one while a run is pending is a 409 rather than a wait for nothing. A rollback
is a new job on the same node whose success adds `rolled_back` to this one.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody

from bus.errors import StaleDecision
from orchestrator.api.auth import identity_of, require
from orchestrator.api.bounds import check_fits, check_job_fits
from orchestrator.api.context import ApiContext, Ctx
from orchestrator.api.errors import ProblemError, wrong_state
from orchestrator.api.jobs import load_job, stream_endpoint
from orchestrator.api.models import RollbackRequest, RollbackStarted, TestRequest, TestResultOut, TestResults
from orchestrator.api.openapi import problems
from orchestrator.client import new_job_id
from orchestrator.core.views import TERMINAL
from schemas import msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import JobRequested, JobTestRequested
from schemas.values import JobTest


@post(
    "/api/v1/jobs/{job_id:str}/test",
    status_code=200,
    guards=[require("operator")],
    summary="Run tests on a finished job",
    responses={
        **problems(404, 409, body=True),
        202: ResponseSpec(
            TestResults,
            description="The tests are requested but had no result within `timeoutSeconds`: `passed` is null; "
            "read `Location` (GET test-results) later",
            generate_examples=False,
        ),
    },
)
async def test_job(job_id: FromPath[str], ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[TestRequest]) -> Response[TestResults]:
    """Publishes `test_requested` and answers with the `tested` results (node-side checks
    run in a verification job on the job's node)."""
    job = await load_job(ctx, job_id)
    if job.status not in TERMINAL:
        raise wrong_state(f"job {job_id!r} is {job.status}; tests run on finished jobs")
    seq = await _request_tests(ctx, job_id, list(data.tests), by=identity_of(request.scope).user)
    try:
        tested = await ctx.client.wait_tested(job_id, seq, data.timeout_s)
    except TimeoutError:
        # Not a failure of the tests nor of the server: they run on, the results come later.
        headers = {"Location": f"/api/v1/jobs/{job_id}/test-results"}
        return Response(TestResults(job_id=job_id, passed=None), status_code=202, headers=headers)
    results = [TestResultOut(**msgspec.structs.asdict(r)) for r in tested.results]
    return Response(TestResults(job_id=job_id, passed=tested.passed, results=results))


async def _request_tests(ctx: ApiContext, job_id: str, tests: list[JobTest], by: str) -> int:
    """Publish `test_requested`, unless a test run is pending: the orchestrator takes one
    request at a time and ignores the others, whose callers would wait for nothing."""
    history = await ctx.client.history(job_id)
    kinds = [r.subject.split(".")[4] for r in history]
    last_tested = max((i for i, k in enumerate(kinds) if k == "tested"), default=-1)
    if "test_requested" in kinds[last_tested + 1 :]:
        raise wrong_state(f"tests are already running on job {job_id!r}; read GET test-results when they end")
    ev = JobTestRequested(ts=datetime.now(UTC), tests=tests, requested_by=by)
    check_fits(ev, "the test request")
    out = Outgoing(subjects.job(job_id, "test_requested"), ev, msgids.job(job_id, "test_requested", secrets.token_hex(6)))
    try:
        # The job's last event must still be the one read: of two racing requests one wins.
        return (await ctx.client.bus.publish(out, expected_seq=history[-1].seq)).seq
    except StaleDecision:
        raise wrong_state(f"job {job_id!r} changed meanwhile; read it again and retry") from None


@get(
    "/api/v1/jobs/{job_id:str}/test-results",
    guards=[require("viewer")],
    summary="A job's latest test results",
    responses=problems(404),
)
async def test_results(job_id: FromPath[str], ctx: Ctx) -> TestResults:
    await load_job(ctx, job_id)
    rows = await ctx.client.query("SELECT tests_passed, test_results FROM jobs WHERE job_id = ?", [job_id])
    if not rows.rows:
        return TestResults(job_id=job_id, passed=None)
    passed, raw = rows.rows[0]
    results = msgspec.json.decode(raw, type=list[TestResultOut]) if isinstance(raw, str) else []
    return TestResults(job_id=job_id, passed=passed, results=results)


# ---------------------------------------------------------------- deploy phase


@post(
    "/api/v1/jobs/{job_id:str}/rollback",
    status_code=202,
    guards=[require("operator")],
    summary="Roll back a deployed job",
    responses=problems(404, 409, 413, 422, body=True),
)
async def rollback_job(
    job_id: FromPath[str], ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[RollbackRequest | None] = None
) -> RollbackStarted:
    """Runs the undo command on the job's node as a new job (`parent` and `metadata.rollback_of`
    name this one); when it succeeds, this job gets a `rolled_back` event."""
    job = await load_job(ctx, job_id)
    if job.status not in TERMINAL or job.node is None:
        raise wrong_state(f"job {job_id!r} is {job.status}; only a finished job that ran on a node can be rolled back")
    command = (data.command if data is not None else None) or job.metadata.get("rollback")
    if not isinstance(command, str) or not command.strip():
        raise ProblemError(422, "no-rollback-command", "No rollback command", "give `command`, or submit jobs with metadata.rollback")
    rollback_id = new_job_id()
    req = JobRequested(
        command=command, node=job.node, parent=job_id, metadata={"rollback_of": job_id},
        requested_by=identity_of(request.scope).user,
    )  # fmt: skip
    check_job_fits(req)
    await ctx.client.submit(rollback_id, req)
    return RollbackStarted(job_id=rollback_id, rollback_of=job_id, stream_endpoint=stream_endpoint(rollback_id))


ROUTES = [test_job, test_results, rollback_job]
