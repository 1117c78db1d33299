"""Who may call the API, and the audit record of every call.

Tokens come from a TOML file; each bearer token is one user with one role:

    [[token]]
    user = "alice"
    role = "admin"          # viewer | operator | admin
    sha256 = "9f86d0..."    # hex SHA-256 of the token; or `token = "..."` in clear text

Roles are ranked. Viewers read (every GET, and the analysis-only validate);
operators also submit, cancel, test, roll back and run pipelines; admins also
approve. Without a file the API is open: every caller is `anonymous` with the
admin role, `server.serve` refuses to listen anywhere but loopback, and
`loopback.LoopbackOnly` answers only loopback `Host`s and `Origin`s.
Browsers' EventSource cannot send headers, so the SSE path also takes the
token as `?access_token=` (never recorded in the audit event).

Audit: `AuditedApp` wraps the whole ASGI app, so every call, including unknown
paths and refused tokens, is published as an `api.called` event on
`nexus.evt.api.<request_id>.called` (Nats-Msg-Id `api:<request_id>:called`)
once its status is known, before the response starts. Public paths need no token
and are audited only when refused (open mode's 403): `/health` (the console's first
visit reads whether a token is needed there) and the console's static files (the
login form is among them; `public`, given by the app). `/schema` is like any other
call: with `--auth` it needs a token. The request id is echoed as `X-Request-Id`
on every audited call.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import stat
import time
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlencode

import msgspec
import structlog
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, HTTPScope, Message, Receive, ReceiveMessage, Scope, Send

from bus.errors import BusError
from bus.port import EventBus
from orchestrator.api.bounds import CLIENT_GONE_KEY
from orchestrator.api.errors import ApiError, send_problem, unauthorized
from schemas import msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import ApiCalled

log = structlog.get_logger("nexus.api")

Role = Literal["viewer", "operator", "admin"]
RANK: dict[str, int] = {"viewer": 1, "operator": 2, "admin": 3}
REFUSED_KEY = "nexus.refused"
PUBLIC_PATHS = ("/health",)
TOKEN_QUERY = "access_token"


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    """The caller of one request."""

    user: str
    role: Role
    open: bool = False


ANONYMOUS = Identity(user="anonymous", role="admin", open=True)


# ---------------------------------------------------------------- the token file


class _TokenEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    user: str
    role: Role
    sha256: str | None = None
    token: str | None = None


class _TokenFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    token: list[_TokenEntry] = []


class Tokens:
    """Bearer tokens by their SHA-256, so the lookup never compares secrets directly.

    Loaded from a file, they follow it: the file is read again when it has changed (looked at
    at most once a second, on a call), so a token removed from it is refused from then on, with
    no restart. A file that no longer loads keeps the last tokens that did, and the log says why
    (`api.tokens_reload_failed`), as a server keeps its configuration when a reload fails."""

    RECHECK_S = 1.0

    def __init__(self, by_digest: dict[str, Identity], path: Path | None = None, seen: tuple[int, int, int] | None = None) -> None:
        self.by_digest = by_digest
        self.path = path
        self._seen = seen  # the file's signature when it was read
        self._next_check = time.monotonic() + self.RECHECK_S

    @classmethod
    def load(cls, path: Path) -> Tokens:
        seen = _file_signature(path)  # before reading: a change made while it is read is seen next time
        return cls(_read_token_file(path), path, seen)

    def identify(self, token: str) -> Identity | None:
        self._follow_file()
        return self.by_digest.get(_digest(token))

    def _follow_file(self) -> None:
        now = time.monotonic()
        if self.path is None or now < self._next_check:
            return
        self._next_check = now + self.RECHECK_S
        seen = _file_signature(self.path)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            self.by_digest = _read_token_file(self.path)
        except ApiError as exc:
            kept = f"the {len(self.by_digest)} tokens loaded before"
            log.error("api.tokens_reload_failed", path=str(self.path), error=str(exc), kept=kept)
            return
        log.info("api.tokens_reloaded", path=str(self.path), tokens=len(self.by_digest))


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file is edited or replaced (None: it cannot be read)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _read_token_file(path: Path) -> dict[str, Identity]:
    """The tokens a file lists, checked (ApiError says what is wrong, and where)."""
    try:
        raw = tomllib.loads(path.read_text())
        parsed = msgspec.convert(raw, _TokenFile)
    except OSError as exc:
        raise ApiError(f"cannot read the API token file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ApiError(f"API token file {path}: {exc}") from None
    by_digest: dict[str, Identity] = {}
    for i, entry in enumerate(parsed.token, 1):
        where = f"API token file {path}, token #{i} ({entry.user!r})"
        if not entry.user:
            raise ApiError(f"{where}: `user` is empty")
        if (entry.sha256 is None) == (entry.token is None):
            raise ApiError(f"{where}: give exactly one of `sha256` or `token`")
        digest = (entry.sha256 or "").lower() if entry.sha256 is not None else _digest(entry.token or "")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ApiError(f"{where}: `sha256` must be 64 hex digits")
        if entry.token is not None and len(entry.token) < 16:
            raise ApiError(f"{where}: a token must have at least 16 characters")
        if digest in by_digest:
            raise ApiError(f"{where}: the same token is listed twice")
        if (role := next((i.role for i in by_digest.values() if i.user == entry.user), entry.role)) != entry.role:
            raise ApiError(
                f"{where}: {entry.user!r} is listed as {role} before; one user, one role (the record names users, not tokens)"
            )
        by_digest[digest] = Identity(user=entry.user, role=entry.role)
    if not by_digest:
        raise ApiError(f"API token file {path} lists no [[token]]; leave the file out to run open on loopback")
    if any(e.token is not None for e in parsed.token) and (mode := path.stat().st_mode) & (stat.S_IRWXG | stat.S_IRWXO):
        fix = "the file holds tokens in clear and other users can read it: chmod 600 it, or list sha256 = ... instead"
        log.warning("api.tokens_readable", path=str(path), mode=f"{stat.S_IMODE(mode):04o}", fix=fix)
    return by_digest


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ---------------------------------------------------------------- guards


Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]


def require(role: Role) -> Guard:
    """A route guard: the caller's role must rank at least `role`."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        ident = connection.scope.get("user")
        if not isinstance(ident, Identity):
            raise NotAuthorizedException("no identity on this request")
        if RANK[ident.role] < RANK[role]:
            detail = f"user {ident.user!r} has role {ident.role}; this call needs {role} or above"
            connection.scope[REFUSED_KEY] = detail  # type: ignore[literal-required]
            raise PermissionDeniedException(detail)

    guard.__name__ = f"require_{role}"
    return guard


def identity_of(scope: Scope) -> Identity:
    ident = scope.get("user")
    assert isinstance(ident, Identity), "AuditedApp sets the identity of every API request"
    return ident


# ---------------------------------------------------------------- audit events


def _unanswered(scope: HTTPScope) -> tuple[int, str]:
    """The status and reason the audit trail gives a call that got no answer: 499 (nginx's "client
    closed request") when the client left first, else 500 (ours failed)."""
    if cast("dict[str, Any]", scope).get(CLIENT_GONE_KEY):
        return 499, "the client closed the connection before its request was read"
    return 500, "no response"


def new_request_id() -> str:
    return f"r-{int(time.time() * 1000):x}-{secrets.token_hex(4)}"


class AuditedApp:
    """ASGI wrapper around the Litestar app: authenticates, then audits the call."""

    def __init__(self, app: ASGIApp, bus: EventBus, tokens: Tokens | None, public: Callable[[HTTPScope], bool]) -> None:
        self.app = app
        self.bus = bus
        self.tokens = tokens
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        started = time.monotonic()
        public = scope["path"] in PUBLIC_PATHS or self.public(scope)
        ident, refusal = self._authenticate(scope)
        answered = cut = False

        async def audited_send(message: Message) -> None:
            nonlocal answered, cut
            if cut:
                return  # the response was ended for a revoked token: the app is told the client left
            if message["type"] == "http.response.start" and not answered:
                answered = True
                if not public or message["status"] in (401, 403):
                    await self._audit(scope, request_id, ident, message["status"], refusal, started)
                    message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body" and message.get("more_body") and self._revoked(scope, ident):
                # A stream (SSE) outlives the call that opened it: it ends once its token is revoked
                # (looked at as it sends; the client's reconnect then gets 401).
                cut = True
                log.warning("api.stream_cut", path=scope["path"], user=ident.user if ident else None, reason="its token was revoked")
                await send({"type": "http.response.body", "body": b": the token of this stream was revoked\n\n", "more_body": False})
                gone.set()  # the app stops its stream as when a client leaves (its readers closed)
                return
            await send(message)

        gone = asyncio.Event()

        async def receive_or_gone() -> ReceiveMessage:
            """The client's next message, or `http.disconnect` once the stream was cut (a GET has no body:
            what a stream's handler awaits here is the client leaving)."""
            if gone.is_set():
                return {"type": "http.disconnect"}
            got, cut_now = asyncio.ensure_future(receive()), asyncio.ensure_future(gone.wait())
            await asyncio.wait((got, cut_now), return_when=asyncio.FIRST_COMPLETED)
            cut_now.cancel()
            if got.done():
                return got.result()
            got.cancel()
            return {"type": "http.disconnect"}

        if ident is None and not public:
            await send_problem(audited_send, unauthorized(refusal or "authentication required"), scope["path"])
            return
        if ident is not None:
            scope["user"] = ident
        try:
            cuttable = self.tokens is not None and ident is not None and scope["method"] == "GET"  # a token's stream
            await self.app(scope, receive_or_gone if cuttable else receive, audited_send)
        except asyncio.CancelledError:
            raise  # the server is stopping mid-request: no answer, and no bus to record it on
        except BaseException:
            if not answered and not public:  # the app failed before answering: still on the record
                await self._audit(scope, request_id, ident, *_unanswered(scope), started)
            raise
        if not answered and not public:
            await self._audit(scope, request_id, ident, *_unanswered(scope), started)

    def _revoked(self, scope: HTTPScope, ident: Identity | None) -> bool:
        """Whether the token this call came with no longer names the same identity."""
        if self.tokens is None or ident is None or ident.open:
            return False
        token = _bearer(scope)
        return token is None or self.tokens.identify(token) != ident

    def _authenticate(self, scope: HTTPScope) -> tuple[Identity | None, str | None]:
        if self.tokens is None:
            return ANONYMOUS, None
        token = _bearer(scope)
        if token is None:
            return None, "missing bearer token (Authorization: Bearer <token>)"
        ident = self.tokens.identify(token)
        if ident is None:
            return None, "unknown bearer token"
        return ident, None

    async def _audit(
        self, scope: HTTPScope, request_id: str, ident: Identity | None, status: int, reason: str | None, started: float
    ) -> None:
        refused = status in (401, 403)
        if status == 403:
            reason = cast("dict[str, Any]", scope).get(REFUSED_KEY) or reason
        handler = scope.get("route_handler")
        route = next(iter(sorted(handler.paths)), None) if handler is not None else None
        path_params = scope.get("path_params") or {}
        client = scope.get("client")
        event = ApiCalled(
            ts=datetime.now(UTC),
            user=ident.user if ident else None,
            role=ident.role if ident else None,
            method=scope["method"],
            path=scope["path"],
            query=_safe_query(scope),
            route=route,
            job_id=path_params.get("job_id"),
            status=status,
            allowed=not refused,
            reason=reason if refused else None,
            remote=f"{client[0]}:{client[1]}" if client else None,
            duration_ms=round((time.monotonic() - started) * 1000, 3),
        )
        out = Outgoing(subjects.api(request_id, "called"), event, msgids.api(request_id, "called"))
        try:
            await self.bus.publish(out)
        except BusError as exc:
            # The response must still go out; the log keeps what the audit trail could not.
            log.error("api.audit_failed", request_id=request_id, error=str(exc), **msgspec.to_builtins(event))
        log.debug("api.called", request_id=request_id, user=event.user, method=event.method, path=event.path, status=status)


def _bearer(scope: HTTPScope) -> str | None:
    for name, raw in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = raw.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer":
                return None
            return token.strip() or None
    if scope["method"] == "GET" and scope["path"].endswith("/stream"):
        for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
            if key == TOKEN_QUERY:
                return value or None
    return None


def _safe_query(scope: HTTPScope) -> str:
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return urlencode([(k, v) for k, v in pairs if k != TOKEN_QUERY])
