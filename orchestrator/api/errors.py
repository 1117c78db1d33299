"""Errors of the HTTP API, and how every failure becomes application/problem+json.

    NexusError (schemas.errors)
    +-- ApiError              the API cannot start (bad token file, open mode on a public address, port taken)
    +-- ProblemError          the answer to one request: status, slug, title, detail (RFC 9457)

`problem_handler` is the one exception handler of the app. It translates at
the boundary: Litestar's validation errors become 400 `invalid-body` (or
`invalid-parameter`), routing errors 404/405, refused auth 401/403, Nexus
bus or query errors 503, anything else a 500 without internals in `detail`.
"""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)

from orchestrator.api.models import Problem
from orchestrator.errors import BusError, OrchestratorUnavailable, QueryError
from schemas.errors import InvalidId, NexusError

log = structlog.get_logger("nexus.api")

PROBLEM_JSON = "application/problem+json"
_encoder = msgspec.json.Encoder()


class ApiError(NexusError):
    """The API cannot be served as configured."""


class ProblemError(NexusError):
    """A request that gets a problem+json answer instead of its normal one."""

    def __init__(self, status: int, slug: str, title: str, detail: str, *, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        super().__init__(detail)

    def problem(self, instance: str | None = None) -> Problem:
        return Problem(type=problem_type(self.slug), title=self.title, status=self.status, detail=self.detail, instance=instance)


def problem_type(slug: str) -> str:
    """Problem types are URNs: stable names, documented in INTEGRATION.md, never fetched."""
    return f"urn:nexus:problem:{slug}"


def encode_problem(problem: Problem) -> bytes:
    return _encoder.encode(problem)


# ---------------------------------------------------------------- the usual problems


def invalid_id(exc: InvalidId) -> ProblemError:
    return ProblemError(400, f"invalid-{exc.what.replace(' ', '-')}", f"Invalid {exc.what}", str(exc))


def unknown_job(job_id: str) -> ProblemError:
    return ProblemError(404, "unknown-job", "Unknown job", f"no job {job_id!r}: it has no events in the log")


def unknown_node(node_id: str, status: int = 404) -> ProblemError:
    return ProblemError(status, "unknown-node", "Unknown node", f"node {node_id!r} is not registered and sends no heartbeat")


def wrong_state(detail: str) -> ProblemError:
    return ProblemError(409, "wrong-state", "Wrong state", detail)




def unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="nexus"'})


def forbidden(detail: str) -> ProblemError:
    return ProblemError(403, "forbidden", "Forbidden", detail)


# ---------------------------------------------------------------- the handler


def _validation_detail(exc: ValidationException) -> tuple[str, str]:
    items = exc.extra if isinstance(exc.extra, list) else []
    parts: list[str] = []
    source = "body"
    for item in items:
        if not isinstance(item, dict):
            continue
        raw_source = item.get("source") or source
        source = str(getattr(raw_source, "value", raw_source))
        message = str(item.get("message", "")).strip()
        key = item.get("key")
        if source != "body" and key:
            parts.append(f"{source} parameter {key!r}: {message}")
        elif key:
            parts.append(f"{message} at `{key}`")
        else:
            parts.append(message)
    if source == "body":
        return "invalid-body", "invalid request body: " + ("; ".join(parts) or exc.detail)
    return "invalid-parameter", "invalid request: " + ("; ".join(parts) or exc.detail)


def to_problem(exc: Exception) -> ProblemError:
    """Any exception raised while serving a request, as the problem to answer with."""
    match exc:
        case ProblemError():
            return exc
        case InvalidId():
            return invalid_id(exc)
        case ValidationException():
            slug, detail = _validation_detail(exc)
            return ProblemError(400, slug, "Bad request", detail)
        case NotAuthorizedException():
            return unauthorized(exc.detail)
        case PermissionDeniedException():
            return forbidden(exc.detail)
        case NotFoundException():
            return ProblemError(404, "not-found", "Not found", "no such API path (see /schema/openapi.json)")
        case HTTPException() if exc.status_code == 400:  # e.g. a body that is not JSON at all
            return ProblemError(400, "invalid-body", "Bad request", f"invalid request body: {exc.detail}")
        case MethodNotAllowedException():
            return ProblemError(405, "method-not-allowed", "Method not allowed", exc.detail)
        case HTTPException():
            return ProblemError(exc.status_code, "http-error", exc.detail or "HTTP error", exc.detail)
        case OrchestratorUnavailable() | BusError():
            return ProblemError(503, "unavailable", "Service unavailable", str(exc))
        case QueryError():
            return ProblemError(503, "query-failed", "State query failed", str(exc))
        case _:
            return ProblemError(500, "internal-error", "Internal error", "the API failed to answer; see its log")


def problem_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    problem = to_problem(exc)
    if problem.status >= 500 and not isinstance(exc, ProblemError | NexusError):
        log.error("api.failed", method=request.method, path=request.url.path, exc_info=exc)
    body = encode_problem(problem.problem(instance=request.url.path))
    return Response(content=body, status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers)
