"""Routes the web console reads besides those of DESIGN.md section 7; each is a thin shell over
an application use case (app.console, app.metrics_history, app.pipelines), so the CLI or another
client gets the same answers.

    GET  /api/v1/whoami                                   the caller's user and role (what to show)
    GET  /api/v1/feed                                     SSE: every job and pipeline event, live
    GET  /api/v1/approvals                                held jobs and pipeline steps at their gate
    GET  /api/v1/jobs/:id/history                         a job's every event (its stream ends at its verdict)
    GET  /api/v1/pipelines                                pipelines, newest first
    POST /api/v1/pipelines/:id/steps/:step/approve|deny   answer a pipeline's approval gate
    GET  /api/v1/metrics/history                          the per-phase metrics as time series

The feed is left out of the OpenAPI document (an endless stream, docs/console.md says
what it sends). The feed's event ids are sequences of NEXUS_EVENTS: `Last-Event-ID: N` resumes
after N (no gap, no repeat); without it the feed starts at the log's end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, get, post
from litestar.params import FromPath, HeaderParameter, JSONBody, PathParameter, QueryParameter
from litestar.response import Stream

from orchestrator.api.auth import RANK, identity_of, require
from orchestrator.api.context import ApiContext, Ctx
from orchestrator.api.errors import ProblemError
from orchestrator.api.models import DECISION_OUTCOME_DOC, ID_PATTERN, DecisionRequest
from orchestrator.api.openapi import problems
from orchestrator.app import console as console_app
from orchestrator.app import pipelines as pipelines_app
from orchestrator.app.metrics_history import MAX_BUCKETS, MetricsHistory, metrics_history
from schemas import subjects
from schemas.envelope import Timestamp
from schemas.limits import INT64_MAX

_encoder = msgspec.json.Encoder()
StepId = Annotated[str, PathParameter(pattern=ID_PATTERN, description="The step's id in the template.")]


def parse_since(raw: str | None) -> datetime | None:
    """A `since` query parameter: RFC 3339 with an offset (Litestar alone would also take a Unix time)."""
    if raw is None:
        return None
    try:
        return msgspec.convert(raw, Timestamp)
    except msgspec.ValidationError:
        detail = f"query parameter 'since' must be an RFC 3339 time with an offset, e.g. 2026-01-01T00:00:00Z; got {raw!r}"
        raise ProblemError(400, "invalid-parameter", "Bad request", detail) from None


class WhoAmI(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    user: str
    role: Literal["viewer", "operator", "admin"]
    auth: Literal["tokens", "open"]
    can_submit: bool
    can_approve: bool


class StepDecisionRecorded(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    __doc__ = "The step's approval or denial is in the log. " + DECISION_OUTCOME_DOC

    pipeline_id: str
    step: str
    decision: Literal["approved", "denied"]
    by: str
    seq: int
    outcome: Literal["acted", "refused", "pending"] = "pending"
    status: str | None = None
    reason: str | None = None


@get("/api/v1/whoami", guards=[require("viewer")], summary="The caller's identity and role", responses=problems())
async def whoami(ctx: Ctx, request: Request[Any, Any, Any]) -> WhoAmI:
    ident = identity_of(request.scope)
    return WhoAmI(
        user=ident.user, role=ident.role, auth=ctx.auth, can_submit=RANK[ident.role] >= RANK["operator"], can_approve=ident.role == "admin"
    )


async def _feed(ctx: ApiContext, after: int | None) -> AsyncIterator[bytes]:
    stop: asyncio.Queue[object] = asyncio.Queue()
    ctx.streams.add(stop)
    try:
        yield b"retry: 1000\n\n"
        async for item in console_app.fleet_feed(ctx.client.bus, after=after, idle_s=ctx.keepalive_s, stop=stop):
            if item is None:
                yield b": keepalive\n\n"
            else:
                yield b"id: %d\ndata: %s\n\n" % (item.seq, _encoder.encode(item))
    finally:
        ctx.streams.discard(stop)


@get(
    "/api/v1/feed",
    guards=[require("viewer")],
    summary="Every job and pipeline event, live, as Server-Sent Events",
    media_type="text/event-stream",
    # Out of the OpenAPI document: it never ends, which a schema fuzzer (test_api_schema) reads as a hang.
    include_in_schema=False,
)
async def feed(
    ctx: Ctx,
    last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID", description="Resume after this log sequence.")] = None,
) -> Stream:
    after: int | None = None
    if last_event_id is not None:
        if not last_event_id.isdigit() or int(last_event_id) > INT64_MAX:
            raise ProblemError(400, "invalid-last-event-id", "Invalid Last-Event-ID", f"expected a log sequence, got {last_event_id!r}")
        after = int(last_event_id)
        if after > (last := await ctx.client.bus.last_seq()):  # never sent: resuming after it would skip what comes
            detail = f"Last-Event-ID {after} is past the log's end (its last event is at {last})"
            raise ProblemError(400, "invalid-last-event-id", "Invalid Last-Event-ID", detail)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Stream(_feed(ctx, after), media_type="text/event-stream", headers=headers)


@get("/api/v1/approvals", guards=[require("viewer")], summary="Jobs and pipeline steps waiting for approval", responses=problems())
async def approvals(ctx: Ctx) -> console_app.Inbox:
    return await console_app.inbox(ctx.client)


@get(
    "/api/v1/jobs/{job_id:str}/history",
    guards=[require("viewer")],
    summary="A job's every event, after its end too (re-tests, rollbacks), as `nexus history` tells it",
    responses=problems(404),
)
async def job_history(job_id: FromPath[str], ctx: Ctx) -> console_app.JobHistory:
    return await console_app.job_history(ctx.client, job_id)


@get("/api/v1/pipelines", guards=[require("viewer")], summary="Pipelines, newest first", responses=problems())
async def list_pipelines(
    ctx: Ctx, limit: Annotated[int, QueryParameter(ge=1, le=1000, description="At most this many.")] = 100
) -> list[console_app.PipelineSummary]:
    return await console_app.pipelines(ctx.client, limit)


async def _decide_step(
    ctx: ApiContext,
    request: Request[Any, Any, Any],
    pid: str,
    step: str,
    decision: Literal["approved", "denied"],
    data: DecisionRequest | None,
) -> StepDecisionRecorded:
    subjects.check_id(pid, "pipeline id")
    subjects.check_id(step, "step id")
    by = identity_of(request.scope).user
    body = data or DecisionRequest()
    cmd = pipelines_app.DecideStep(pipeline_id=pid, step=step, decision=decision, by=by, reason=body.reason)
    seq = await pipelines_app.decide_step(ctx.client, cmd)
    # The orchestrator may refuse the answer (its author is not among the gate's approvers): say so now.
    answer = await pipelines_app.step_answer(ctx.client, cmd, seq, body.timeout_s)
    return StepDecisionRecorded(
        pipeline_id=pid, step=step, decision=decision, by=answer.by or by, seq=seq, outcome=answer.outcome, status=answer.status,
        reason=answer.reason,
    )  # fmt: skip


@post(
    "/api/v1/pipelines/{pipeline_id:str}/steps/{step:str}/approve",
    status_code=202,
    guards=[require("admin")],
    summary="Approve a pipeline step waiting at its gate",
    responses=problems(404, 409, body=True),
)
async def approve_step(
    pipeline_id: FromPath[str],
    step: StepId,
    ctx: Ctx,
    request: Request[Any, Any, Any],
    data: JSONBody[DecisionRequest | None] = None,
) -> StepDecisionRecorded:
    return await _decide_step(ctx, request, pipeline_id, step, "approved", data)


@post(
    "/api/v1/pipelines/{pipeline_id:str}/steps/{step:str}/deny",
    status_code=202,
    guards=[require("admin")],
    summary="Deny a pipeline step waiting at its gate",
    responses=problems(404, 409, body=True),
)
async def deny_step(
    pipeline_id: FromPath[str],
    step: StepId,
    ctx: Ctx,
    request: Request[Any, Any, Any],
    data: JSONBody[DecisionRequest | None] = None,
) -> StepDecisionRecorded:
    return await _decide_step(ctx, request, pipeline_id, step, "denied", data)


@get("/api/v1/metrics/history", guards=[require("viewer")], summary="Per-phase metrics as time series", responses=problems())
async def history(
    ctx: Ctx,
    since: Annotated[str | None, QueryParameter(format="date-time", description="From then (RFC 3339); default: the first job.")] = None,
    buckets: Annotated[int, QueryParameter(ge=1, le=MAX_BUCKETS, description="Number of time buckets.")] = 30,
) -> MetricsHistory:
    return await metrics_history(ctx.client, parse_since(since), datetime.now(UTC), buckets)


ROUTES = [whoami, feed, approvals, job_history, list_pipelines, approve_step, deny_step, history]
