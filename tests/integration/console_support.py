"""A real `nexus up` and a real headless Chromium for the console's browser tests.

Chromium is Debian's (`/usr/bin/chromium`, installed by `make test` when missing),
driven by Playwright through `executable_path`: nothing is downloaded. The browser
is started with every background service off, and each page records the requests
that leave loopback, so a test can prove the console needs no network.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from tests.conftest import NEXUS

T = TypeVar("T")
CHROMIUM = os.environ.get("NEXUS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
# Screenshots go to a scratch directory, or, to refresh the ones docs/console.md shows,
# to the directory NEXUS_CONSOLE_SHOTS names (`NEXUS_CONSOLE_SHOTS=docs/console`).
SHOTS = Path(os.environ.get("NEXUS_CONSOLE_SHOTS") or Path(tempfile.gettempdir()) / "nexus-console-shots")
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


def until(predicate: Callable[[], T | None], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy (the sync twin of conftest.wait_for)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Up:
    """A running `nexus up`: its API's URL, NATS URL and data directory."""

    proc: subprocess.Popen[bytes]
    data: Path
    lines: list[str] = field(default_factory=list)
    url: str = ""
    nats: str = ""

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)


@contextlib.contextmanager
def nexus_up(tmp: Path, *extra: str) -> Iterator[Up]:
    """`nexus up` in `tmp` (never the worktree: it writes ./.nexus), on free ports."""
    data = tmp / "nexus-data"
    proc = subprocess.Popen(
        [NEXUS, "up", "--data", str(data), "--port", "-1", "--api-port", "0", "--node", "local-1", "--node-ttl", "5", *extra],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    up = Up(proc=proc, data=data)
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace")
            up.lines.append(line)
            if m := re.search(r"nexus is up: NATS (nats://\S+),.* API (http://[\w.:\[\]-]+?)\.?\s", line):
                up.nats, up.url = m.group(1), m.group(2)
                ready.set()
        ready.set()  # ended: the wait below reports it

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        ready.wait(90)
        assert up.url, "nexus up did not come up:\n" + "".join(up.lines[-30:])
        with up.http() as client:
            until(lambda: client.get("/api/v1/nodes").status_code in (200, 401), what="the API answering")
        yield up
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        reader.join(5)
        if proc.stderr is not None:
            proc.stderr.close()


class DroppingProxy:
    """A loopback TCP relay in front of the API whose `drop()` cuts every open connection, as a
    network failure would (Chromium's offline emulation leaves open streams alone)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.drops = 0
        self.refusing = False  # cut new connections at once too: the network is down
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.refusing:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.open |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        self._close(src, dst)

    def _close(self, *socks: socket.socket) -> None:
        with self.lock:
            for sock in socks:
                if sock in self.open:
                    self.open.discard(sock)
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    sock.close()

    def drop(self) -> None:
        self.drops += 1
        self._close(*list(self.open))

    def close(self) -> None:
        self.server.close()
        self.drop()


@contextlib.contextmanager
def dropping_proxy(url: str) -> Iterator[DroppingProxy]:
    proxy = DroppingProxy(url)
    try:
        yield proxy
    finally:
        proxy.close()


@contextlib.contextmanager
def chromium() -> Iterator[tuple[Playwright, Browser]]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield pw, browser
        finally:
            browser.close()


class Watched:
    """A page, the requests it made that left loopback, its script errors and what it logged as
    an error on the console (a failed request among them: Chromium logs a 401 there)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.offsite: list[str] = []
        self.errors: list[str] = []
        self.console_errors: list[str] = []
        page.on("request", self._request)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", lambda msg: self.console_errors.append(msg.text) if msg.type == "error" else None)

    def _request(self, request: Any) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("data", "blob", "about"):
            return
        if parts.hostname not in LOOPBACK:
            self.offsite.append(request.url)


def new_page(browser: Browser, *, width: int = 1280, height: int = 860, **options: Any) -> Watched:
    context = browser.new_context(viewport={"width": width, "height": height}, **options)
    return Watched(context.new_page())


def shot(page: Page, name: str, *, full_page: bool = False) -> None:
    """A screenshot of the view (PNG, the viewport unless asked), for docs/console.md."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page, animations="disabled")
