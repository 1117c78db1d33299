"""`create_app`: the Litestar app of DESIGN.md section 7, wrapped for auth and audit.

    AuditedApp (auth.py)            bearer token -> Identity, one `api.called` event per call
      LoopbackOnly (loopback.py)    open mode only: 403 unless Host (and Origin, if sent) is loopback
        ConsoleAssets (console/)    the console's static files (public: no token, audited only when refused)
          BoundedBody (bounds.py)   body size, media type (JSON only) and JSON depth, before anything decodes
            Litestar                routes, msgspec bodies, OpenAPI at /schema/openapi.json (openapi.py)
              jobs.py nodes.py stream.py pipelines.py, and here: /health and the two metrics routes
              problem_handler       every error as application/problem+json

The app holds no state of its own besides the SSE streams it serves: jobs,
nodes and metrics are read from the orchestrator or from JetStream per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Litestar, Response, get, route
from litestar.di import Provide
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import QueryParameter
from litestar.types import ASGIApp

from orchestrator.api import console, finished, jobs, nodes, pipelines, stream
from orchestrator.api.auth import PUBLIC_PATHS, AuditedApp, Tokens, require
from orchestrator.api.bounds import BoundedBody, strict_body
from orchestrator.api.context import ApiContext, Ctx
from orchestrator.api.errors import MAX_BODY_BYTES, problem_handler
from orchestrator.api.loopback import LoopbackOnly
from orchestrator.api.models import Health
from orchestrator.api.openapi import RefinedJson, problems
from orchestrator.api.prometheus import prometheus_text
from orchestrator.app import metrics
from orchestrator.app.metrics_models import PipelineMetrics
from orchestrator.client import NexusClient
from orchestrator.console.assets import SWAGGER, ConsoleAssets
from orchestrator.core.policy import Policy

PROMETHEUS_TEXT = "text/plain; version=0.0.4"  # Litestar adds "; charset=utf-8" to a text type


@get("/health", summary="Liveness of the API and its NATS connection (no auth)", responses=problems(public=True))
async def health(ctx: Ctx) -> Health:
    return Health(nats=ctx.client.bus.connected, auth=ctx.auth)


@get(
    "/api/v1/metrics/pipeline",
    guards=[require("viewer")],
    summary="Per-phase metrics and job step latencies (ms)",
    responses=problems(),
)
async def pipeline_metrics(
    ctx: Ctx,
    since: Annotated[
        str | None, QueryParameter(format="date-time", description="Only what happened since then (RFC 3339, with an offset).")
    ] = None,
) -> PipelineMetrics:
    """`?since=` (RFC 3339) limits the metrics to what happened since then."""
    return await metrics.pipeline_metrics(ctx.client, console.parse_since(since))


@get(
    "/metrics",
    guards=[require("viewer")],
    summary="The same metrics in Prometheus text format",
    media_type=PROMETHEUS_TEXT,
    responses=problems(),
)
async def prometheus(ctx: Ctx) -> Response[str]:
    text = prometheus_text(await metrics.pipeline_metrics(ctx.client))
    return Response(text, media_type=PROMETHEUS_TEXT)


def _options(path: str, methods: set[str]) -> HTTPRouteHandler:
    allow = ", ".join(sorted({*methods, "OPTIONS"}))

    @route(path, http_method=["OPTIONS"], status_code=204, include_in_schema=False, sync_to_thread=False)
    def options() -> Response[None]:
        return Response(None, status_code=204, headers={"Allow": allow})

    return options


def _options_handlers(handlers: list[Any]) -> list[HTTPRouteHandler]:
    """OPTIONS for a path served by several handlers (GET and POST /api/v1/jobs). Litestar's own
    answer there lists only the methods of the first handler registered; ours, registered first,
    lists them all (its Allow must match the document)."""
    methods: dict[str, set[str]] = {}
    for handler in handlers:
        for path in handler.paths:
            methods.setdefault(path, set()).update(handler.http_methods)
    return [_options(path, found) for path, found in sorted(methods.items()) if len(found) > 1]


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

    secured = tokens is not None
    openapi = OpenAPIConfig(
        title="Nexus",
        version="1",
        description=(
            "Event-sourced job orchestrator: jobs, their live output (SSE), nodes and per-phase metrics. "
            "Errors are application/problem+json. "
            + ("Send `Authorization: Bearer <token>` (not needed for /health)." if secured else "This API runs open (loopback only).")
        ),
        path="/schema",
        components=Components(security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")} if secured else None),
        security=[{"bearer": []}] if secured else None,
        render_plugins=[_local_swagger(), RefinedJson(secured=secured, public_prefixes=PUBLIC_PATHS)],
    )
    handlers: list[Any] = [
        health,
        pipeline_metrics,
        prometheus,
        *jobs.ROUTES,
        *finished.ROUTES,
        *nodes.ROUTES,
        *stream.ROUTES,
        *pipelines.ROUTES,
        *console.ROUTES,
    ]
    app = Litestar(
        route_handlers=[*_options_handlers(handlers), *handlers],
        dependencies={"ctx": Provide(provide_ctx, sync_to_thread=False)},
        exception_handlers={Exception: problem_handler},
        openapi_config=openapi,
        on_shutdown=[ctx.stop_streams],
        logging_config=None,
        request_max_body_size=MAX_BODY_BYTES,  # BoundedBody refuses first; this holds without it
        before_request=strict_body,
    )
    assets = ConsoleAssets(BoundedBody(app))
    # Open mode answers this machine's pages only, the console's files included; with tokens,
    # another site's page has none, and the files hold no data (the login form is among them).
    guarded: ASGIApp = assets if secured else LoopbackOnly(assets)
    return Api(asgi=AuditedApp(guarded, client.bus, tokens, public=assets.serves), context=ctx, litestar=app)


def _local_swagger() -> SwaggerRenderPlugin:
    """Swagger UI from the package's own copy (the default loads 4 files from a CDN: blank offline)."""
    return SwaggerRenderPlugin(
        path=["/", "/swagger"],
        js_url=f"{SWAGGER}swagger-ui-bundle.js",
        css_url=f"{SWAGGER}swagger-ui.css",
        standalone_preset_js_url=f"{SWAGGER}swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{SWAGGER}favicon-32x32.png'>",
    )
