"""Run one command in a pseudo terminal and stream its output byte-exact.

``PtyRunner.run`` spawns the command with ptyprocess (so it sees a real
terminal and leads its own session), reads the pty master on the event loop,
hands coalesced chunks to ``on_output`` and returns a ``RunResult`` once the
command has exited and its output is drained.

Stdin is closed at once, like ``ssh -n``: right after the spawn the terminal's
EOF character (VEOF, normally ^D) is queued on the pty once, so the first read
of stdin (``read``, ``cat``, a password prompt) returns end-of-file instead of
waiting forever for input nobody can type. Nothing is echoed (echo is off).
A command that reads stdin again after that EOF, or switches the terminal to
raw mode first (and so sees a 0x04 byte), is on its own: it waits until its
timeout or a cancel.

Errors::

    SpawnFailed        the command could not be started (bad cwd, no such
                       executable, exec failed); carries ``reason``

Exceptions raised by ``on_output``/``on_started`` and cancellation of ``run``
itself propagate unchanged, after the process tree was SIGKILLed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import termios
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from ptyprocess import PtyProcess  # type: ignore[import-untyped]

from agent import job_signals, process_tree, pty_spawn
from agent.masking import OutputMasker
from agent.pty_output import OutputBudget, OutputCallback, PtyReader, deliver, drain
from schemas import runnable


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """What to run and how."""

    argv: list[str]
    cwd: str | None = None
    env: dict[str, str] | None = None  # full environment; None inherits ours
    timeout_s: float | None = None
    kill_grace_s: float = 5.0  # SIGTERM, wait this long, then SIGKILL
    cols: int = 80
    rows: int = 30
    chunk_max: int = 32 * 1024
    flush_interval_s: float = 0.05
    secrets: tuple[bytes, ...] = ()  # replaced by the mask in the output (agent.masking)
    output_max: int | None = None  # output kept, in bytes (None: all); the rest is read and dropped


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """How a run ended."""

    exit_code: int | None  # None when killed by a signal
    signal: int | None
    duration_ms: int
    output_bytes: int
    chunks: int
    killed_by: Literal["timeout", "cancel"] | None
    output_dropped: int = 0  # read past spec.output_max, not kept


class SpawnFailed(Exception):
    """The command could not be started; nothing ran."""

    retryable = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


StartedCallback = Callable[[int], Awaitable[None]]


class PtyRunner:
    """Runs commands in a pty; one instance can serve many concurrent runs."""

    async def run(
        self,
        spec: RunSpec,
        on_output: OutputCallback,
        cancel: asyncio.Event | None = None,
        on_started: StartedCallback | None = None,
    ) -> RunResult:
        """Run ``spec`` to completion, streaming output to ``on_output``.

        The command's stdin is closed at once: its first read gets end-of-file.
        """
        argv = resolve_argv(spec)
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        proc = _spawn(spec, argv)
        pid: int = proc.pid
        _close_stdin(proc.fd)
        tty = _pty_device(proc.fd, pid)
        reaper = Reaper(loop, pid)
        reader = PtyReader(loop, proc.fd, cap=4 * spec.chunk_max, chunk=spec.chunk_max)
        budget = OutputBudget(spec.output_max)
        delivery: asyncio.Task[None] | None = None
        try:
            if on_started is not None:
                await on_started(pid)
            # Started only now so no chunk can overtake on_started.
            reader.start()
            masker = OutputMasker(spec.secrets) if spec.secrets else None
            delivery = asyncio.create_task(deliver(reader, on_output, spec.chunk_max, spec.flush_interval_s, masker, budget))
            killed_by = await supervise(spec, reaper.exited, delivery, cancel, started)
            if killed_by is not None:
                await process_tree.kill_tree(pid, spec.kill_grace_s, tty=tty)
            status, exited_at = await reaper.exited
            if not await drain(reader):
                # The command is gone but something it left behind still holds
                # the pty open (`sleep 100 &`, `setsid sleep 100 &`): end it,
                # then collect what it printed on the way out.
                await process_tree.kill_session(pid, grace_s=0, tty=tty)
                await drain(reader)
            reader.stop()
            await delivery
        except BaseException:
            process_tree.kill_tree_now(pid, leader_reaped=reaper.exited.done())
            if delivery is not None:
                delivery.cancel()
            raise
        finally:
            reader.stop()
            # Closing through ptyprocess's file object keeps it from closing
            # the (by then possibly reused) fd number again when collected.
            proc.fileobj.close()
            proc.closed = True
        code = os.waitstatus_to_exitcode(status) if status is not None else None
        return RunResult(
            exit_code=code if code is not None and code >= 0 else None,
            signal=-code if code is not None and code < 0 else None,
            duration_ms=int((exited_at - started) * 1000),
            output_bytes=reader.delivered_bytes,
            chunks=reader.delivered_chunks,
            killed_by=killed_by,
            output_dropped=budget.dropped,
        )


def resolve_argv(spec: RunSpec) -> list[str]:
    """Check what exec will be given (schemas.runnable) and cwd, and find the executable the way
    the child's exec will. A dispatch the orchestrator's analysis should have rejected (one
    from an older orchestrator) ends here as a clear reason, not an error from deep in exec."""
    if not spec.argv:
        raise SpawnFailed("empty argv")
    if (problem := runnable.unrunnable(spec.argv, spec.cwd, spec.env or {})) is not None:
        raise SpawnFailed(problem)
    if spec.cwd is not None:
        if not os.path.isdir(spec.cwd):
            raise SpawnFailed(f"cwd does not exist or is not a directory: {spec.cwd}")
        if not os.access(spec.cwd, os.X_OK):
            raise SpawnFailed(f"cwd is not accessible: {spec.cwd}")
    command = spec.argv[0]
    if os.sep in command:
        # A relative path is relative to the child's cwd, not ours.
        candidate = os.path.join(spec.cwd or os.getcwd(), command)
        found = shutil.which(candidate)
    else:
        # ptyprocess would search *our* PATH; the child's PATH is what counts.
        env = os.environ if spec.env is None else spec.env
        found = shutil.which(command, path=env.get("PATH", os.defpath))
    if found is None:
        raise SpawnFailed(f"executable not found or not executable: {command}")
    return [os.path.abspath(found), *spec.argv[1:]]


def _spawn(spec: RunSpec, argv: list[str]) -> Any:
    if spec.cwd is None and pty_spawn.AVAILABLE:
        # posix_spawn: the same terminal set-up without forking the agent (agent.pty_spawn).
        try:
            return pty_spawn.spawn(argv, os.environ if spec.env is None else spec.env, spec.rows, spec.cols)
        except OSError as e:
            raise SpawnFailed(f"cannot start {argv[0]}: {e}") from e

    to_default = job_signals.ignored()

    def prepare_child() -> None:
        # Runs in the forked child before exec, with the pty slave on fd 0-2.
        # chdir happens here rather than via ptyprocess's cwd= because an
        # error in preexec_fn is reported back to us, whereas a failing
        # chdir inside ptyprocess would escape into the forked copy of us.
        if spec.cwd is not None:
            os.chdir(spec.cwd)
        attrs = termios.tcgetattr(0)
        # Byte-exact output: no "\n" -> "\r\n" or other output processing,
        # and nothing we might write is echoed back into the output.
        attrs[1] &= ~(termios.OPOST | termios.ONLCR)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(0, termios.TCSANOW, attrs)
        # Ignored signals and the mask survive exec: the job starts with defaults
        # (`yes | head` must not print "Broken pipe"; nohup's SIGHUP is not the job's).
        job_signals.reset_in_child(to_default)

    try:
        return PtyProcess.spawn(
            argv,
            env=spec.env,
            dimensions=(spec.rows, spec.cols),
            preexec_fn=prepare_child,
        )
    except Exception as e:
        # Broad on purpose: ptyprocess re-raises an error from the child's
        # preexec_fn or exec by class *name*, as a plain Exception for
        # non-builtin classes such as termios.error.
        raise SpawnFailed(f"cannot start {argv[0]}: {e}") from e


def _close_stdin(master_fd: int) -> None:
    """Queue one EOF on the job's terminal: its first read of stdin returns nothing.

    Called after the spawn returned, that is after ``prepare_child`` turned echo
    off and the command was exec'd. On Linux, termios calls on the master act on
    the slave's settings, so this is the EOF character the job's terminal uses.
    """
    try:
        veof = termios.tcgetattr(master_fd)[6][termios.VEOF]
        char = veof if isinstance(veof, bytes) else bytes([veof])
        if char != b"\0":  # _POSIX_VDISABLE: the terminal has no EOF character
            os.write(master_fd, char)
    except (OSError, termios.error):
        # The command already exited and took its terminal with it: nothing
        # left to read stdin.
        pass


def _pty_device(master_fd: int, pid: int) -> int | None:
    """Device number of the pty slave, to find processes that still use it."""
    try:
        with open(f"/proc/self/fdinfo/{master_fd}") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "tty-index":
                    return os.stat(f"/dev/pts/{int(value)}").st_rdev
    except (OSError, ValueError):
        pass
    # Kernels without tty-index: ask the child. This misses the pty if the
    # child has already exited, since an exited leader loses its terminal.
    return process_tree.controlling_tty(pid)


class Reaper:
    """Waits for the child; resolves ``exited`` to (status, time).

    On Linux the event loop watches a pidfd of the child (readable once it has exited) and
    reaps it then: no thread per job. Without pidfds, a dedicated thread per child waits in
    waitpid (not the default executor, so that many long-running jobs cannot starve each
    other's exit detection). The status is None if the child was reaped by someone else.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, pid: int) -> None:
        self._loop = loop
        self._pid = pid
        self.exited: asyncio.Future[tuple[int | None, float]] = loop.create_future()
        try:
            self._pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):  # not Linux, or a kernel before 5.3
            threading.Thread(target=self._wait, name=f"pty-reaper-{pid}", daemon=True).start()
        else:
            loop.add_reader(self._pidfd, self._on_pidfd)

    def _on_pidfd(self) -> None:
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._resolve(self._reap())  # it has exited: waitpid returns at once

    def _wait(self) -> None:
        result = self._reap()
        # RuntimeError: the loop is closed, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._resolve, result)

    def _reap(self) -> tuple[int | None, float]:
        status: int | None
        try:
            _, status = os.waitpid(self._pid, 0)
        except ChildProcessError:
            status = None
        return status, time.monotonic()

    def _resolve(self, result: tuple[int | None, float]) -> None:
        if not self.exited.done():
            self.exited.set_result(result)


async def supervise(
    spec: RunSpec,
    exited: asyncio.Future[Any],
    delivery: asyncio.Task[None],
    cancel: asyncio.Event | None,
    started: float,
) -> Literal["timeout", "cancel"] | None:
    """Wait for exit, timeout or cancel; a failing ``on_output`` raises here."""
    deadline = None if spec.timeout_s is None else started + spec.timeout_s
    cancelled = None if cancel is None else asyncio.create_task(cancel.wait())
    waiting: set[asyncio.Future[Any]] = {exited, delivery}
    if cancelled is not None:
        waiting.add(cancelled)
    try:
        while True:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return "timeout"
            done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if exited in done:
                return None
            if cancelled in done:
                return "cancel"
            if delivery in done:
                # Output may end (all pty fds closed) before the command does;
                # keep waiting for the exit, but surface on_output's error now.
                delivery.result()
                waiting.discard(delivery)
    finally:
        if cancelled is not None:
            cancelled.cancel()
