"""Node-side assertions, checked by the agent right after a job's command exits:
file_exists, http_ok and command. Results go into `job.exited` as `checks`."""

from __future__ import annotations

import asyncio
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

from schemas.events import CommandTest, FileExistsTest, HttpOkTest, JobTest, TestResult

_TAIL = 200


async def run_checks(tests: Sequence[JobTest], cwd: str | None, env: Mapping[str, str]) -> list[TestResult]:
    results = []
    for test in tests:
        if isinstance(test, FileExistsTest):
            results.append(_file_exists(test, cwd))
        elif isinstance(test, HttpOkTest):
            results.append(await asyncio.to_thread(_http_ok, test))
        elif isinstance(test, CommandTest):
            results.append(await _command(test, cwd, env))
    return results


def _file_exists(test: FileExistsTest, cwd: str | None) -> TestResult:
    path = os.path.join(cwd or os.getcwd(), os.path.expanduser(test.path))
    found = os.path.exists(path)
    return TestResult(type="file_exists", passed=found, expected=f"{test.path} exists", actual="exists" if found else "missing")


def _http_ok(test: HttpOkTest) -> TestResult:
    expected = f"2xx from {test.url} within {test.timeout_s:g}s"
    try:
        with urllib.request.urlopen(test.url, timeout=test.timeout_s) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return TestResult(type="http_ok", passed=False, expected=expected, actual=f"error: {reason}")
    return TestResult(type="http_ok", passed=200 <= status < 300, expected=expected, actual=f"HTTP {status}")


async def _command(test: CommandTest, cwd: str | None, env: Mapping[str, str]) -> TestResult:
    expected = f"`{test.command}` exits 0"
    try:
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", test.command, cwd=cwd, env=dict(env),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        return TestResult(type="command", passed=False, expected=expected, actual=f"could not start: {exc}")
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), test.timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return TestResult(type="command", passed=False, expected=expected, actual=f"timed out after {test.timeout_s:g}s")
    tail = out.decode("utf-8", errors="replace")[-_TAIL:].strip()
    return TestResult(type="command", passed=proc.returncode == 0, expected=expected, actual=f"exit {proc.returncode}: {tail}")
