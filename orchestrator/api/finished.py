"""Routes on a finished job: run tests on it, read their results, roll it back.

Tests run once the job ended (node-side checks in a verification job on its
node); the orchestrator takes one test request per job at a time, so a second
one while a run is pending is a 409 rather than a wait for nothing. A rollback
is a new job on the same node whose success adds `rolled_back` to this one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody

from orchestrator.api.auth import identity_of, require
from orchestrator.api.bounds import check_job_fits
from orchestrator.api.context import Ctx
from orchestrator.api.jobs import load_job, stream_endpoint
from orchestrator.api.models import RollbackRequest, RollbackStarted, TestRequest, TestResultOut, TestResults
from orchestrator.api.openapi import problems
from orchestrator.app import finished as finished_app
from orchestrator.app.finished import RollBack, RunTests
from orchestrator.app.refusals import refuse_too_large
from orchestrator.client import new_job_id


@post(
    "/api/v1/jobs/{job_id:str}/test",
    status_code=200,
    guards=[require("operator")],
    summary="Run tests on a finished job",
    responses={
        **problems(404, 409, 422, body=True),
        202: ResponseSpec(
            TestResults,
            description="The tests are requested but had no result within `timeoutSeconds`: `passed` is null and "
            "`pending` true; read `Location` (GET test-results) until `pending` is false",
            generate_examples=False,
        ),
    },
)
async def test_job(job_id: FromPath[str], ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[TestRequest]) -> Response[TestResults]:
    """Publishes `test_requested` and answers with the `tested` results (node-side checks
    run in a verification job on the job's node)."""
    ev = finished_app.tests_request(RunTests(job_id=job_id, tests=list(data.tests), by=identity_of(request.scope).user), datetime.now(UTC))
    refuse_too_large(ev, "the test request")
    seq = await finished_app.request_tests(ctx.client, job_id, ev)
    try:
        tested = await ctx.client.wait_tested(job_id, seq, data.timeout_s)
    except TimeoutError:
        # Not a failure of the tests nor of the server: they run on, the results come later.
        headers = {"Location": f"/api/v1/jobs/{job_id}/test-results"}
        return Response(TestResults(job_id=job_id, passed=None, pending=True), status_code=202, headers=headers)
    results = [TestResultOut(**msgspec.structs.asdict(r)) for r in tested.results]
    return Response(TestResults(job_id=job_id, passed=tested.passed, results=results))


@get(
    "/api/v1/jobs/{job_id:str}/test-results",
    guards=[require("viewer")],
    summary="A job's latest test results",
    responses=problems(404),
)
async def test_results(job_id: FromPath[str], ctx: Ctx) -> TestResults:
    """While a test run is pending, `pending` is true and `passed` null (not the previous run's)."""
    await load_job(ctx, job_id)
    latest = await finished_app.latest_tests(ctx.client, job_id)
    results = [TestResultOut(**msgspec.structs.asdict(r)) for r in latest.results]
    return TestResults(job_id=job_id, passed=latest.passed, results=results, pending=latest.pending)


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
    undo = RollBack(job_id=job_id, command=data.command if data is not None else None, by=identity_of(request.scope).user)
    req = await finished_app.rollback_request(ctx.client, undo, datetime.now(UTC))
    rollback_id = new_job_id()
    check_job_fits(req)
    await ctx.client.submit(rollback_id, req)
    return RollbackStarted(job_id=rollback_id, rollback_of=job_id, stream_endpoint=stream_endpoint(rollback_id))


ROUTES = [test_job, test_results, rollback_job]
