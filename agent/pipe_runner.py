"""Run one command with plain pipes (a `tty: false` job) and stream stdout and stderr apart.

The same contract as ``agent.pty_runner.PtyRunner`` (the same ``RunSpec`` and
``RunResult``; timeouts, cancel, killing the whole process tree, secrets masked,
``SpawnFailed`` when nothing could start), for bulk output at pipe speed: no
terminal line discipline between the command and us, and bigger reads.

Each stream has its own bounded reader (``agent.pty_output.PtyReader`` works on
any descriptor: when its buffer is full it stops reading, the pipe fills up and
the command blocks on write) and its own masker, and is delivered in order to
``on_output(data, stream)`` with ``stream`` ``"stdout"`` or ``"stderr"``. The
two streams are independent: their relative order is not kept (no pipe pair
can tell it), the order within each is.

Stdin is ``/dev/null``: the first read gets end-of-file, as with the PTY's EOF.
The command leads its own session (``start_new_session``), so the tree is found
and killed the same way as for a PTY job.

A PTY job ends with its terminal when the agent is killed (`kill -9`): the kernel hangs the
terminal up. Pipes give no such signal (a job that does not write never notices), so each job
has a watchdog: a `sh` reading a pipe only the agent holds. The agent tells it the job is over
(a line); if instead the pipe closes with the agent, it SIGKILLs the job's process group, so
a job never outlives its agent to overlap an idempotent retry (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from agent import job_signals, process_tree
from agent.masking import OutputMasker
from agent.pty_output import OutputBudget, PtyReader, deliver, drain
from agent.pty_runner import Reaper, RunResult, RunSpec, SpawnFailed, StartedCallback, resolve_argv, supervise
from bus.logs import Logger

log = Logger("nexus.agent")

Stream = Literal["stdout", "stderr"]
PIPE_SIZE = 1024 * 1024  # Linux's default pipe-max-size
StreamCallback = Callable[[bytes, Stream], Awaitable[None]]


class PipeRunner:
    """Runs commands with stdout and stderr on pipes; one instance can serve many concurrent runs."""

    async def run(
        self,
        spec: RunSpec,
        on_output: StreamCallback,
        cancel: asyncio.Event | None = None,
        on_started: StartedCallback | None = None,
    ) -> RunResult:
        """Run ``spec`` to completion, streaming each stream's output to ``on_output``."""
        argv = resolve_argv(spec)
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        proc, fds = _spawn(spec, argv)
        pid = proc.pid
        watchdog = _Watchdog.start(pid)
        reaper = Reaper(loop, pid)
        readers = {name: PtyReader(loop, fd, cap=4 * spec.chunk_max, chunk=spec.chunk_max, read_size=spec.chunk_max)
                   for name, fd in fds.items()}  # fmt: skip
        budget = OutputBudget(spec.output_max)  # both streams together
        delivery: asyncio.Task[None] | None = None
        status: int | None = None
        try:
            if on_started is not None:
                await on_started(pid)
            for reader in readers.values():  # only now, so no chunk can overtake on_started
                reader.start()
            delivery = asyncio.create_task(_deliver_both(readers, on_output, spec, budget))
            killed_by = await supervise(spec, reaper.exited, delivery, cancel, started)
            if killed_by is not None:
                await process_tree.kill_tree(pid, spec.kill_grace_s)
            status, exited_at = await reaper.exited
            if not all([await drain(r) for r in readers.values()]):
                # The command is gone but something it started still holds a pipe open
                # (`sleep 100 &`, `setsid sleep 100 &`): end its session and whatever else
                # holds our pipes, then collect what it printed on the way out.
                await process_tree.kill_session(pid, grace_s=0)
                _kill_pipe_holders(list(fds.values()))
                for reader in readers.values():
                    await drain(reader)
            for reader in readers.values():
                reader.stop()
            await delivery
        except BaseException:
            process_tree.kill_tree_now(pid, leader_reaped=reaper.exited.done())
            if delivery is not None:
                delivery.cancel()
            raise
        finally:
            if watchdog is not None:
                watchdog.release(loop)
            for reader in readers.values():
                reader.stop()
            for fd in fds.values():
                os.close(fd)
            # Reaped by our own thread: tell Popen, so that it neither waits again nor warns.
            proc.returncode = os.waitstatus_to_exitcode(status) if status is not None else -9
        code = os.waitstatus_to_exitcode(status) if status is not None else None
        return RunResult(
            exit_code=code if code is not None and code >= 0 else None,
            signal=-code if code is not None and code < 0 else None,
            duration_ms=int((exited_at - started) * 1000),
            output_bytes=sum(r.delivered_bytes for r in readers.values()),
            chunks=sum(r.delivered_chunks for r in readers.values()),
            killed_by=killed_by,
            output_dropped=budget.dropped,
        )


async def _deliver_both(readers: dict[Stream, PtyReader], on_output: StreamCallback, spec: RunSpec, budget: OutputBudget) -> None:
    """Deliver each stream in order, each with its own masker (a secret may be split across its chunks),
    both within the one budget of the run."""

    def sink(name: Stream) -> Callable[[bytes], Awaitable[None]]:
        async def send(data: bytes) -> None:
            await on_output(data, name)

        return send

    tasks = [
        asyncio.create_task(
            deliver(reader, sink(name), spec.chunk_max, spec.flush_interval_s, OutputMasker(spec.secrets) if spec.secrets else None, budget)
        )
        for name, reader in readers.items()
    ]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


# Reads its stdin; end-of-file without the agent's line: the agent is gone, kill the job's group.
_WATCHDOG = 'read _ || kill -9 -"$1" 2>/dev/null'  # dash and bash: a negative pid is the group


class _Watchdog:
    def __init__(self, pid: int, line: int) -> None:
        self.pid = pid
        self.line = line  # our end of its stdin: held by the agent alone (close-on-exec)

    @classmethod
    def start(cls, pgid: int) -> _Watchdog | None:
        """A watchdog of the job's process group; None (logged) if none could start: the job runs anyway."""
        read_end, write_end = os.pipe()  # both close-on-exec: no job inherits the agent's end
        try:
            pid = os.posix_spawn(
                "/bin/sh", ["/bin/sh", "-c", _WATCHDOG, "nexus-job-watchdog", str(pgid)], {},
                file_actions=[(os.POSIX_SPAWN_DUP2, read_end, 0), (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                              (os.POSIX_SPAWN_DUP2, 1, 2)],
                setsid=True,
            )  # fmt: skip
        except (OSError, AttributeError, NotImplementedError) as exc:  # (no posix_spawn or its setsid here)
            os.close(write_end)
            log.warning("job.no_watchdog", pid=pgid, error=str(exc), consequence="the job outlives the agent if it is killed")
            return None
        finally:
            os.close(read_end)
        return cls(pid, write_end)

    def release(self, loop: asyncio.AbstractEventLoop) -> None:
        """The job is over: the watchdog reads our line and ends without killing anything (reaped when it has)."""
        with contextlib.suppress(OSError):
            os.write(self.line, b"\n")
        os.close(self.line)
        Reaper(loop, self.pid)


def _kill_pipe_holders(read_fds: list[int]) -> None:
    """SIGKILL every other process that holds one of these pipes (by inode, through /proc).

    A process that left the job's session (`setsid`) is out of reach of the session kill, but
    it still holds the write end it inherited: only the job's processes can (our pipes are
    close-on-exec, so no other child of the agent inherits them)."""
    wanted = {f"pipe:[{os.fstat(fd).st_ino}]" for fd in read_fds}
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            held = any(os.readlink(f"/proc/{entry.name}/fd/{fd}") in wanted for fd in os.listdir(f"/proc/{entry.name}/fd"))
        except OSError:  # gone meanwhile, or not ours to look at
            continue
        if held:
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)


def _spawn(spec: RunSpec, argv: list[str]) -> tuple[subprocess.Popen[bytes], dict[Stream, int]]:
    """Start the command on two fresh pipes; returns it and the read ends, by stream."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    for fd in (out_r, err_r):
        # A bigger pipe: the command writes (and we read) up to a whole chunk at a time,
        # instead of both waking up for every 64 KiB. Only a speed-up: without it (over the
        # user's pipe quota, say) the pipe keeps its default size.
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            cwd=spec.cwd,
            env=spec.env,
            start_new_session=True,  # its own session and process group: the tree is killed as one
            close_fds=True,
            # subprocess resets Python's SIGPIPE and SIGXFSZ; anything else the agent inherited
            # ignored or blocked (nohup's SIGHUP) takes a preexec_fn, which costs the fast vfork.
            preexec_fn=functools.partial(job_signals.reset_in_child, job_signals.ignored()) if job_signals.inherited() else None,
        )
    except (OSError, subprocess.SubprocessError) as e:
        for fd in (out_r, err_r):
            os.close(fd)
        raise SpawnFailed(f"cannot start {argv[0]}: {e}") from e
    finally:
        # Only the child holds the write ends now: our read sees end-of-file when it (and
        # whatever it started) closed them.
        os.close(out_w)
        os.close(err_w)
    return proc, {"stdout": out_r, "stderr": err_r}
