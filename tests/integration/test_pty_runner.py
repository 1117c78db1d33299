"""PtyRunner against real pseudo terminals and real process trees (Linux)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.pty_runner import PtyRunner, RunResult, RunSpec, SpawnFailed
from tests.conftest import wait_for, wait_stalled
from tests.integration.processes import procs_with, token

DEADLINE_S = 10.0


class Output:
    """An on_output callback that records chunks and when they arrived."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.arrived: list[float] = []
        self.first = asyncio.Event()

    async def __call__(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.arrived.append(time.monotonic())
        self.first.set()

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


async def run(argv: list[str], **kw: Any) -> tuple[RunResult, Output]:
    out = Output()
    spec = RunSpec(argv=argv, **kw)
    result = await asyncio.wait_for(PtyRunner().run(spec, out), DEADLINE_S)
    return result, out


async def no_survivors(*needles: str) -> None:
    await wait_for(lambda: not procs_with(*needles), DEADLINE_S, what=f"{needles} are gone")


@pytest.mark.asyncio
async def test_echo_output_is_exact() -> None:
    result, out = await run(["/bin/bash", "-c", "echo hello"])
    assert out.data == b"hello\n"
    assert result.exit_code == 0
    assert result.signal is None
    assert result.killed_by is None
    assert result.output_bytes == 6
    assert result.chunks == len(out.chunks) == 1


@pytest.mark.asyncio
async def test_newlines_are_not_translated() -> None:
    _, out = await run(["/bin/sh", "-c", "printf 'a\\nb'"])
    assert out.data == b"a\nb"


@pytest.mark.asyncio
async def test_invalid_utf8_is_byte_exact() -> None:
    _, out = await run(["/bin/bash", "-c", "printf '\\xff\\xfe\\x00x'"])
    assert out.data == b"\xff\xfe\x00x"


@pytest.mark.asyncio
async def test_exit_code_is_propagated() -> None:
    result, _ = await run(["/bin/sh", "-c", "exit 3"])
    assert result.exit_code == 3
    assert result.signal is None


@pytest.mark.asyncio
async def test_death_by_signal_is_reported() -> None:
    result, _ = await run(["/bin/sh", "-c", "kill -KILL $$"])
    assert result.exit_code is None
    assert result.signal == signal.SIGKILL
    assert result.killed_by is None


@pytest.mark.asyncio
async def test_command_has_a_real_terminal() -> None:
    result, out = await run(
        ["/bin/sh", "-c", "tty; test -t 1 && echo is-a-tty; stty size"],
        rows=40,
        cols=100,
    )
    lines = out.data.decode().splitlines()
    assert lines[0].startswith("/dev/pts/")
    assert lines[1:] == ["is-a-tty", "40 100"]
    assert result.exit_code == 0


@pytest.mark.asyncio
async def test_on_started_gets_the_pid_before_any_output() -> None:
    seen: list[object] = []

    async def on_started(pid: int) -> None:
        seen.append(pid)

    async def on_output(chunk: bytes) -> None:
        seen.append(chunk)

    spec = RunSpec(argv=["/bin/sh", "-c", "echo $$"])
    run_ = PtyRunner().run(spec, on_output, None, on_started)
    await asyncio.wait_for(run_, DEADLINE_S)
    pid = seen[0]
    assert isinstance(pid, int)
    assert b"".join(c for c in seen[1:] if isinstance(c, bytes)) == b"%d\n" % pid


@pytest.mark.asyncio
async def test_large_output_arrives_complete_in_order_and_coalesced() -> None:
    expected = bytes(range(256)) * 8192  # 2 MiB, every byte value
    script = "import sys; sys.stdout.buffer.write(bytes(range(256)) * 8192)"
    result, out = await run([sys.executable, "-c", script])
    assert result.exit_code == 0
    assert len(out.data) == len(expected)
    assert out.data == expected
    assert result.output_bytes == len(expected)
    assert result.chunks == len(out.chunks)
    assert all(len(c) <= 32 * 1024 for c in out.chunks)
    # One call per pty read would be ~512 calls of 4 KiB.
    assert result.chunks < len(expected) // 4096 // 3


@pytest.mark.asyncio
async def test_slow_consumer_blocks_the_command(tmp_path: Path) -> None:
    progress = tmp_path / "progress"
    total = 4 * 1024 * 1024
    script = (
        "import os, sys\n"
        f"done = 0\nwhile done < {total}:\n"
        "    sys.stdout.buffer.write(b'x' * 4096); sys.stdout.flush()\n"
        "    done += 4096\n"
        f"    open({str(progress)!r}, 'w').write(str(done))\n"
    )
    gate = asyncio.Event()
    out = Output()

    async def on_output(chunk: bytes) -> None:
        await gate.wait()
        await out(chunk)

    def written() -> int:
        try:
            return int(progress.read_text() or 0)
        except FileNotFoundError:
            return 0

    spec = RunSpec(argv=[sys.executable, "-c", script], chunk_max=4096)
    task = asyncio.create_task(PtyRunner().run(spec, on_output))
    await wait_for(lambda: written() > 0, DEADLINE_S, what="the command wrote something")
    # The command stops making progress: it is blocked on the pty.
    last = await wait_stalled(written, task, DEADLINE_S)
    assert last < 256 * 1024, "output was buffered without bound"
    gate.set()
    result = await asyncio.wait_for(task, DEADLINE_S)
    assert result.exit_code == 0
    assert out.data == b"x" * total


@pytest.mark.asyncio
async def test_slow_output_is_flushed_promptly() -> None:
    started = time.monotonic()
    result, out = await run(["/bin/sh", "-c", "echo a; sleep 1; echo b"])
    ended = time.monotonic()
    assert out.chunks == [b"a\n", b"b\n"]
    assert result.chunks == 2
    assert out.arrived[0] - started < 0.5
    assert ended - out.arrived[0] > 0.5


@pytest.mark.asyncio
async def test_timeout_kills_the_whole_tree() -> None:
    t = token()
    sleeps = [f"1000.{t}", f"1001.{t}", f"1002.{t}"]
    script = f"sleep {sleeps[0]} & setsid sleep {sleeps[1]} & sleep {sleeps[2]}"
    result, _ = await run(["/bin/sh", "-c", script], timeout_s=1.0, kill_grace_s=2)
    assert result.killed_by == "timeout"
    assert result.exit_code is None
    assert result.signal is not None
    assert result.duration_ms >= 1000
    await no_survivors(*sleeps)


@pytest.mark.asyncio
async def test_cancel_kills_the_whole_tree() -> None:
    t = token()
    sleeps = [f"1000.{t}", f"1001.{t}", f"1002.{t}"]
    script = f"sleep {sleeps[0]} & setsid sleep {sleeps[1]} & sleep {sleeps[2]}"
    cancel = asyncio.Event()
    spec = RunSpec(argv=["/bin/sh", "-c", script], kill_grace_s=2)
    task = asyncio.create_task(PtyRunner().run(spec, Output(), cancel))
    await wait_for(lambda: len(procs_with(*sleeps)) == 3, DEADLINE_S, what="all sleeps run")
    cancel.set()
    result = await asyncio.wait_for(task, DEADLINE_S)
    assert result.killed_by == "cancel"
    assert result.signal is not None
    await no_survivors(*sleeps)


@pytest.mark.asyncio
async def test_sigterm_ignored_means_sigkill_after_grace() -> None:
    duration = f"1000.{token()}"
    cancel = asyncio.Event()
    spec = RunSpec(
        argv=["/bin/bash", "-c", f"trap '' TERM; sleep {duration}; true"],
        kill_grace_s=0.5,
    )
    task = asyncio.create_task(PtyRunner().run(spec, Output(), cancel))
    await wait_for(lambda: bool(procs_with(duration)), DEADLINE_S, what="the sleep runs")
    cancelled_at = time.monotonic()
    cancel.set()
    result = await asyncio.wait_for(task, DEADLINE_S)
    assert time.monotonic() - cancelled_at >= 0.5
    assert result.killed_by == "cancel"
    assert result.signal == signal.SIGKILL
    await no_survivors(duration)


@pytest.mark.asyncio
async def test_cwd_and_env_are_honoured(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "NEXUS_X": "42"}
    result, out = await run(
        ["/bin/sh", "-c", 'pwd -P; echo "$NEXUS_X ${HOME-unset}"'],
        cwd=str(tmp_path),
        env=env,
    )
    assert out.data == f"{tmp_path.resolve()}\n42 unset\n".encode()
    assert result.exit_code == 0


@pytest.mark.asyncio
async def test_relative_executable_is_found_in_cwd(tmp_path: Path) -> None:
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho from-script\n")
    script.chmod(0o755)
    _, out = await run(["./hello.sh"], cwd=str(tmp_path))
    assert out.data == b"from-script\n"


@pytest.mark.asyncio
async def test_missing_cwd_raises_spawn_failed(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SpawnFailed) as info:
        await run(["/bin/true"], cwd=str(missing))
    assert str(missing) in info.value.reason


@pytest.mark.asyncio
async def test_missing_executable_raises_spawn_failed() -> None:
    with pytest.raises(SpawnFailed) as info:
        await run(["no-such-command-for-nexus"])
    assert "no-such-command-for-nexus" in info.value.reason


@pytest.mark.asyncio
async def test_background_process_holding_the_pty_does_not_hang() -> None:
    duration = f"1000.{token()}"
    # The HUP trap keeps the background sleep alive after sh exits, and
    # setsid moves it out of the session: only its open pty fds remain.
    script = f"trap '' HUP; setsid sleep {duration} & echo done"
    result, out = await run(["/bin/sh", "-c", script])
    assert out.data == b"done\n"
    assert result.exit_code == 0
    await no_survivors(duration)


@pytest.mark.asyncio
async def test_failing_on_output_propagates_and_kills_the_tree() -> None:
    duration = f"1000.{token()}"

    async def on_output(chunk: bytes) -> None:
        raise RuntimeError("consumer broke")

    spec = RunSpec(argv=["/bin/sh", "-c", f"echo x; sleep {duration}; true"])
    with pytest.raises(RuntimeError, match="consumer broke"):
        await asyncio.wait_for(PtyRunner().run(spec, on_output), DEADLINE_S)
    await no_survivors(duration)


@pytest.mark.asyncio
async def test_cancelling_run_kills_the_tree() -> None:
    duration = f"1000.{token()}"
    out = Output()
    spec = RunSpec(argv=["/bin/sh", "-c", f"echo x; sleep {duration}; true"])
    task = asyncio.create_task(PtyRunner().run(spec, out))
    await asyncio.wait_for(out.first.wait(), DEADLINE_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await no_survivors(duration)


@pytest.mark.asyncio
async def test_exit_is_seen_without_a_thread_per_job(tmp_path: Path) -> None:
    """The event loop watches each child's pidfd: running jobs hold no reaper threads."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    out = Output()
    command = f"echo started; read x < {gate}; exit 3"
    running = asyncio.create_task(PtyRunner().run(RunSpec(argv=["/bin/bash", "-c", command]), out))
    await asyncio.wait_for(out.first.wait(), DEADLINE_S)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("pty-reaper")]
    await asyncio.to_thread(gate.write_text, "go\n")
    result = await asyncio.wait_for(running, DEADLINE_S)
    assert result.exit_code == 3
