"""`serve`: run the HTTP API under uvicorn inside the caller's event loop.

Used by `nexus up` and `nexus api`. `listen` binds the socket itself (so a
port in use is an ApiError naming the address, not uvicorn's `sys.exit`);
`nexus up` calls it before it starts anything else, so a taken port fails at
once instead of after the embedded server and the services are up. `serve_on`
leaves signals to the process that owns them (cancel the task to stop), and on
cancellation ends the SSE streams it serves before uvicorn's graceful shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
import uvicorn

from orchestrator.api.app import create_app
from orchestrator.api.auth import Tokens
from orchestrator.api.errors import ApiError
from orchestrator.api.http_protocol import MAX_CONNECTIONS, HeadsInTime
from orchestrator.api.loopback import is_loopback
from orchestrator.app.jobs import ANONYMOUS
from orchestrator.client import NexusClient
from orchestrator.core.admission import Submission
from orchestrator.core.judge import judge
from orchestrator.core.policy import Policy

log = structlog.get_logger("nexus.api")

GRACEFUL_S = 5


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signals belong to the process running us (nexus up); it cancels our task instead.
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        # asyncio-style wrappers repeat the address in strerror; the errno alone reads better.
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ApiError(f"cannot listen on {host}:{port}: {why}") from None
    # Accepted connections inherit it: without it, Nagle's algorithm and delayed ACKs
    # added ~40 ms to every request on a kept-alive connection.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@dataclass(frozen=True)
class ApiListener:
    """The API's bound socket and the tokens that guard it, ready to serve."""

    sock: socket.socket
    host: str
    tokens: Tokens | None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host if ':' not in self.host else f'[{self.host}]'}:{self.port}"

    def close(self) -> None:
        self.sock.close()


def listen(host: str, port: int, auth_file: Path | None) -> ApiListener:
    """Check the token file and bind: every reason the API cannot start, raised as ApiError
    before anything is served. Without `auth_file` the API is open, so only on loopback."""
    tokens = Tokens.load(auth_file) if auth_file is not None else None
    if tokens is None and not is_loopback(host):
        raise ApiError(f"refusing to serve the API without a token file on {host}: give --auth FILE, or listen on 127.0.0.1")
    return ApiListener(_bind(host, port), host, tokens)


async def serve(
    client: NexusClient,
    *,
    host: str,
    port: int,
    auth_file: Path | None,
    policy: Policy | None = None,
    node_ttl_s: float = 10.0,
) -> None:
    """`listen`, then serve until cancelled. `policy` is the orchestrator's (validate
    answers with its verdict); default: the built-in one."""
    await serve_on(client, listen(host, port, auth_file), policy=policy, node_ttl_s=node_ttl_s)


async def serve_on(client: NexusClient, listener: ApiListener, *, policy: Policy | None = None, node_ttl_s: float = 10.0) -> None:
    """Serve on a listener until cancelled; the socket is closed at the end, whatever happens."""
    try:
        await _serve(client, listener, policy, node_ttl_s)
    finally:
        listener.close()


async def _serve(client: NexusClient, listener: ApiListener, policy: Policy | None, node_ttl_s: float) -> None:
    tokens, url = listener.tokens, listener.url
    api = create_app(client, tokens=tokens, policy=policy, node_ttl_s=node_ttl_s)
    config = uvicorn.Config(
        api.asgi,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_S,
        server_header=False,
        http=HeadsInTime,  # a request head must come whole within HEAD_TIMEOUT_S
        limit_concurrency=MAX_CONNECTIONS,
    )
    server = _Server(config)
    if tokens is None:
        detail = "no token file: the API is open to anyone on this machine, as admin"
        if policy is not None and judge(Submission(command="true", user=ANONYMOUS), policy, None).denied == "permission_denied":
            # Open mode records every request as `anonymous`, which the policy's `users:` judges.
            detail += f"; but the policy's users: list lets {ANONYMOUS!r} submit nothing, so every job over HTTP is refused"
        log.warning("api.open", url=url, detail=detail)
    log.info("api.listening", url=url, auth="tokens" if tokens else "open")
    serving = asyncio.ensure_future(server.serve(sockets=[listener.sock]))
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        api.context.stop_streams()
        server.should_exit = True
        await serving
        raise
    finally:
        log.info("api.stopped", url=url)
