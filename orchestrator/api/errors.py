"""Errors of the HTTP API, and how every failure becomes application/problem+json.

    NexusError (schemas.errors)
    +-- ApiError              the API cannot start (bad token file, open mode on a public address, port taken)
    +-- ProblemError          the answer to one request: status, slug, title, detail (RFC 9457)

`problem_handler` is the one exception handler of the app. It translates at
the boundary: Litestar's validation errors become 400 `invalid-body` (or
`invalid-parameter`), a body over the limit 413, routing errors 404/405,
refused auth 401/403, Nexus bus or query errors and NATS client errors 503.
A ValueError, LookupError or TypeError that escapes a handler is an input the
handler did not foresee: 400 `invalid-request`, logged with its traceback (a bug
to fix, but never a 500 for the caller). Anything else is a 500 without
internals in `detail`.
"""

from __future__ import annotations

import re
import typing
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
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.types import Send

from bus.errors import BusError
from bus.nats_translate import is_nats_error
from bus.urls import redact_url
from orchestrator.api.models import Problem
from orchestrator.app.errors import AppError, NoSuchJob, Unrunnable
from orchestrator.errors import OrchestratorUnavailable, QueryError
from schemas.envelope import Id
from schemas.errors import InvalidId, NexusError
from schemas.limits import MAX_EVENT_BYTES

log = structlog.get_logger("nexus.api")

PROBLEM_JSON = "application/problem+json"
MAX_BODY_BYTES = MAX_EVENT_BYTES
"""Largest request body: whatever a body asks for must fit in one event on the bus."""
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


def too_large(detail: str) -> ProblemError:
    return ProblemError(413, "too-large", "Request too large", detail)


def unavailable(detail: str) -> ProblemError:
    return ProblemError(503, "unavailable", "Service unavailable", detail)


def unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="nexus"'})


def forbidden(detail: str) -> ProblemError:
    return ProblemError(403, "forbidden", "Forbidden", detail)


# ---------------------------------------------------------------- the handler


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]*)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]*)`$")


_ID_REGEX = f"matching regex {typing.get_args(Id)[1].pattern!r}"  # schemas.envelope.Id, as msgspec says it
_ID_SAID = "of 1 to 64 letters, digits, '_' or '-'"


def plain_body_error(message: str, key: str | None = None) -> str:
    """A body decoder's message (msgspec: "Object missing required field `command`", "Expected
    `int`, got `str` - at `$.tests[0].expected`") in plain words, naming the field by its path in the
    body: "`command` is required", "`tests[0].expected`: expected `int`, got `str`"."""
    m = _AT.match(message.strip())
    assert m is not None  # the pattern matches any text
    text, path = m["message"], (m["path"] or "").lstrip(".")
    if not path and key and key != "data":  # Litestar's key for a field; `data` is the body itself
        path = key
    if missing := _MISSING.match(text):
        return f"`{_joined(path, missing['field'])}` is required"
    if unknown := _UNKNOWN.match(text):
        return f"`{_joined(path, unknown['field'])}` is not a field of this body"
    text = text.replace(_ID_REGEX, _ID_SAID)
    if not text[:2].isupper():  # "Expected ..." reads on after the path; "JSON is malformed" stays
        text = text[:1].lower() + text[1:]
    return f"`{path}`: {text}" if path else text


def _joined(path: str, field: str) -> str:
    return f"{path}.{field}" if path else field


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
        elif source == "body":
            parts.append(plain_body_error(message, str(key) if key else None))
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
        case RequestEntityTooLarge():
            return too_large(f"the request body is over the limit of {MAX_BODY_BYTES} bytes")
        case HTTPException() if exc.status_code == 400:  # e.g. a body that is not JSON at all
            return ProblemError(400, "invalid-body", "Bad request", f"invalid request body: {exc.detail}")
        case MethodNotAllowedException():
            return ProblemError(405, "method-not-allowed", "Method not allowed", exc.detail, headers=exc.headers)
        case HTTPException():
            return ProblemError(exc.status_code, "http-error", exc.detail or "HTTP error", exc.detail, headers=exc.headers)
        case NoSuchJob():
            return unknown_job(exc.job_id)
        case Unrunnable():  # the body's fields say it, as a body no model takes is said
            return ProblemError(exc.http_status, exc.slug, exc.title, f"invalid request body: {exc}")
        case AppError():
            return ProblemError(exc.http_status, exc.slug, exc.title, str(exc))
        case OrchestratorUnavailable() | BusError():
            return unavailable(str(exc))
        case _ if is_nats_error(exc):  # the bus did not translate it: NATS is down, slow or refusing
            return unavailable(redact_url(f"NATS: {type(exc).__name__}: {exc}").rstrip(": "))
        case TimeoutError():
            return unavailable("timed out waiting for NATS or the orchestrator")
        case QueryError():
            return ProblemError(503, "query-failed", "State query failed", str(exc))
        case ValueError() | LookupError() | TypeError() | RecursionError():
            return ProblemError(400, "invalid-request", "Bad request", "the request could not be processed as sent; see the API's log")
        case _:
            return ProblemError(500, "internal-error", "Internal error", "the API failed to answer; see its log")


def problem_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    problem = to_problem(exc)
    if problem.slug in ("internal-error", "invalid-request"):
        log.error("api.failed", method=request.method, path=request.url.path, status=problem.status, exc_info=exc)
    body = encode_problem(problem.problem(instance=request.url.path))
    return Response(content=body, status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers)


async def send_problem(send: Send, problem: ProblemError, path: str) -> None:
    """Answer with a problem from outside Litestar (the ASGI layers around it)."""
    body = encode_problem(problem.problem(instance=path))
    headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in problem.headers.items()]
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
