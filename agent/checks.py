"""Node-side assertions, checked by the agent right after a job's command exits:
file_exists, http_ok and command. Results go into `job.exited` as `checks`.

A check never raises and never outlives its budget:

- A `command` test runs in the same ``PtyRunner`` as the job's command, so it
  gets the same guarantees: its whole process tree is killed on timeout or
  cancel (SIGTERM, grace, SIGKILL), its stdin is closed at once, and its output
  is streamed with bounded memory, keeping only the tail that is reported.
  After it exits, whatever it left running in its process group or session,
  or still holding its terminal, is killed too: a test leaves nothing behind.
- An `http_ok` test sends one GET and reads only the status line (and, for a
  redirect, the headers up to ``Location``), never a body, under one deadline
  for the whole exchange, redirects included.
- Once the job's cancel event is set, the running check stops and the ones
  after it are reported as not checked.
- Anything unexpected becomes a failed ``TestResult`` naming the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence

from agent import process_tree
from agent.pty_runner import PtyRunner, RunSpec, SpawnFailed
from bus.logs import Logger
from schemas.text import text_view
from schemas.values import NODE_TESTS, CommandTest, FileExistsTest, HttpOkTest, JobTest, TestResult

log = Logger("nexus.agent")

_TAIL = 200  # characters of a command test's output quoted in its result
_TAIL_BYTES = 4 * _TAIL  # a character takes at most 4 bytes of UTF-8
_SHOWN = 200  # characters of a command, URL or path quoted in a result's `expected`
_MAX_ACTUAL = 1000  # characters of any result's `actual`
_MAX_REDIRECTS = 10
_MAX_HEADER_LINE = 8 * 1024
_MAX_HEADERS = 100
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CANCELLED = "cancelled"
_NOT_CHECKED = "not checked: the job was cancelled"

NodeTest = FileExistsTest | HttpOkTest | CommandTest


async def run_checks(
    tests: Sequence[JobTest],
    cwd: str | None,
    env: Mapping[str, str],
    cancel: asyncio.Event | None = None,
    *,
    kill_grace_s: float = 5.0,
    secrets: tuple[bytes, ...] = (),
) -> list[TestResult]:
    """One result per node-side test in ``tests``, in order; never raises.

    ``cancel`` is the job's cancel event; ``kill_grace_s`` is how long a
    command test's processes get between SIGTERM and SIGKILL; a command test's
    output is masked of ``secrets`` as the job's is.
    """
    results: list[TestResult] = []
    for test in tests:
        if not isinstance(test, NODE_TESTS):
            continue  # judged by the orchestrator
        if cancel is not None and cancel.is_set():
            results.append(_result(test, passed=False, actual=_NOT_CHECKED))
            continue
        try:
            results.append(await _check(test, cwd, env, cancel, kill_grace_s, secrets))
        except Exception as exc:
            log.exception("job.check_failed", test=_kind(test))
            results.append(_result(test, passed=False, actual=f"agent error: {describe(exc)}"))
    return results


def describe(exc: BaseException) -> str:
    """An exception as text that is never empty: ``OSError: no route`` or ``ProcessLookupError``."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _check(
    test: NodeTest, cwd: str | None, env: Mapping[str, str], cancel: asyncio.Event | None, kill_grace_s: float, secrets: tuple[bytes, ...]
) -> TestResult:
    match test:
        case FileExistsTest():
            return _file_exists(test, cwd)
        case HttpOkTest():
            return await _http_ok(test, cancel)
        case CommandTest():
            return await _command(test, cwd, env, cancel, kill_grace_s, secrets)


def _kind(test: NodeTest) -> str:
    return str(test.__struct_config__.tag)


def _expected(test: NodeTest) -> str:
    match test:
        case FileExistsTest():
            return f"{_clip(test.path)} exists"
        case HttpOkTest():
            return f"2xx from {_clip(test.url)} within {test.timeout_s:g}s"
        case CommandTest():
            return f"`{_clip(test.command)}` exits 0"


def _result(test: NodeTest, *, passed: bool, actual: str) -> TestResult:
    # Clipped so that 32 results always fit in one `job.exited` event.
    return TestResult(type=_kind(test), passed=passed, expected=_expected(test), actual=_clip(actual, _MAX_ACTUAL))


def _clip(text: str, limit: int = _SHOWN) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _file_exists(test: FileExistsTest, cwd: str | None) -> TestResult:
    path = os.path.join(cwd or os.getcwd(), os.path.expanduser(test.path))
    found = os.path.exists(path)
    return _result(test, passed=found, actual="exists" if found else "missing")


# ------------------------------------------------------------ command


class OutputTail:
    """An output callback that keeps only the last ``keep`` bytes."""

    def __init__(self, keep: int = _TAIL_BYTES) -> None:
        self._keep = keep
        self._buf = bytearray()

    async def __call__(self, chunk: bytes) -> None:
        self._buf += chunk[-self._keep :]
        del self._buf[: -self._keep]

    def text(self) -> str:
        """The last characters of the output, as people read it (no ANSI, no CRLF)."""
        return text_view(bytes(self._buf)).strip()[-_TAIL:]


async def _command(
    test: CommandTest,
    cwd: str | None,
    env: Mapping[str, str],
    cancel: asyncio.Event | None,
    kill_grace_s: float,
    secrets: tuple[bytes, ...],
) -> TestResult:
    spec = RunSpec(
        argv=["bash", "-c", test.command], cwd=cwd, env=dict(env), timeout_s=test.timeout_s, kill_grace_s=kill_grace_s, secrets=secrets
    )
    tail = OutputTail()
    leader: int | None = None

    async def on_started(pid: int) -> None:
        nonlocal leader
        leader = pid

    try:
        result = await PtyRunner().run(spec, tail, cancel, on_started)
    except SpawnFailed as exc:
        return _result(test, passed=False, actual=f"could not start: {exc.reason}")
    if leader is not None:
        # The runner kills what holds the terminal; this also ends what stayed
        # in the test's group or session without it (`nohup cmd >/dev/null &`).
        await process_tree.kill_session(leader, kill_grace_s)
    if result.killed_by == "timeout":
        return _result(test, passed=False, actual=f"timed out after {test.timeout_s:g}s")
    if result.killed_by == "cancel":
        return _result(test, passed=False, actual=_CANCELLED)
    ended = f"exit {result.exit_code}" if result.exit_code is not None else f"killed by signal {result.signal}"
    shown = tail.text()
    return _result(test, passed=result.exit_code == 0, actual=f"{ended}: {shown}" if shown else ended)


# ------------------------------------------------------------ http_ok


async def _http_ok(test: HttpOkTest, cancel: asyncio.Event | None) -> TestResult:
    try:
        async with _deadline(test.timeout_s, cancel):
            status = await http_status(test.url)
    except TimeoutError:
        if cancel is not None and cancel.is_set():
            return _result(test, passed=False, actual=_CANCELLED)
        return _result(test, passed=False, actual=f"error: no complete answer within {test.timeout_s:g}s")
    except (OSError, EOFError, ValueError) as exc:
        # OSError covers refused connections, DNS and TLS failures; EOFError a
        # server that hung up early; ValueError a bad URL or a bad answer.
        return _result(test, passed=False, actual=f"error: {describe(exc)}")
    return _result(test, passed=200 <= status < 300, actual=f"HTTP {status}")


@contextlib.asynccontextmanager
async def _deadline(timeout_s: float, cancel: asyncio.Event | None) -> AsyncIterator[None]:
    """``asyncio.timeout`` that a set ``cancel`` also ends at once (TimeoutError either way)."""
    async with asyncio.timeout(timeout_s) as scope:
        if cancel is None:
            yield
            return
        loop = asyncio.get_running_loop()
        active = True

        def expire(_: object) -> None:
            if active and cancel.is_set() and not scope.expired():
                scope.reschedule(loop.time())

        watcher = asyncio.ensure_future(cancel.wait())
        watcher.add_done_callback(expire)
        try:
            yield
        finally:
            active = False
            watcher.cancel()


async def http_status(url: str) -> int:
    """The status code a GET of ``url`` answers with, after following redirects.

    Reads the status line and, for a redirect, the headers; never a body. No
    time limit of its own: the caller bounds the whole exchange.
    """
    for _ in range(_MAX_REDIRECTS):
        status, location = await _status_and_location(url)
        if location is None:
            return status
        url = urllib.parse.urljoin(url, location)
    status, _ = await _status_and_location(url)
    return status


async def _status_and_location(url: str) -> tuple[int, str | None]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    tls = _tls_context() if parts.scheme == "https" else None
    port = parts.port or (443 if tls else 80)
    reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=tls, limit=_MAX_HEADER_LINE)
    try:
        writer.write(_request(parts))
        await writer.drain()
        status = parse_status_line(await reader.readline())
        while 100 <= status < 200:  # informational (103 Early Hints): the real answer follows
            await _header(reader, b"")
            status = parse_status_line(await reader.readline())
        location = await _header(reader, b"location") if status in _REDIRECTS else None
        return status, location
    finally:
        # Abort, not close: no TLS goodbye, no waiting for a body nobody reads.
        writer.transport.abort()


def _request(parts: urllib.parse.SplitResult) -> bytes:
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    host = parts.netloc.rpartition("@")[2]
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in target + host):
        raise ValueError(f"URL contains spaces or control characters: {target!r}")
    head = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: nexus-agent\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    return head.encode("ascii")  # a non-ASCII URL raises UnicodeEncodeError, a ValueError


def parse_status_line(line: bytes) -> int:
    """The status code of an HTTP status line such as ``HTTP/1.1 200 OK``."""
    version, _, rest = line.partition(b" ")
    code = rest[:3]
    if not line:
        raise EOFError("the server closed the connection without answering")
    if not version.startswith(b"HTTP/") or len(code) != 3 or not code.isdigit() or rest[3:4] not in (b"", b" ", b"\r", b"\n"):
        raise ValueError(f"not an HTTP status line: {line[:80]!r}")
    return int(code)


async def _header(reader: asyncio.StreamReader, name: bytes) -> str | None:
    """The value of header ``name``; reads the header block up to its end or to that header."""
    for _ in range(_MAX_HEADERS):
        line = await reader.readline()
        if not line.strip():
            return None
        key, _, value = line.partition(b":")
        if name and key.strip().lower() == name:
            return value.strip().decode("latin-1")
    raise ValueError(f"more than {_MAX_HEADERS} header lines")


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA store costs milliseconds: do it once per process.
    return ssl.create_default_context()
