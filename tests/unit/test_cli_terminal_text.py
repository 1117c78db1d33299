"""What the CLI shows people of the log (orchestrator.cli.terminal_text): control characters as
visible escapes, in tables and detail views alike; text that only looks like rich markup as written."""

from __future__ import annotations

import pytest
from rich.text import Text

from orchestrator.cli.common import fmt, print_table
from orchestrator.cli.terminal_text import printable, printable_text
from orchestrator.client import Rows

FORGED = "rm -rf /srv/x #\r\x1b[2Kcommand       echo hello"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("echo \x1b[2J\x1b]0;PWNED\x07 hidden", "echo \\x1b[2J\\x1b]0;PWNED\\x07 hidden"),
        (FORGED, "rm -rf /srv/x #\\r\\x1b[2Kcommand       echo hello"),
        ("nul\x00 bs\x08 del\x7f", "nul\\x00 bs\\x08 del\\x7f"),
        ("c1 csi\x9b2J nel\x85", "c1 csi\\x9b2J nel\\x85"),  # one-character CSI on some terminals
        ("admin\u202e\u2066txt.sh", "admin\\u202e\\u2066txt.sh"),  # bidi controls reorder what is read
        ("two\nlines\tand a tab", "two\nlines\tand a tab"),  # a multi-line command, laid out in its cell
        ("ünï 中文 😀 \\x1b [bold]", "ünï 中文 😀 \\x1b [bold]"),  # printable text is left alone
    ],
)
def test_control_characters_are_shown_as_escapes(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert fmt(raw) == shown


def test_on_one_line_newlines_and_tabs_are_shown_too() -> None:
    """A detail view's value or a status line: a newline could start a line passing for another field."""
    assert printable("a\nstatus  succeeded\tb", one_line=True) == "a\\nstatus  succeeded\\tb"
    assert fmt("a\nb", one_line=True) == "a\\nb"


def test_a_styled_line_keeps_its_styles() -> None:
    line = Text.assemble(("analysis: ", "bold red"), "rm \x1b[8m", ("x\ny", "cyan"))
    shown = printable_text(line, one_line=True)
    assert shown.plain == "analysis: rm \\x1b[8mx\\ny"
    assert [(shown.plain[s.start : s.end], s.style) for s in shown.spans] == [("analysis: ", "bold red"), ("x", "cyan"), ("y", "cyan")]
    plain = Text("nothing to show")
    assert printable_text(plain) is plain


def test_a_table_shows_the_escapes_and_no_markup(capsys: pytest.CaptureFixture[str]) -> None:
    """`nexus jobs`, `history`, `sql`, `nodes`... all print through print_table."""
    print_table(Rows(["job_id", "command"], [["j1", FORGED], ["j2", "echo [/bold] [conceal]secret[/conceal]"]]))
    written = capsys.readouterr().out
    assert "\x1b" not in written and "\r" not in written
    assert "\\r\\x1b[2Kcommand" in written
    assert "echo [/bold] [conceal]secret[/conceal]" in written  # before: MarkupError, or text hidden
