"""Job routes: validate, create, re-run, list, show, cancel, approve, deny (tests and rollback: finished.py).

Creating a job publishes its `requested` event and answers once JetStream has
stored it; placement and execution happen later, visible on the job's stream.
State comes from DuckDB through the orchestrator (`NexusClient.query`); a job
whose `requested` event is stored but not reduced yet is shown from the log.
"""

from __future__ import annotations

import time
import types
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from orchestrator.api import nodes
from orchestrator.api.auth import identity_of, require
from orchestrator.api.bounds import check_job_fits
from orchestrator.api.context import ApiContext, Ctx
from orchestrator.api.errors import ProblemError, unknown_job, unknown_node
from orchestrator.api.models import (
    CancelAccepted,
    CancelRequest,
    CreateJobRequest,
    DecisionRecorded,
    DecisionRequest,
    JobCreated,
    JobList,
    JobOut,
    NoFields,
    ValidateRequest,
    ValidateResponse,
    ValidationWarning,
)
from orchestrator.api.openapi import problems
from orchestrator.app import jobs as jobs_app
from orchestrator.app import nodes as nodes_app
from orchestrator.app.jobs import CancelJob, DecideJob
from orchestrator.app.refusals import refuse_unrunnable
from orchestrator.app.rows import decoded
from orchestrator.client import new_job_id
from orchestrator.core.admission import Submission, worst
from orchestrator.core.judge import judge
from orchestrator.core.views import JobStatus
from schemas import subjects
from schemas.events import JobRequested
from schemas.limits import INT64_MAX, MAX_NAME_CHARS

_JOB_FIELDS = [f.name for f in msgspec.structs.fields(JobOut) if f.name != "stream_endpoint"]
_JOB_SQL = f"SELECT {', '.join(_JOB_FIELDS)} FROM jobs"


def stream_endpoint(job_id: str) -> str:
    return f"/api/v1/jobs/{job_id}/stream"


def job_out(row: dict[str, Any]) -> JobOut:
    """A `jobs` row (as the query RPC returns it: JSON columns as text) as the API's JobOut."""
    ns = types.SimpleNamespace(**decoded(row), stream_endpoint=stream_endpoint(row["job_id"]))
    return msgspec.convert(ns, JobOut, from_attributes=True, strict=False)


async def job_exists_in_log(ctx: ApiContext, job_id: str) -> bool:
    return await ctx.client.bus.last_seq(subject=subjects.job_all(job_id)) > 0


async def _first_request(ctx: ApiContext, job_id: str) -> tuple[int, JobRequested] | None:
    for rec in await ctx.client.history(job_id):
        if isinstance(rec.event, JobRequested):
            return rec.seq, rec.event
    return None


async def load_job(ctx: ApiContext, job_id: str) -> JobOut:
    """The job's state; 404 when the log has never heard of it."""
    subjects.check_id(job_id, "job id")
    rows = await ctx.client.query(f"{_JOB_SQL} WHERE job_id = ?", [job_id])
    if rows.rows:
        return job_out(rows.dicts()[0])
    first = await _first_request(ctx, job_id)
    if first is None:
        if await job_exists_in_log(ctx, job_id):
            raise ProblemError(404, "unknown-job", "Unknown job", f"job {job_id!r} has events but no valid request yet")
        raise unknown_job(job_id)
    seq, req = first
    return JobOut(
        job_id=job_id,
        status="requested",
        command=req.command,
        tool=req.tool,
        stream_endpoint=stream_endpoint(job_id),
        requested_node=req.node,
        labels=req.labels,
        working_dir=req.working_dir,
        timeout_s=req.timeout_s,
        priority=req.priority,
        tests=req.tests,
        parent=req.parent,
        metadata=req.metadata,
        requested_by=req.requested_by,
        after=req.after,
        retries=req.retries,
        idempotent=req.idempotent,
        requested_at=req.ts,
        first_seq=seq,
        last_seq=seq,
    )


# ---------------------------------------------------------------- analysis


@post(
    "/api/v1/jobs/validate",
    status_code=200,
    guards=[require("viewer")],
    summary="Analyse a command without running it",
    responses=problems(body=True),
)
async def validate_job(data: JSONBody[ValidateRequest], ctx: Ctx, request: Request[Any, Any, Any]) -> ValidateResponse:
    """Phase 1 alone, for this caller: the one verdict the orchestrator reaches for the same job
    (core.judge): findings of everything that would run, the policy's answer, checks of the
    target nodes. Nothing is submitted."""
    fleet = await nodes_app.candidates(ctx.client, ttl_s=ctx.node_ttl_s, now=datetime.now(UTC))
    started = time.perf_counter()
    verdict = judge(data.submission(identity_of(request.scope).user), ctx.policy, fleet)
    took_ms = (time.perf_counter() - started) * 1000
    found = [*verdict.findings, *verdict.node_findings]
    rows = await ctx.client.query(
        "SELECT avg(duration_ms) FROM jobs WHERE status = 'succeeded' AND command = ? AND tool = ?", [data.command, data.tool]
    )
    estimate = rows.rows[0][0] if rows.rows else None
    return ValidateResponse(
        valid=verdict.valid,
        severity=worst(found),
        warnings=[ValidationWarning(type=f.type, severity=f.severity, message=f.message) for f in found],
        suggestions=list(verdict.suggestions),
        parsed=verdict.parsed,
        approval_required=verdict.approval_needed,
        denied=verdict.reason if verdict.denied else None,
        invalid=verdict.invalid,
        validation_ms=round(took_ms, 3),
        estimated_duration=float(estimate) if estimate is not None else None,
    )


# ---------------------------------------------------------------- coordination


@post(
    "/api/v1/jobs",
    guards=[require("operator")],
    summary="Create a job; answers once its request is stored",
    responses={
        **problems(409, 422, body=True),
        200: ResponseSpec(
            JobCreated,
            description="This `jobId` was stored before with the same request: the existing job (`created`: false)",
            generate_examples=False,
        ),
    },
)
async def create_job(data: JSONBody[CreateJobRequest], ctx: Ctx, request: Request[Any, Any, Any]) -> Response[JobCreated]:
    cmd = data.command_for(identity_of(request.scope).user)
    job_id = jobs_app.job_id_of(cmd)
    refuse_unrunnable(
        Submission(
            command=cmd.command,
            tool=cmd.tool,
            env={**cmd.env, **cmd.secret_env},  # in clear here: a NUL in a secret value is as fatal
            tests=list(cmd.tests),
            working_dir=cmd.working_dir,
            job_id=job_id,
            after=list(cmd.after),
        )
    )
    if cmd.node is not None and not await nodes.node_known(ctx, cmd.node):
        raise unknown_node(cmd.node, status=422)
    req = await jobs_app.request_for(ctx.client, cmd, datetime.now(UTC))  # secrets sealed here
    check_job_fits(req)
    done = await jobs_app.submit(ctx.client, job_id, req)
    body = JobCreated(job_id=job_id, stream_endpoint=stream_endpoint(job_id), seq=done.seq, created=done.created)
    return Response(body, status_code=201 if done.created else 200, headers={"Location": f"/api/v1/jobs/{job_id}"})


@post(
    "/api/v1/jobs/{job_id:str}/rerun",
    status_code=201,
    guards=[require("operator")],
    summary="Run a job's request again, as a new job",
    responses=problems(403, 404, body=True),
)
async def rerun_job(
    job_id: FromPath[str], ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[NoFields | None] = None
) -> Response[JobCreated]:
    """The job's stored request again under a new id, every field the same (its env too, secret
    values still sealed: a view shows them masked, so no client could send them back), requested
    by the caller. What the console's Re-run button does. A request with secrets sealed for its
    requester only they may run again (403 otherwise)."""
    req = await jobs_app.request_again(ctx.client, job_id, identity_of(request.scope).user, datetime.now(UTC))
    check_job_fits(req)
    new_id = new_job_id()
    done = await jobs_app.submit(ctx.client, new_id, req)
    body = JobCreated(job_id=new_id, stream_endpoint=stream_endpoint(new_id), seq=done.seq, created=done.created)
    return Response(body, status_code=201, headers={"Location": f"/api/v1/jobs/{new_id}"})


@get("/api/v1/jobs", guards=[require("viewer")], summary="Jobs, newest first", responses=problems())
async def list_jobs(
    ctx: Ctx,
    status: FromQuery[JobStatus | None] = None,
    node: Annotated[str | None, QueryParameter(max_length=MAX_NAME_CHARS, description="Only jobs on this node.")] = None,
    tool: Annotated[str | None, QueryParameter(max_length=MAX_NAME_CHARS, description="Only jobs of this tool.")] = None,
    user: Annotated[str | None, QueryParameter(max_length=MAX_NAME_CHARS, description="Only jobs requested by this user.")] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000, description="At most this many jobs.")] = 50,
    before: Annotated[
        int | None, QueryParameter(ge=1, le=INT64_MAX, description="Only jobs whose first event is older than this sequence.")
    ] = None,
) -> JobList:
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("status", status), ("node", node), ("tool", tool), ("requested_by", user), ("first_seq <", before)):
        if value is not None:
            where.append(f"{column} ?" if column.endswith("<") else f"{column} = ?")
            params.append(value)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = await ctx.client.query(f"{_JOB_SQL}{clause} ORDER BY first_seq DESC LIMIT {limit + 1}", params)
    jobs = [job_out(r) for r in rows.dicts()]
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return JobList(jobs=jobs, next_before=jobs[-1].first_seq if more else None)


@get("/api/v1/jobs/{job_id:str}", guards=[require("viewer")], summary="One job's state", responses=problems(404))
async def get_job(job_id: FromPath[str], ctx: Ctx) -> JobOut:
    return await load_job(ctx, job_id)


@post(
    "/api/v1/jobs/{job_id:str}/cancel",
    status_code=202,
    guards=[require("operator")],
    summary="Cancel a job",
    responses=problems(404, 409, body=True),
)
async def cancel_job(
    job_id: FromPath[str], ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[CancelRequest | None] = None
) -> CancelAccepted:
    by = identity_of(request.scope).user
    await jobs_app.cancel(ctx.client, CancelJob(job_id=job_id, by=by, reason=data.reason if data is not None else None))
    return CancelAccepted(job_id=job_id)


@post(
    "/api/v1/jobs/{job_id:str}/approve",
    status_code=202,
    guards=[require("admin")],
    summary="Approve a job held by analysis",
    responses=problems(404, 409, body=True),
)
async def approve_job(
    job_id: FromPath[str], ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[DecisionRequest | None] = None
) -> DecisionRecorded:
    return await _decide(ctx, request, job_id, "approved", data)


@post(
    "/api/v1/jobs/{job_id:str}/deny",
    status_code=202,
    guards=[require("admin")],
    summary="Deny a job held by analysis",
    responses=problems(404, 409, body=True),
)
async def deny_job(
    job_id: FromPath[str], ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[DecisionRequest | None] = None
) -> DecisionRecorded:
    return await _decide(ctx, request, job_id, "denied", data)


async def _decide(
    ctx: ApiContext, request: Request[Any, Any, Any], job_id: str, decision: Literal["approved", "denied"], data: DecisionRequest | None
) -> DecisionRecorded:
    """Store the decision, then wait (`timeoutSeconds`) for what the orchestrator made of it: the
    caller learns a refusal (an approver the policy does not allow) from the answer, not later."""
    by = identity_of(request.scope).user
    body = data or DecisionRequest()
    seq = await jobs_app.decide(ctx.client, DecideJob(job_id=job_id, decision=decision, by=by, reason=body.reason))
    answer = await jobs_app.decision_answer(ctx.client, job_id, decision, seq, body.timeout_s)
    return DecisionRecorded(
        job_id=job_id, decision=decision, by=answer.by or by, seq=seq, outcome=answer.outcome, status=answer.status, reason=answer.reason
    )


ROUTES = [validate_job, create_job, rerun_job, list_jobs, get_job, cancel_job, approve_job, deny_job]
