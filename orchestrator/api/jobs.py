"""Job routes: validate, create, list, show, cancel, approve, deny (tests and rollback: finished.py).

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

from bus.errors import StaleDecision
from orchestrator.api import nodes
from orchestrator.api.auth import identity_of, require
from orchestrator.api.bounds import check_job_fits
from orchestrator.api.context import ApiContext, Ctx
from orchestrator.api.errors import ProblemError, unknown_job, unknown_node, wrong_state
from orchestrator.api.models import (
    CancelAccepted,
    CancelRequest,
    CreateJobRequest,
    DecisionRecorded,
    DecisionRequest,
    JobCreated,
    JobList,
    JobOut,
    NodeOut,
    ValidateRequest,
    ValidateResponse,
    ValidationWarning,
)
from orchestrator.api.openapi import problems
from orchestrator.client import new_job_id
from orchestrator.core import analysis as _analysis
from orchestrator.core.policy import SEVERITY_RANK
from orchestrator.core.views import TERMINAL, JobStatus
from schemas import msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import JobApproved, JobDenied, JobRequested
from schemas.limits import INT64_MAX, MAX_NAME_CHARS

_JOB_FIELDS = [f.name for f in msgspec.structs.fields(JobOut) if f.name != "stream_endpoint"]
_JOB_SQL = f"SELECT {', '.join(_JOB_FIELDS)} FROM jobs"
_JSON_FIELDS = ("labels", "tests", "metadata", "after", "warnings", "suggestions")


def stream_endpoint(job_id: str) -> str:
    return f"/api/v1/jobs/{job_id}/stream"


def job_out(row: dict[str, Any]) -> JobOut:
    """A `jobs` row (as the query RPC returns it: JSON columns as text) as the API's JobOut."""
    values = {k: (msgspec.json.decode(v) if k in _JSON_FIELDS and isinstance(v, str) else v) for k, v in row.items()}
    ns = types.SimpleNamespace(**values, stream_endpoint=stream_endpoint(row["job_id"]))
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
    """The analysis phase alone, as the orchestrator would run it for this caller: risk findings,
    the policy's verdict, and checks of the target nodes. Nothing is submitted."""
    started = time.perf_counter()
    analysis = _analysis.analyze(data.command, data.tool)
    took_ms = (time.perf_counter() - started) * 1000
    warnings = [ValidationWarning(type=f.type, severity=f.severity, message=f.message) for f in analysis.findings]
    targets = list(dict.fromkeys([*([data.node_id] if data.node_id else []), *data.node_ids]))
    fleet = await nodes.fleet(ctx) if targets else {}
    warnings += _node_warnings(fleet, targets, data.tool)
    labels = [fleet[n].labels for n in targets if n in fleet]
    user = identity_of(request.scope).user
    policy = ctx.policy
    denied = None if policy.may_submit(user) else f"user {user!r} may not submit jobs"
    denied = denied or policy.denial(data.command, data.tool, labels)
    severity = max((w.severity for w in warnings), key=lambda s: SEVERITY_RANK.get(s, 1), default=None)
    rows = await ctx.client.query(
        "SELECT avg(duration_ms) FROM jobs WHERE status = 'succeeded' AND command = ? AND tool = ?", [data.command, data.tool]
    )
    estimate = rows.rows[0][0] if rows.rows else None
    return ValidateResponse(
        valid=denied is None and not any(w.severity == "critical" for w in warnings),
        severity=severity,  # type: ignore[arg-type]
        warnings=warnings,
        suggestions=list(analysis.suggestions),
        parsed=analysis.parsed,
        approval_required=policy.needs_approval(analysis.severity, any(policy.is_production(lb) for lb in labels)),
        denied=denied,
        validation_ms=round(took_ms, 3),
        estimated_duration=float(estimate) if estimate is not None else None,
    )


def _node_warnings(fleet: dict[str, NodeOut], targets: list[str], tool: str) -> list[ValidationWarning]:
    found: list[ValidationWarning] = []
    for node_id in targets:
        node = fleet.get(node_id)
        if node is None:
            found.append(ValidationWarning(type="unknown_node", severity="critical", message=f"node {node_id!r} is not registered"))
        elif not node.live:
            found.append(ValidationWarning(type="node_offline", severity="warning", message=f"node {node_id!r} is offline (no heartbeat)"))
        elif tool not in node.tools:
            msg = f"tool {tool!r} is not installed on node {node_id!r}"
            found.append(ValidationWarning(type="tool_missing", severity="critical", message=msg))
    return found


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
    job_id = data.job_id or new_job_id()
    if data.node_id is not None and not await nodes.node_known(ctx, data.node_id):
        raise unknown_node(data.node_id, status=422)
    req = JobRequested(
        ts=datetime.now(UTC),
        command=data.command,
        tool=data.tool,
        node=data.node_id,
        labels=data.labels,
        working_dir=data.working_dir,
        env=data.env,
        timeout_s=data.timeout_s,
        priority=data.priority,
        tests=data.tests,
        parent=data.parent,
        metadata=data.metadata,
        requested_by=identity_of(request.scope).user,
        after=data.after,
        retries=data.retries,
        idempotent=data.idempotent,
    )
    check_job_fits(req)
    headers = {"Location": f"/api/v1/jobs/{job_id}"}
    if data.job_id is not None and await job_exists_in_log(ctx, job_id):
        # The job id is the idempotency key: a retried POST gets the same job, not a second one.
        first = await _first_request(ctx, job_id)
        if first is None or (first[1].command, first[1].tool, first[1].node) != (req.command, req.tool, req.node):
            raise ProblemError(409, "job-exists", "Job exists", f"job id {job_id!r} is already used by a different request")
        body = JobCreated(job_id=job_id, stream_endpoint=stream_endpoint(job_id), seq=first[0], created=False)
        return Response(body, status_code=200, headers=headers)
    seq = await ctx.client.submit(job_id, req)
    return Response(JobCreated(job_id=job_id, stream_endpoint=stream_endpoint(job_id), seq=seq), status_code=201, headers=headers)


@get("/api/v1/jobs", guards=[require("viewer")], summary="Jobs, newest first", responses=problems())
async def list_jobs(
    ctx: Ctx,
    status: FromQuery[JobStatus | None] = None,
    node: Annotated[str | None, QueryParameter(max_length=MAX_NAME_CHARS, description="Only jobs on this node.")] = None,
    tool: Annotated[str | None, QueryParameter(max_length=MAX_NAME_CHARS, description="Only jobs of this tool.")] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000, description="At most this many jobs.")] = 50,
    before: Annotated[
        int | None, QueryParameter(ge=1, le=INT64_MAX, description="Only jobs whose first event is older than this sequence.")
    ] = None,
) -> JobList:
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("status", status), ("node", node), ("tool", tool), ("first_seq <", before)):
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
    job = await load_job(ctx, job_id)
    if job.status in TERMINAL:
        raise wrong_state(f"job {job_id!r} already ended ({job.status}); there is nothing to cancel")
    reason = data.reason if data is not None else None
    await ctx.client.cancel(job_id, by=identity_of(request.scope).user, reason=reason)
    return CancelAccepted(job_id=job_id)


async def _decide(ctx: ApiContext, job_id: str, decision: Literal["approved", "denied"], by: str, reason: str | None) -> int:
    """Publish `approved`/`denied` for a job held for approval (the protocol of `nexus approve`)."""
    subjects.check_id(job_id, "job id")
    history = await ctx.client.history(job_id)
    if not history:
        raise unknown_job(job_id)
    kinds = [r.subject.split(".")[4] for r in history]
    hold = max((i for i, k in enumerate(kinds) if k == "approval_required"), default=None)
    if hold is None or any(k in ("approved", "denied") for k in kinds[hold + 1 :]):
        raise wrong_state(f"job {job_id!r} is not waiting for approval")
    ev = (
        JobApproved(ts=datetime.now(UTC), by=by, reason=reason)
        if decision == "approved"
        else JobDenied(ts=datetime.now(UTC), by=by, reason=reason)
    )
    out = Outgoing(subjects.job(job_id, decision), ev, msgids.job(job_id, decision, history[-1].seq))
    try:
        # The hold must still be the job's last event: of two racing decisions one wins.
        return (await ctx.client.bus.publish(out, expected_seq=history[-1].seq)).seq
    except StaleDecision:
        raise wrong_state(f"job {job_id!r} changed meanwhile; read it again and retry") from None


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
    by = identity_of(request.scope).user
    seq = await _decide(ctx, job_id, "approved", by, data.reason if data else None)
    return DecisionRecorded(job_id=job_id, decision="approved", by=by, seq=seq)


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
    by = identity_of(request.scope).user
    seq = await _decide(ctx, job_id, "denied", by, data.reason if data else None)
    return DecisionRecorded(job_id=job_id, decision="denied", by=by, seq=seq)


ROUTES = [validate_job, create_job, list_jobs, get_job, cancel_job, approve_job, deny_job]
