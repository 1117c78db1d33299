"""`nexus run`'s status lines (orchestrator.cli.follow.Say): where rich would print a plain line
as it is, Say writes it itself, byte for byte as rich would, without importing rich; either way
control characters (a line may quote the log) are shown as escapes."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.text import Text

from orchestrator.cli.follow import STYLE_FORCING, Say
from orchestrator.cli.terminal_text import printable

LINES = [
    "job j-1 submitted", "a\tb\tc", "x\n\ty\tz", "x\r\ny", "bell\x07bs\x08vt\x0bff\x0ccr\rend", "esc\x1b[31mred\x1b[0m",
    "ünï 中文 😀", "trail   ", "", "a" * 300, "[bold]markup[/bold] :smile:", "nul\x00del\x7fc1\x85",
]  # fmt: skip


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def _as_rich_prints(lines: list[str]) -> str:
    out = _Pipe()
    console = Console(file=out, soft_wrap=True)
    for line in lines:
        console.print(Text.assemble(("nexus: ", "dim"), printable(line, one_line=True)), highlight=False)
    return out.getvalue()


@pytest.fixture
def unforced(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in STYLE_FORCING:
        monkeypatch.delenv(name, raising=False)


def test_plain_lines_to_a_pipe_are_written_as_rich_writes_them(unforced: None, capsys: pytest.CaptureFixture[str]) -> None:
    say = Say()
    assert say.plain
    for line in LINES:
        say(line)
    assert capsys.readouterr().err == _as_rich_prints(LINES)


def test_no_control_character_of_a_line_reaches_the_terminal(unforced: None, capsys: pytest.CaptureFixture[str]) -> None:
    say = Say()
    for line in LINES:
        say(line)  # written by Say
        say(Text.assemble(("analysis: ", "bold"), line))  # a styled line: through rich
    written = capsys.readouterr().err
    assert "\x1b" not in written and "\r" not in written and "\x00" not in written and "\x85" not in written
    assert "esc\\x1b[31mred\\x1b[0m" in written
    assert written.count("\n") == 2 * len(LINES)  # one line each: a newline in a line is shown as \n


@pytest.mark.parametrize("name", STYLE_FORCING)
def test_what_may_make_rich_style_a_pipe_leaves_the_lines_to_rich(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "1")
    assert not Say().plain


def test_quiet_says_nothing(unforced: None, capsys: pytest.CaptureFixture[str]) -> None:
    Say(enabled=False)("job j-1 submitted")
    assert capsys.readouterr().err == ""
