"""Open mode serves loopback clients only (DESIGN.md section 9).

An API started without `--auth` answers anyone who reaches 127.0.0.1, and every
web page the user visits can send requests there. Three rules keep such a page
from driving it:

- writes carry JSON only (`BoundedBody`, bounds.py: 415, in every mode): a form
  or a `text/plain` fetch needs no CORS preflight, a JSON body does, and this API
  grants none;
- `LoopbackOnly` (here) answers only requests whose `Host` is a loopback name
  (`localhost`, `127.x.x.x`, `[::1]`, any port): a DNS-rebound name
  (evil.example resolving to 127.0.0.1) reads nothing and writes nothing;
- and whose `Origin`, when there is one, is a loopback origin: a page elsewhere
  (or an opaque `null` origin: sandboxed frames, `data:` and `file:` pages) cannot
  write even blind, without reading the answer.

Both refusals are 403 `forbidden`. With `--auth` every call needs a bearer token,
which another site's page does not have, and this layer is not installed.
"""

from __future__ import annotations

import ipaddress
from typing import Any, cast

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send

from orchestrator.api.auth import REFUSED_KEY
from orchestrator.api.errors import forbidden, send_problem

_WEB_SCHEMES = ("http://", "https://")
_HINT = "start the API with --auth to serve other hosts"


def is_loopback(host: str) -> bool:
    """`localhost`, or a loopback address (127.0.0.0/8, ::1), without brackets or port."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(authority: str) -> str | None:
    """The host of `host[:port]` or `[v6]:port`; None when it is neither."""
    if authority.startswith("["):
        v6, close, port = authority[1:].partition("]")
        if not close or ":" not in v6 or (port and not (port[0] == ":" and port[1:].isdigit())):
            return None
        return v6
    host, colon, port = authority.partition(":")
    if colon and not port.isdigit():  # also a bare IPv6 address, which a Host header never is
        return None
    return host


def is_loopback_authority(authority: str) -> bool:
    """A `Host` header value that names this machine: a loopback name, with or without port."""
    host = _host_of(authority.strip())
    return host is not None and is_loopback(host)


def is_loopback_origin(origin: str) -> bool:
    """`http(s)://<loopback name>[:port]`, exactly as browsers send an Origin (no path); never `null`."""
    scheme = next((s for s in _WEB_SCHEMES if origin.lower().startswith(s)), None)
    return scheme is not None and is_loopback_authority(origin[len(scheme) :])


def refusal(scope: HTTPScope) -> str | None:
    """Why open mode refuses this request (the 403's detail), or None to serve it."""
    hosts = [value.decode("latin-1") for key, value in scope["headers"] if key == b"host"]
    if not hosts:
        return f"open mode serves loopback clients only: the request has no Host header; {_HINT}"
    for host in hosts:
        if not is_loopback_authority(host):
            return f"open mode serves loopback clients only: Host {host!r} is not a loopback name; {_HINT}"
    for key, value in scope["headers"]:
        if key == b"origin" and not is_loopback_origin(origin := value.decode("latin-1")):
            return (
                f"open mode serves loopback pages only: Origin {origin!r} is not http(s)://localhost, "
                f"127.0.0.1 or [::1] (any port), so a web page elsewhere cannot drive this API; {_HINT}"
            )
    return None


class LoopbackOnly:
    """ASGI layer of an open API: 403 for a request from anywhere but this machine's own pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and (detail := refusal(scope)) is not None:
            cast("dict[str, Any]", scope)[REFUSED_KEY] = detail  # the audit record gives the reason
            await send_problem(send, forbidden(detail), scope["path"])
            return
        await self.app(scope, receive, send)
