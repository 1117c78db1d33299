"""PipeRunner (`tty: false` jobs) against real pipes and real process trees (Linux)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.pipe_runner import PIPE_SIZE, PipeRunner, Stream
from agent.pty_output import PtyReader
from agent.pty_runner import RunResult, RunSpec, SpawnFailed
from tests.conftest import wait_for, wait_stalled
from tests.integration.processes import procs_with, token

DEADLINE_S = 20.0


class Output:
    """An on_output callback that records each stream's chunks in order."""

    def __init__(self) -> None:
        self.chunks: dict[Stream, list[bytes]] = {"stdout": [], "stderr": []}
        self.first = asyncio.Event()

    async def __call__(self, chunk: bytes, stream: Stream) -> None:
        self.chunks[stream].append(chunk)
        self.first.set()

    def data(self, stream: Stream) -> bytes:
        return b"".join(self.chunks[stream])


async def run(argv: list[str], **kw: Any) -> tuple[RunResult, Output]:
    out = Output()
    result = await asyncio.wait_for(PipeRunner().run(RunSpec(argv=argv, **kw), out), DEADLINE_S)
    return result, out


async def no_survivors(*needles: str) -> None:
    await wait_for(lambda: not procs_with(*needles), DEADLINE_S, what=f"{needles} are gone")


async def test_stdout_and_stderr_are_kept_apart_and_exact() -> None:
    result, out = await run(["/bin/sh", "-c", "printf 'out\\n'; printf 'err\\n' >&2; printf 'a\\nb'"])
    assert out.data("stdout") == b"out\na\nb"
    assert out.data("stderr") == b"err\n"
    assert result.exit_code == 0
    assert result.output_bytes == len(b"out\na\nb") + len(b"err\n")
    assert result.chunks == len(out.chunks["stdout"]) + len(out.chunks["stderr"])


async def test_binary_output_on_both_streams_is_byte_exact_and_in_order() -> None:
    # Every byte value, several MiB per stream, written in uneven pieces on both streams at once.
    script = (
        "import os, sys\n"
        "block = bytes(range(256)) * 1024\n"
        "for i in range(24):\n"
        "    os.write(1, block[i:] + block[:i])\n"
        "    os.write(2, block[::-1][i:])\n"
    )
    block = bytes(range(256)) * 1024
    want_out = b"".join(block[i:] + block[:i] for i in range(24))
    want_err = b"".join(block[::-1][i:] for i in range(24))
    result, out = await run([sys.executable, "-c", script])
    assert result.exit_code == 0
    assert hashlib.sha256(out.data("stdout")).hexdigest() == hashlib.sha256(want_out).hexdigest()
    assert hashlib.sha256(out.data("stderr")).hexdigest() == hashlib.sha256(want_err).hexdigest()
    assert out.data("stdout") == want_out and out.data("stderr") == want_err


async def test_the_pipes_hold_a_whole_chunk_and_reads_end_on_chunk_boundaries() -> None:
    # The command's stdout is a 1 MiB pipe (not the default 64 KiB): both sides move whole chunks.
    _, out = await run([sys.executable, "-c", "import fcntl; print(fcntl.fcntl(1, fcntl.F_GETPIPE_SZ))"])
    assert out.data("stdout") == f"{PIPE_SIZE}\n".encode()
    # Uneven writes still come out as full chunks, in order, the last one short.
    script = "import os\nfor i in range(40):\n    os.write(1, bytes([i]) * 7777)\n"
    _, out = await run([sys.executable, "-c", script], chunk_max=32 * 1024)
    assert out.data("stdout") == b"".join(bytes([i]) * 7777 for i in range(40))
    assert [len(c) for c in out.chunks["stdout"][1:-1]] == [32 * 1024] * (len(out.chunks["stdout"]) - 2)


async def test_reader_takes_any_number_of_bytes_across_and_inside_its_pieces() -> None:
    r, w = os.pipe()
    reader = PtyReader(asyncio.get_running_loop(), r, cap=1 << 20, chunk=10, read_size=4)
    try:
        reader.start()
        os.write(w, b"0123456789abcdefghij")
        await wait_for(lambda: reader.buffered == 20, what="20 bytes read")
        assert [reader.take(n) for n in (3, 8, 1, 100)] == [b"012", b"3456789a", b"b", b"cdefghij"]
        assert reader.buffered == 0
    finally:
        reader.stop()
        os.close(r)
        os.close(w)


async def test_stdin_is_closed_and_there_is_no_terminal() -> None:
    result, out = await run(["/bin/sh", "-c", "read x; echo read=$?; test -t 1 && echo tty || echo notty"])
    assert out.data("stdout") == b"read=1\nnotty\n"
    assert result.exit_code == 0


async def test_exit_code_and_signal_are_reported() -> None:
    result, _ = await run(["/bin/sh", "-c", "exit 7"])
    assert (result.exit_code, result.signal) == (7, None)
    result, _ = await run(["/bin/sh", "-c", "kill -TERM $$"])
    assert (result.exit_code, result.signal) == (None, signal.SIGTERM)


async def test_secrets_are_masked_on_both_streams_even_when_split_across_chunks() -> None:
    secret = b"hunter2-very-secret"
    # Written in two pieces with a pause between, so the secret spans two chunks.
    script = (
        "import os, time\n"
        f"s = {secret!r}\n"
        "os.write(1, b'pw=' + s[:7]); time.sleep(0.2); os.write(1, s[7:] + b'\\n')\n"
        "os.write(2, b'err ' + s + b'\\n')\n"
    )
    result, out = await run([sys.executable, "-c", script], secrets=(secret,))
    assert result.exit_code == 0
    for stream in ("stdout", "stderr"):
        assert secret not in out.data(stream)
        assert b"hunter" not in out.data(stream)
    assert out.data("stdout").startswith(b"pw=") and out.data("stderr").startswith(b"err ")


async def test_cwd_and_env_are_honoured(tmp_path: Path) -> None:
    result, out = await run(["/bin/sh", "-c", 'pwd; echo "$FOO"'], cwd=str(tmp_path), env={"PATH": os.defpath, "FOO": "bar"})
    assert out.data("stdout") == f"{tmp_path}\nbar\n".encode()
    assert result.exit_code == 0


async def test_missing_executable_and_cwd_raise_spawn_failed(tmp_path: Path) -> None:
    with pytest.raises(SpawnFailed, match="not found"):
        await run(["no-such-command-" + token()])
    with pytest.raises(SpawnFailed, match="cwd"):
        await run(["/bin/true"], cwd=str(tmp_path / "missing"))


async def test_timeout_kills_the_whole_tree() -> None:
    t = token()
    sleeps = [f"1000.{t}", f"1001.{t}", f"1002.{t}"]
    script = f"sleep {sleeps[0]} & setsid sleep {sleeps[1]} & sleep {sleeps[2]}"
    result, _ = await run(["/bin/sh", "-c", script], timeout_s=1.0, kill_grace_s=2)
    assert result.killed_by == "timeout"
    assert result.exit_code is None and result.signal is not None
    assert result.duration_ms >= 1000
    await no_survivors(*sleeps)


async def test_cancel_kills_the_whole_tree() -> None:
    t = token()
    sleeps = [f"1000.{t}", f"1001.{t}", f"1002.{t}"]
    script = f"sleep {sleeps[0]} & setsid sleep {sleeps[1]} & sleep {sleeps[2]}"
    cancel = asyncio.Event()
    task = asyncio.create_task(PipeRunner().run(RunSpec(argv=["/bin/sh", "-c", script], kill_grace_s=2), Output(), cancel))
    await wait_for(lambda: len(procs_with(*sleeps)) == 3, DEADLINE_S, what="all sleeps run")
    cancel.set()
    result = await asyncio.wait_for(task, DEADLINE_S)
    assert result.killed_by == "cancel"
    assert result.signal is not None
    await no_survivors(*sleeps)


async def test_background_process_holding_the_pipes_does_not_hang() -> None:
    duration = f"1000.{token()}"
    # It leaves the session (setsid) and ignores HUP: only its inherited pipes tie it to the job.
    result, out = await run(["/bin/sh", "-c", f"trap '' HUP; setsid sleep {duration} & echo done"])
    assert out.data("stdout") == b"done\n"
    assert result.exit_code == 0
    await no_survivors(duration)


async def test_slow_consumer_blocks_the_command(tmp_path: Path) -> None:
    progress = tmp_path / "progress"
    total = 8 * 1024 * 1024
    script = (
        "import os\n"
        f"done = 0\nwhile done < {total}:\n"
        "    os.write(1, b'x' * 4096)\n"
        "    done += 4096\n"
        f"    open({str(progress)!r}, 'w').write(str(done))\n"
    )
    gate = asyncio.Event()
    out = Output()

    async def on_output(chunk: bytes, stream: Stream) -> None:
        await gate.wait()
        await out(chunk, stream)

    def written() -> int:
        try:
            return int(progress.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    spec = RunSpec(argv=[sys.executable, "-c", script], chunk_max=4096)
    task = asyncio.create_task(PipeRunner().run(spec, on_output))
    await wait_for(lambda: written() > 0, DEADLINE_S, what="the command wrote something")
    last = await wait_stalled(written, task, DEADLINE_S)
    # A pipe holds 64 KiB (up to 1 MiB if raised), the reader 4 x chunk_max: far below what was asked.
    assert last < 2 * 1024 * 1024, "output was buffered without bound"
    gate.set()
    result = await asyncio.wait_for(task, DEADLINE_S)
    assert result.exit_code == 0
    assert out.data("stdout") == b"x" * total


async def test_failing_on_output_propagates_and_kills_the_tree() -> None:
    duration = f"1000.{token()}"

    async def on_output(chunk: bytes, stream: Stream) -> None:
        raise RuntimeError("consumer broke")

    spec = RunSpec(argv=["/bin/sh", "-c", f"echo x >&2; sleep {duration}; true"])
    with pytest.raises(RuntimeError, match="consumer broke"):
        await asyncio.wait_for(PipeRunner().run(spec, on_output), DEADLINE_S)
    await no_survivors(duration)
