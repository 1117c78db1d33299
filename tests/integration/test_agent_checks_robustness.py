"""What the agent runs besides the job's command, under hostile conditions:
node-side `command` and `http_ok` tests (process trees, timeouts, cancel,
huge or endless output, slow servers) and the job's stdin. Real processes,
real PTYs, real sockets (Linux)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.checks import run_checks
from agent.pty_runner import PtyRunner, RunResult, RunSpec
from orchestrator.client import new_job_id
from schemas.events import JobRequested
from schemas.values import CommandTest, HttpOkTest, TestResult
from tests.conftest import Stack, wait_for
from tests.integration.processes import procs_with, token

DEADLINE_S = 10.0
ENV = dict(os.environ)
MiB = 1024 * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


async def peak_rss_growth(action: Awaitable[Any]) -> tuple[Any, int]:
    """Run ``action``; return its result and how far this process's RSS peaked above where it was."""
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) to the current RSS
    result = await action
    return result, (_status_kib("VmHWM") - before) * 1024


async def check(*tests: Any, cancel: asyncio.Event | None = None) -> list[TestResult]:
    return await asyncio.wait_for(run_checks(list(tests), None, ENV, cancel, kill_grace_s=0.5), DEADLINE_S)


# ------------------------------------------------------------ command tests: process tree, timeout, cancel


async def test_command_test_timeout_kills_its_whole_tree() -> None:
    t = token()
    sleeps = [f"98.{t}", f"99.{t}"]
    [result] = await check(CommandTest(command=f"sleep {sleeps[0]} & sleep {sleeps[1]}", timeout_s=1))
    assert (result.passed, result.actual) == (False, "timed out after 1s")
    assert procs_with(*sleeps) == [], "a process of the timed-out test survived"


async def test_cancel_stops_a_running_command_test_and_skips_the_rest() -> None:
    t = token()
    sleeps = [f"98.{t}", f"99.{t}", f"97.{t}"]
    cancel = asyncio.Event()
    tests = [CommandTest(command=f"sleep {sleeps[0]} & setsid sleep {sleeps[1]} & sleep {sleeps[2]}"), CommandTest(command="true")]
    task = asyncio.create_task(check(*tests, cancel=cancel))
    await wait_for(lambda: len(procs_with(*sleeps)) == 3, DEADLINE_S, what="the test's three sleeps run")
    cancel.set()
    first, second = await task
    assert (first.passed, first.actual) == (False, "cancelled")
    assert second.passed is False and second.actual == "not checked: the job was cancelled"
    assert procs_with(*sleeps) == [], "a process of the cancelled test survived"


async def test_a_passing_command_test_leaves_no_process_behind() -> None:
    t = token()
    detached, nohup = f"98.{t}", f"99.{t}"
    # One leaves the session but keeps the terminal; one ignores SIGHUP and stays in the group.
    command = f"(trap '' HUP; setsid sleep {detached} &); nohup sleep {nohup} >/dev/null 2>&1 & echo ok"
    [result] = await check(CommandTest(command=command))
    assert (result.passed, result.actual) == (True, "exit 0: ok")
    assert procs_with(detached, nohup) == [], "a process of the finished test survived"


async def test_command_test_output_is_streamed_with_bounded_memory() -> None:
    command = "head -c 200000000 /dev/zero; echo; echo last-line"
    [result], growth = await peak_rss_growth(check(CommandTest(command=command)))
    assert result.passed, result.actual
    assert result.actual.endswith("last-line") and len(result.actual) < 300
    assert growth < 100 * MiB, f"RSS grew by {growth / MiB:.0f} MiB for 200 MB of test output"


async def test_a_zero_timeout_gives_a_failed_result_never_an_exception() -> None:
    # The schemas refuse timeout_s <= 0 on the wire; constructed in-process it must still not break the agent.
    for _ in range(10):
        [result] = await check(CommandTest(command="true", timeout_s=0))
        assert (result.passed, result.actual) == (False, "timed out after 0s")


# ------------------------------------------------------------ the same through a real agent


async def test_a_hanging_command_test_fails_the_job_on_time(stack: Stack) -> None:
    t = token()
    sleeps = [f"98.{t}", f"99.{t}"]
    job_id = new_job_id()
    test = CommandTest(command=f"sleep {sleeps[0]} & sleep {sleeps[1]}", timeout_s=1)
    await stack.client.submit(job_id, JobRequested(command="true", tests=[test]))
    row = await stack.wait_job(job_id, timeout=DEADLINE_S)
    assert row["status"] == "failed" and "timed out after 1s" in row["reason"], row
    assert procs_with(*sleeps) == []


async def test_cancel_during_a_command_test_cancels_the_job(stack: Stack) -> None:
    duration = f"99.{token()}"
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command="true", tests=[CommandTest(command=f"sleep {duration}")]))
    await wait_for(lambda: procs_with(duration), DEADLINE_S, what="the command test runs")
    await stack.client.cancel(job_id, by="tester", reason="test")
    row = await stack.wait_job(job_id, timeout=DEADLINE_S)
    assert row["status"] == "cancelled", row
    assert procs_with(duration) == []


async def test_an_agent_error_names_the_exception(stack: Stack) -> None:
    class BrokenRunner(PtyRunner):
        async def run(self, *args: Any, **kwargs: Any) -> RunResult:
            raise ProcessLookupError  # str() of it is empty

    stack.agents["node-1"][0].runner = BrokenRunner()
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command="true"))
    row = await stack.wait_job(job_id, timeout=DEADLINE_S)
    assert (row["status"], row["reason"]) == ("failed", "agent error: ProcessLookupError")


# ------------------------------------------------------------ stdin: closed at once


async def run_pty(script: str) -> tuple[RunResult, bytes]:
    out = bytearray()

    async def on_output(chunk: bytes) -> None:
        out.extend(chunk)

    # The timeout only decides the test quickly if stdin were left open.
    spec = RunSpec(argv=["/bin/bash", "-c", script], timeout_s=5)
    result = await asyncio.wait_for(PtyRunner().run(spec, on_output), DEADLINE_S)
    return result, bytes(out)


async def test_a_job_reading_stdin_gets_eof_at_once() -> None:
    result, out = await run_pty('read y; echo "got:$y"')
    assert (result.killed_by, result.exit_code, out) == (None, 0, b"got:\n")


async def test_cat_in_a_job_ends_at_once() -> None:
    result, out = await run_pty("cat")
    assert (result.killed_by, result.exit_code, out) == (None, 0, b"")


async def test_a_command_test_reading_stdin_ends_at_once() -> None:
    [result] = await check(CommandTest(command="cat", timeout_s=5))
    assert (result.passed, result.actual) == (True, "exit 0")


# ------------------------------------------------------------ http_ok: slow and huge responses

Handler = Callable[[str, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def http_server(handler: Handler) -> AsyncIterator[str]:
    """A raw HTTP server on a random port; ``handler(path, writer)`` answers each request."""
    tasks: set[asyncio.Task[Any]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            request = await reader.readline()
            while (await reader.readline()).strip():
                pass
            await handler(request.split()[1].decode(), writer)
        except ConnectionError:
            pass  # the checker hung up, as it should once it has the status
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def endless(writer: asyncio.StreamWriter, piece: bytes, pause_s: float = 0) -> None:
    while True:
        writer.write(piece)
        await writer.drain()
        if pause_s:
            await asyncio.sleep(pause_s)  # the slowness under test, not a wait for a condition


async def test_http_ok_holds_its_timeout_against_a_trickling_server() -> None:
    async def trickle(path: str, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 ")
        await endless(writer, b"O", pause_s=0.05)  # each byte well within any per-read timeout

    async with http_server(trickle) as url:
        [result] = await check(HttpOkTest(url=url, timeout_s=1))  # a per-read timeout would trickle on past DEADLINE_S
    assert (result.passed, result.actual) == (False, "error: no complete answer within 1s")


async def test_http_ok_needs_only_the_status_line() -> None:
    async def answer(path: str, writer: asyncio.StreamWriter) -> None:
        if path == "/endless-headers":
            writer.write(b"HTTP/1.1 204 No Content\r\n")
            await endless(writer, b"X-Slow: 1\r\n", pause_s=0.05)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n")
            await endless(writer, bytes(64 * 1024))

    async with http_server(answer) as url:
        results, growth = await peak_rss_growth(check(HttpOkTest(url=f"{url}/endless-headers"), HttpOkTest(url=f"{url}/huge")))
    assert [(r.passed, r.actual) for r in results] == [(True, "HTTP 204"), (True, "HTTP 200")]
    assert growth < 100 * MiB


async def test_http_ok_follows_a_redirect_without_reading_its_body() -> None:
    body_size = 256 * MiB

    async def answer(path: str, writer: asyncio.StreamWriter) -> None:
        if path == "/ok":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            return
        writer.write(b"HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: %d\r\n\r\n" % body_size)
        piece = bytes(MiB)
        for _ in range(body_size // MiB):
            writer.write(piece)
            await writer.drain()

    async with http_server(answer) as url:
        [result], growth = await peak_rss_growth(check(HttpOkTest(url=f"{url}/moved", timeout_s=5)))
    assert (result.passed, result.actual) == (True, "HTTP 200")
    assert growth < 100 * MiB, f"RSS grew by {growth / MiB:.0f} MiB following one redirect"


async def test_cancel_stops_an_http_check_at_once() -> None:
    asked = asyncio.Event()

    async def never_answer(path: str, writer: asyncio.StreamWriter) -> None:
        asked.set()
        await endless(writer, b"", pause_s=0.05)

    async with http_server(never_answer) as url:
        cancel = asyncio.Event()
        task = asyncio.create_task(check(HttpOkTest(url=url, timeout_s=60), CommandTest(command="true"), cancel=cancel))
        await wait_for(asked.is_set, DEADLINE_S, what="the check asked the server")
        cancel.set()
        results = await task
    assert [(r.passed, r.actual) for r in results] == [(False, "cancelled"), (False, "not checked: the job was cancelled")]


async def test_results_stay_small_whatever_the_test() -> None:
    command = "true # " + "x" * 60_000
    [result] = await check(CommandTest(command=command, timeout_s=5))
    assert result.passed and len(result.expected) < 250 and result.expected.endswith("…` exits 0")
