"""`--help` text: a docstring's paragraphs are reflowed to the terminal's width, not broken
where the source line happened to end (at 80 columns `nexus run --help` printed "124 timed"
and "out" on two lines)."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator.cli.verbs import command


def help_lines(args: list[str], width: int) -> list[str]:
    result = CliRunner().invoke(command(args), [*args, "--help"], env={"COLUMNS": str(width), "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return [line.strip() for line in result.output.splitlines()]


def test_a_paragraph_is_not_broken_where_its_source_line_ends() -> None:
    assert not any(line.endswith("124 timed") for line in help_lines(["run"], 80))


@pytest.mark.parametrize(("args", "words"), [
    (["run"], "the job's stdin is closed at once (like ssh -n). The analysis findings"),
    (["creds", "new"], "the account key that signs it. Roles: admin (everything)"),
])  # fmt: skip
def test_a_wide_terminal_gets_long_lines(args: list[str], words: str) -> None:
    assert any(words in line for line in help_lines(args, 200))


@pytest.mark.parametrize("verb", [["run"], ["submit"], ["agent"], ["orchestrator"], ["approve"], ["jobs"]])
def test_nothing_is_cut_at_80_columns(verb: list[str]) -> None:
    """The --creds default (./.nexus/creds/admin.creds) was cut to `./.nexus/creds/admin.cre…`."""
    lines = help_lines(verb, 80)
    assert not any("…" in line for line in lines), [line for line in lines if "…" in line]
    assert any("./.nexus/creds/" in line for line in lines)


def _leaves(group: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    found: list[tuple[list[str], Any]] = []
    for name, cmd in getattr(group, "commands", {}).items():
        found += _leaves(cmd, [*path, name]) if hasattr(cmd, "commands") else [([*path, name], cmd)]
    return found


def test_every_verb_takes_creds() -> None:
    """DESIGN §9: "Every CLI verb takes --creds" (`nexus creds new --creds F` said "No such option")."""
    verbs = _leaves(command([]), [])
    assert len(verbs) > 25, [v for v, _ in verbs]
    lacking = [" ".join(v) for v, cmd in verbs if not any("--creds" in p.opts for p in cmd.params)]
    assert lacking == []
