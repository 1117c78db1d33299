"""Serve the console's built files, and Swagger UI's, from the package: no CDN, no network.

`ConsoleAssets` sits in front of the API's ASGI stack and answers GET/HEAD for

    /                        the console's index.html (the app routes itself with `#/...`)
    /console/<file>          the console's built assets (hashed names: cached for a year)
    /console/swagger/<file>  Swagger UI's bundle, preset, stylesheet and favicon (for /schema/swagger)

Everything else goes to the API. These files are public and static: they hold
no data, so they need no token (the login form is among them) and are audited only
when refused (`serves` tells the audit layer which requests they are). In open mode
they sit behind the loopback check like every other path (api/loopback.py). Each file is read once and kept with its gzip form, served
when the client accepts it. Paths are looked up in the set of files shipped, so
`..` or any other name is simply not found.
"""

from __future__ import annotations

import gzip
import mimetypes
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send

STATIC = Path(str(resources.files("orchestrator.console").joinpath("static")))
PREFIX = "/console/"
SWAGGER = "/console/swagger/"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8"}
# The console's page may load only what it ships and talk only to its own origin.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    media_type: str
    immutable: bool


def load(root: Path = STATIC) -> dict[str, Asset]:
    """Every shipped file by its URL path."""
    found: dict[str, Asset] = {}
    if not root.is_dir():
        return found
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        body = path.read_bytes()
        media = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        packed = gzip.compress(body, 6, mtime=0) if media.startswith(("text/", "application/json", "image/svg")) else None
        url = "/" if rel == "index.html" else PREFIX + rel
        found[url] = Asset(body, packed if packed and len(packed) < len(body) else None, media, immutable="/assets/" in url)
    return found


class ConsoleAssets:
    """ASGI layer: the console's and Swagger UI's files, or the wrapped API."""

    def __init__(self, app: ASGIApp, root: Path = STATIC) -> None:
        self.app = app
        self.assets = load(root)

    @staticmethod
    def serves(scope: HTTPScope) -> bool:
        """Whether this layer answers the request (a file, or its 404), not the API."""
        return scope["method"] in ("GET", "HEAD") and (scope["path"] == "/" or scope["path"].startswith(PREFIX))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or not self.serves(scope):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        asset = self.assets.get(path)
        if asset is None:
            await _send(send, 404, b"not found", "text/plain; charset=utf-8", [], head=scope["method"] == "HEAD")
            return
        accepts = any(k == b"accept-encoding" and b"gzip" in v for k, v in scope["headers"])
        body, extra = asset.body, [(b"vary", b"accept-encoding")]
        if asset.gzipped is not None and accepts:
            body, extra = asset.gzipped, [*extra, (b"content-encoding", b"gzip")]
        cache = b"public, max-age=31536000, immutable" if asset.immutable else b"no-cache"
        extra += [(b"cache-control", cache), (b"x-content-type-options", b"nosniff")]
        if path == "/":
            extra += [(b"content-security-policy", CSP.encode()), (b"referrer-policy", b"no-referrer")]
        await _send(send, 200, body, asset.media_type, extra, head=scope["method"] == "HEAD")


async def _send(send: Send, status: int, body: bytes, media: str, headers: list[tuple[bytes, bytes]], *, head: bool) -> None:
    start = [(b"content-type", media.encode()), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": b"" if head else body, "more_body": False})
