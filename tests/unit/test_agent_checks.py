"""The agent's node-side checks, without processes or sockets: error texts,
the bounded output tail and the HTTP status line."""

from __future__ import annotations

from typing import Any

import pytest

from agent import checks
from agent.checks import OutputTail, describe, parse_status_line, run_checks
from schemas.values import CommandTest, ExitCodeTest, HttpOkTest, JobTest


def test_describe_names_the_exception_even_without_a_message() -> None:
    assert describe(ProcessLookupError()) == "ProcessLookupError"
    assert describe(TimeoutError()) == "TimeoutError"
    assert describe(ValueError("bad port")) == "ValueError: bad port"


async def test_a_check_that_raises_becomes_a_failed_result(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise ProcessLookupError  # what asyncio's Process.kill raised once the test had exited

    monkeypatch.setattr(checks, "_command", broken)
    tests: list[JobTest] = [CommandTest(command="true"), ExitCodeTest(expected=0), CommandTest(command="false")]
    results = await run_checks(tests, None, {})
    assert [(r.type, r.passed, r.actual) for r in results] == [("command", False, "agent error: ProcessLookupError")] * 2
    assert results[0].expected == "`true` exits 0"


async def test_a_bad_url_is_a_failed_result() -> None:
    results = await run_checks([HttpOkTest(url="ftp://example.invalid/"), HttpOkTest(url="http://")], None, {})
    assert [r.passed for r in results] == [False, False]
    assert all(r.actual.startswith("error: ValueError: not an http(s) URL") for r in results), results


async def test_the_output_tail_keeps_only_the_last_bytes() -> None:
    tail = OutputTail(keep=12)
    for chunk in (b"x" * 100_000, b"abc", b"\x1b[32mdefghij\x1b[0m\r\n"):
        await tail(chunk)
    assert len(tail._buf) == 12
    assert tail.text() == "efghij"  # ANSI escapes and CRLF gone, as people read it


async def test_the_output_tail_shows_at_most_200_characters() -> None:
    tail = OutputTail()
    await tail("é".encode() * 1000 + b"end\n")
    text = tail.text()
    assert len(text) == 200 and text.endswith("éend")


@pytest.mark.parametrize(
    ("line", "status"),
    [(b"HTTP/1.1 200 OK\r\n", 200), (b"HTTP/1.0 404 Not Found\n", 404), (b"HTTP/2 204\r\n", 204), (b"HTTP/1.1 302\r\n", 302)],
)
def test_status_lines(line: bytes, status: int) -> None:
    assert parse_status_line(line) == status


@pytest.mark.parametrize("line", [b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.1 2000 OK\r\n", b"HTTP/1.1 abc\r\n", b"HTTP/1.1 20\r\n", b"<html>\n"])
def test_what_is_not_a_status_line(line: bytes) -> None:
    with pytest.raises(ValueError, match="not an HTTP status line"):
        parse_status_line(line)


def test_no_answer_at_all() -> None:
    with pytest.raises(EOFError):
        parse_status_line(b"")
