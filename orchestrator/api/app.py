"""`create_app`: the Litestar app of DESIGN.md section 7, wrapped for auth and audit.

    AuditedApp (auth.py)          bearer token -> Identity, one `api.called` event per call
      Litestar                    routes, msgspec bodies, OpenAPI at /schema/openapi.json
        jobs.py nodes.py stream.py pipelines.py, and here: /health and the two metrics routes
        problem_handler           every error as application/problem+json

The app holds no state of its own besides the SSE streams it serves: jobs,
nodes and metrics are read from the orchestrator or from JetStream per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from litestar import Litestar, Response, get
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import FromQuery
from litestar.types import ASGIApp

from orchestrator.api import jobs, metrics, nodes, pipelines, stream
from orchestrator.api.auth import AuditedApp, Tokens, require
from orchestrator.api.context import ApiContext, Ctx
from orchestrator.api.errors import problem_handler
from orchestrator.api.models import Health, PipelineMetrics
from orchestrator.client import NexusClient
from orchestrator.core.policy import Policy

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@get("/health", summary="Liveness of the API and its NATS connection (no auth)")
async def health(ctx: Ctx) -> Health:
    return Health(nats=ctx.client.bus.nc.is_connected, auth=ctx.auth)


@get("/api/v1/metrics/pipeline", guards=[require("viewer")], summary="Per-phase metrics and job step latencies (ms)")
async def pipeline_metrics(ctx: Ctx, since: FromQuery[datetime | None] = None) -> PipelineMetrics:
    """`?since=` (RFC 3339) limits the metrics to what happened since then."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return await metrics.pipeline_metrics(ctx.client, since)


@get("/metrics", guards=[require("viewer")], summary="The same metrics in Prometheus text format", media_type=PROMETHEUS_TEXT)
async def prometheus(ctx: Ctx) -> Response[str]:
    text = metrics.prometheus_text(await metrics.pipeline_metrics(ctx.client))
    return Response(text, media_type=PROMETHEUS_TEXT)


@dataclass(frozen=True)
class Api:
    """The ASGI app to serve (`asgi`) and its context (to end SSE streams on shutdown)."""

    asgi: ASGIApp
    context: ApiContext
    litestar: Litestar


def create_app(
    client: NexusClient,
    *,
    tokens: Tokens | None,
    policy: Policy | None = None,
    node_ttl_s: float = 10.0,
    keepalive_s: float = 15.0,
) -> Api:
    ctx = ApiContext(
        client=client,
        auth="tokens" if tokens else "open",
        policy=policy or Policy(),
        node_ttl_s=node_ttl_s,
        keepalive_s=keepalive_s,
    )

    def provide_ctx() -> ApiContext:
        return ctx

    openapi = OpenAPIConfig(
        title="Nexus",
        version="1",
        description=(
            "Event-sourced job orchestrator: jobs, their live output (SSE), nodes and per-phase metrics. "
            "Errors are application/problem+json. Send `Authorization: Bearer <token>` unless the API runs open."
        ),
        path="/schema",
        components=Components(security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}),
        security=[{"bearer": []}],
    )
    handlers: list[Any] = [health, pipeline_metrics, prometheus, *jobs.ROUTES, *nodes.ROUTES, *stream.ROUTES, *pipelines.ROUTES]
    app = Litestar(
        route_handlers=handlers,
        dependencies={"ctx": Provide(provide_ctx, sync_to_thread=False)},
        exception_handlers={Exception: problem_handler},
        openapi_config=openapi,
        on_shutdown=[ctx.stop_streams],
        logging_config=None,
    )
    return Api(asgi=AuditedApp(app, client.bus, tokens), context=ctx, litestar=app)
