"""Bounds at the HTTP edge: what a request may weigh before anything decodes or publishes it.

    AuditedApp (auth.py)     who is calling; every answer below is audited too
      BoundedBody            413 `too-large` over MAX_BODY_BYTES (announced or counted),
                             415 `unsupported-media-type` for a write whose Content-Type is
                             not `application/json` (`; charset=utf-8` allowed), or a body
                             without one,
                             400 `invalid-body` for JSON nested deeper than MAX_DEPTH
        Litestar
          `strict_body`      decodes the body strictly into the route's model, which
                             carries the field bounds of schemas.limits (400 `invalid-body`)
          handlers           `check_job_fits` (and app.refusals.refuse_too_large): 413 `too-large` for an event
                             the bus would refuse (MAX_EVENT_BYTES, a dispatch included)

The depth is measured on the raw bytes (strings skipped) before any decoder
recurses into them: a 5,000-deep body made msgspec raise RecursionError.
Litestar converts bodies leniently (`0` for `false`, `"5"` for `5`), which
neither the OpenAPI document nor the bus allow; `strict_body` (a
`before_request` hook) decodes the body as msgspec does by default first.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
from litestar import Request
from litestar.enums import ScopeType
from litestar.exceptions import ValidationException
from litestar.types import ASGIApp, HTTPRequestEvent, HTTPScope, Receive, ReceiveMessage, Scope, Send

from orchestrator.api.errors import MAX_BODY_BYTES, ProblemError, send_problem, too_large
from orchestrator.app.refusals import refuse_too_large
from orchestrator.core.decide import dispatch_for
from schemas import codec
from schemas.events import JobRequested
from schemas.limits import MAX_DEPTH, MAX_ENV_VALUE_CHARS

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})


def _is_json(content_type: str) -> bool:
    """`application/json`, with no parameter but `charset=utf-8` (JSON is UTF-8, RFC 8259).
    Strict on purpose: a body a web page may send without a CORS preflight (`text/plain`,
    a form) is never one the API reads, and other `+json` types are not what it documents."""
    media, *params = (part.strip().lower() for part in content_type.split(";"))
    return media == "application/json" and all(p.replace(" ", "") in ("", "charset=utf-8", 'charset="utf-8"') for p in params)


def _header(scope: HTTPScope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _problem_in_headers(scope: HTTPScope, max_bytes: int) -> ProblemError | None:
    """What the headers alone refuse: a body announced too large, or a body that is not JSON."""
    raw_length = _header(scope, b"content-length")
    chunked = "chunked" in (_header(scope, b"transfer-encoding") or "").lower()
    if raw_length is not None:
        if not raw_length.isdigit():
            return ProblemError(400, "invalid-body", "Bad request", f"invalid Content-Length {raw_length!r}")
        if int(raw_length) > max_bytes:
            return too_large(f"a request body of {int(raw_length)} bytes is over the limit of {max_bytes}")
    has_body = chunked or (raw_length is not None and int(raw_length) > 0)
    content_type = _header(scope, b"content-type")
    if content_type is not None and not _is_json(content_type):  # even on an empty body: it says it is not JSON
        detail = f"request bodies are JSON (Content-Type: application/json), not {content_type!r}"
        return ProblemError(415, "unsupported-media-type", "Unsupported media type", detail)
    if content_type is None and has_body:
        detail = "a request body needs Content-Type: application/json (a body without one is not read)"
        return ProblemError(415, "unsupported-media-type", "Unsupported media type", detail)
    return None


BODY_READ_S = 15.0
"""Longest wait for the next piece of a request body."""
CLIENT_GONE_KEY = "nexus.client_gone"
"""Set in the scope when the client left before its request was read."""


class BoundedBody:
    """ASGI layer: read the body (bounded), check it, then hand it on to the app unchanged."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_BODY_BYTES, max_depth: int = MAX_DEPTH) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        problem = _problem_in_headers(scope, self.max_bytes)
        if problem is not None:
            await send_problem(send, problem, scope["path"])
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), BODY_READ_S)
            except TimeoutError:  # a body announced and never sent would hold the connection for ever
                detail = f"the request body did not come: nothing for {BODY_READ_S:g}s"
                await send_problem(send, ProblemError(408, "body-timeout", "Request timeout", detail), scope["path"])
                return
            if message["type"] != "http.request":
                cast("dict[str, Any]", scope)[CLIENT_GONE_KEY] = True  # for the audit trail: not an error of ours
                return  # the client left before sending its body
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await send_problem(send, too_large(f"the request body is over the limit of {self.max_bytes} bytes"), scope["path"])
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if (depth := codec.nesting_depth(body)) > self.max_depth:
            detail = f"invalid request body: JSON nested {depth} deep, over the limit of {self.max_depth}"
            await send_problem(send, ProblemError(400, "invalid-body", "Bad request", detail), scope["path"])
            return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> ReceiveMessage:
        nonlocal sent
        if not sent:
            sent = True
            request: HTTPRequestEvent = {"type": "http.request", "body": body, "more_body": False}
            return request
        return await receive()  # after the body: the client's disconnect, when it comes

    return replay


# ---------------------------------------------------------------- strict bodies


def _integral(value: Any) -> Any:
    """JSON's view of numbers: `5.0` is the integer 5 (JSON Schema agrees; msgspec does not)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


async def strict_body(request: Request[Any, Any, Any]) -> None:
    """Refuse (400) a body that only Litestar's lenient conversion would accept: a string
    for a number, `0` for `false`. Litestar still decodes the body for the handler."""
    field = request.route_handler.parsed_fn_signature.parameters.get("data")
    if field is None:
        return
    body = await request.body()  # cached: Litestar reads the same bytes afterwards
    if not body:
        if not field.has_default:  # else Litestar's own words: "'data' at `data`"
            raise _invalid(empty_body(field.annotation))
        return
    try:
        msgspec.convert(_integral(msgspec.json.decode(body)), field.annotation)
    except msgspec.ValidationError as exc:
        raise _invalid(str(exc)) from None
    except msgspec.DecodeError as exc:
        if codec.lone_surrogate(body) is not None:  # msgspec's words for it, "Input data was truncated", mislead
            raise _invalid(codec.json_error(body, str(exc))) from None
        return  # not JSON at all: Litestar says so in its own words


def empty_body(model: Any) -> str:
    """What an empty body lacks, in the body's own (camelCase) field names."""
    required = [f"`{f.encode_name}`" for f in msgspec.structs.fields(model) if f.required]
    return "the body is empty: send a JSON object" + (f" with {' and '.join(required)} (required)" if required else "")


def _invalid(message: str) -> ValidationException:
    return ValidationException(message, extra=[{"message": message, "source": "body"}])


# ---------------------------------------------------------------- events a request would publish


def check_job_fits(req: JobRequested) -> None:
    """The job's request, and the dispatch the orchestrator will build from it (the command
    twice, env, node-side tests), must both fit: the decider would reject it as `too_large`.
    A secret value grows when sealed (base64 of its UTF-8 bytes and 48 more) and must still fit
    the env value bound, or the bus would refuse the request (a 503 after the body was taken)."""
    for name, value in req.env.items():
        if len(value) > MAX_ENV_VALUE_CHARS:
            raise too_large(
                f"env {name!r} is {len(value)} characters once sealed, over the limit of {MAX_ENV_VALUE_CHARS}: "
                "a secret value may hold about 12 KiB"
            )
    refuse_too_large(req, "the job's request")
    dispatch = dispatch_for(req, 1, req.ts or datetime.now(UTC))
    refuse_too_large(dispatch, "the job's dispatch (its command twice, env and node tests)")
