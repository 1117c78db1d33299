"""Pipeline routes: create one from a YAML template, read its state and steps."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody

from orchestrator.api.auth import identity_of, require
from orchestrator.api.context import Ctx
from orchestrator.api.errors import ProblemError
from orchestrator.api.models import CreatePipelineRequest, PipelineCreated, PipelineOut
from orchestrator.api.openapi import problems
from orchestrator.app import pipelines as pipelines_app
from orchestrator.app.pipelines import RunPipeline
from orchestrator.app.refusals import refuse_unrunnable_steps
from orchestrator.templates import TemplateError, compile_template
from schemas import subjects


def status_endpoint(pipeline_id: str) -> str:
    return f"/api/v1/pipelines/{pipeline_id}"


@post(
    "/api/v1/pipelines",
    guards=[require("operator")],
    summary="Create a multi-job pipeline from a YAML template",
    responses={
        **problems(409, 422, body=True),
        200: ResponseSpec(
            PipelineCreated,
            description="This `pipelineId` was stored before with the same request: the existing pipeline (`created`: false)",
            generate_examples=False,
        ),
    },
)
async def create_pipeline(ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[CreatePipelineRequest]) -> Response[PipelineCreated]:
    """The template is checked before anything runs: a bad one is a 422 naming the line. The
    pipeline id is the idempotency key: the same request again is the same pipeline (200),
    a different one under a used id is a 409 `pipeline-exists`."""
    try:
        spec = compile_template(data.template, data.variables, file="template")
    except TemplateError as exc:
        raise ProblemError(422, "invalid-template", "Invalid pipeline template", str(exc)) from None
    refuse_unrunnable_steps(spec)
    by = identity_of(request.scope).user
    cmd = RunPipeline(spec=spec, variables=data.variables, pipeline_id=data.pipeline_id, requested_by=by, source="api")
    pipeline_id = pipelines_app.pipeline_id_of(cmd)
    req = await pipelines_app.request_for(ctx.client, cmd)
    done = await pipelines_app.submit(ctx.client, pipeline_id, req)
    body = PipelineCreated(pipeline_id=pipeline_id, status_endpoint=status_endpoint(pipeline_id), seq=done.seq, created=done.created)
    return Response(body, status_code=201 if done.created else 200, headers={"Location": status_endpoint(pipeline_id)})


@get(
    "/api/v1/pipelines/{pipeline_id:str}",
    guards=[require("viewer")],
    summary="A pipeline's status and its steps",
    responses=problems(404),
)
async def get_pipeline(pipeline_id: FromPath[str], ctx: Ctx) -> PipelineOut:
    """Steps show where their jobs ran, and a running step's `reason` what its jobs wait for (a
    job held for approval, a queued one), as `nexus pipeline show` does."""
    subjects.check_id(pipeline_id, "pipeline id")
    view = await pipelines_app.pipeline_view(ctx.client.query, pipeline_id)
    if view is None:
        known = await ctx.client.bus.last_seq(subject=subjects.pipeline(pipeline_id, ">"))
        detail = "it is in the log but not reduced yet; try again" if known else "it has no events in the log"
        raise ProblemError(404, "unknown-pipeline", "Unknown pipeline", f"no pipeline {pipeline_id!r}: {detail}")
    return msgspec.convert(view, PipelineOut, from_attributes=True)


ROUTES = [create_pipeline, get_pipeline]
