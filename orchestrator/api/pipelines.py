"""Pipeline routes. The deploy phase (pipelines from YAML templates) is being built
elsewhere; until it lands both paths answer 501 rather than pretend."""

from __future__ import annotations

from litestar import get, post
from litestar.params import FromPath

from orchestrator.api.auth import require
from orchestrator.api.errors import not_implemented
from schemas import subjects


@post("/api/v1/pipelines", guards=[require("operator")], summary="Create a multi-job pipeline (501 for now)")
async def create_pipeline() -> None:
    raise not_implemented("pipelines (the deploy phase)")


@get("/api/v1/pipelines/{pipeline_id:str}", guards=[require("viewer")], summary="A pipeline's status (501 for now)")
async def get_pipeline(pipeline_id: FromPath[str]) -> None:
    subjects.check_id(pipeline_id, "pipeline id")
    raise not_implemented("pipelines (the deploy phase)")


ROUTES = [create_pipeline, get_pipeline]
