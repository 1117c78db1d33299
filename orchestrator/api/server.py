"""`serve`: run the HTTP API under uvicorn inside the caller's event loop.

Used by `nexus up` and `nexus api`. It binds the socket itself (so a port in
use is an ApiError, not uvicorn's `sys.exit`), leaves signals to the process
that owns them (cancel the task to stop), and on cancellation ends the SSE
streams it serves before uvicorn's graceful shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path

import structlog
import uvicorn

from orchestrator.api.app import create_app
from orchestrator.api.auth import Tokens
from orchestrator.api.errors import ApiError
from orchestrator.client import NexusClient
from orchestrator.core.policy import Policy

log = structlog.get_logger("nexus.api")

GRACEFUL_S = 5


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signals belong to the process running us (nexus up); it cancels our task instead.
        yield


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise ApiError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


async def serve(
    client: NexusClient,
    *,
    host: str,
    port: int,
    auth_file: Path | None,
    policy: Policy | None = None,
    node_ttl_s: float = 10.0,
) -> None:
    """Serve until cancelled. Without `auth_file` the API is open, so only on loopback.
    `policy` is the orchestrator's (validate answers with its verdict); default: the built-in one."""
    tokens = Tokens.load(auth_file) if auth_file is not None else None
    if tokens is None and not is_loopback(host):
        raise ApiError(f"refusing to serve the API without a token file on {host}: give --auth FILE, or listen on 127.0.0.1")
    api = create_app(client, tokens=tokens, policy=policy, node_ttl_s=node_ttl_s)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{bound_port}"
    config = uvicorn.Config(
        api.asgi,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_S,
        server_header=False,
    )
    server = _Server(config)
    if tokens is None:
        log.warning("api.open", url=url, detail="no token file: the API is open to anyone on this machine, as admin")
    log.info("api.listening", url=url, auth="tokens" if tokens else "open")
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        api.context.stop_streams()
        server.should_exit = True
        await serving
        raise
    finally:
        sock.close()
        log.info("api.stopped", url=url)
