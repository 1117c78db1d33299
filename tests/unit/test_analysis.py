"""Risk analysis: the labelled corpus, its precision/recall, and robustness on arbitrary text."""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.analysis import Analysis, analyze
from tests.unit.analysis_corpus import CORPUS, Case

_RANK = {None: 0, "info": 1, "warning": 2, "critical": 3}


def _flagged(severity: str | None) -> bool:
    return _RANK[severity] >= _RANK["warning"]


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.command[:60], marks=pytest.mark.xfail(strict=True, reason="known gap")) if c.gap else c for c in CORPUS],
)
def test_corpus_case(case: Case) -> None:
    result = analyze(case.command, case.tool)
    assert result.severity == case.expected, [f.message for f in result.findings]


def test_corpus_precision_recall(record_property: Callable[[str, object], None]) -> None:
    tp = fp = fn = exact = 0
    for case in CORPUS:
        got = analyze(case.command, case.tool).severity
        exact += got == case.expected
        if _flagged(got) and _flagged(case.expected):
            tp += 1
        elif _flagged(got):
            fp += 1
        elif _flagged(case.expected):
            fn += 1
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    accuracy = exact / len(CORPUS)
    for name, value in [("corpus_size", len(CORPUS)), ("precision", precision), ("recall", recall), ("exact", accuracy)]:
        record_property(name, value)
    print(
        f"\nanalysis corpus: {len(CORPUS)} commands, flagged = warning or critical: "
        f"precision {precision:.3f} ({tp}/{tp + fp}), recall {recall:.3f} ({tp}/{tp + fn}), "
        f"exact severity {accuracy:.3f} ({exact}/{len(CORPUS)})"
    )
    assert len(CORPUS) >= 70
    assert precision >= 0.95
    assert recall >= 0.95
    assert accuracy >= 0.9


def test_corpus_covers_every_severity_and_tricky_shapes() -> None:
    labels = {c.expected for c in CORPUS}
    assert labels == {None, "info", "warning", "critical"}
    assert sum(c.expected is None for c in CORPUS) >= 30
    assert sum(_flagged(c.expected) for c in CORPUS) >= 30


# --- the shape of a result -----------------------------------------------------------------


def test_finding_names_the_simple_command_and_the_path() -> None:
    result = analyze("cd /srv && sudo rm -rf /var/www/* && echo done")
    assert result.severity == "critical"
    assert result.parsed
    [finding] = result.findings
    assert finding.type == "destructive_command"
    assert finding.command == "sudo rm -rf /var/www/*"
    assert "'rm -rf' on '/var/www/*'" in finding.message
    assert "requires approval" in finding.message
    assert any("/var/www/tmp/*" in s for s in result.suggestions)


def test_suggestions_follow_findings() -> None:
    assert analyze("git push --force origin feature/x").suggestions == ["Use --force-with-lease instead of --force"]
    assert any("inspect it" in s for s in analyze("curl -sL https://x.example | bash").suggestions)
    assert any("WHERE" in s for s in analyze("psql -c 'DELETE FROM users'").suggestions)
    assert any("--dry-run" in s for s in analyze("kubectl delete pod web-1").suggestions)
    assert analyze("ls -la").suggestions == []


def test_result_encodes_to_the_validate_warning_shape() -> None:
    result = analyze("mkfs.ext4 /dev/sdb1")
    data = msgspec.json.decode(msgspec.json.encode(result))
    assert set(data) == {"findings", "suggestions", "parsed"}
    assert data["findings"][0] == {
        "type": "device_write",
        "severity": "critical",
        "message": "Command 'mkfs.ext4' erases block device '/dev/sdb1' - requires approval",
        "command": "mkfs.ext4 /dev/sdb1",
    }


def test_unparseable_input_is_a_warning_not_a_crash() -> None:
    result = analyze("echo 'unbalanced")
    assert not result.parsed
    assert [(f.type, f.severity) for f in result.findings] == [("unparseable", "warning")]


def test_text_fallback_still_finds_the_fork_bomb_shape() -> None:
    result = analyze(":(){ :|:& };: 'x")  # the stray quote defeats the parser
    assert not result.parsed
    assert "fork_bomb" in {f.type for f in result.findings}


def test_duplicate_findings_are_reported_once() -> None:
    result = analyze("rm -rf / ; rm -rf /")
    assert len(result.findings) == 1


def test_nesting_is_capped() -> None:
    command = "rm -rf /"
    for _ in range(8):
        command = "eval " + command
    result = analyze(command)
    assert result.severity == "warning"
    assert any("nests shells" in f.message for f in result.findings)


# --- robustness -----------------------------------------------------------------------------

_SHELLISH = st.lists(
    st.sampled_from(
        [
            "rm",
            " -rf ",
            "/",
            "'",
            '"',
            "$(",
            "`",
            ")",
            "(",
            "|",
            "&&",
            ";",
            "&",
            "<<",
            "EOF",
            "\n",
            "{",
            "}",
            ":",
            " ",
            "\\",
            "#",
            "sudo ",
            "bash -c ",
            "xargs ",
            "find / -delete",
            "$((",
            "))",
            "[[",
            "]]",
            "case ",
            "esac",
            "> /dev/sda",
            "psql -c ",
            "DROP TABLE x",
            "\x00",
            "$'",
            "${x:-",
            "<(",
            "eval ",
            "ssh h ",
        ]
    ),
    max_size=40,
).map("".join)


def _check(result: Analysis) -> None:
    assert isinstance(result, Analysis)
    assert result.severity in _RANK
    assert all(f.severity in {"info", "warning", "critical"} for f in result.findings)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text: str) -> None:
    _check(analyze(text))


@settings(max_examples=300, deadline=None)
@given(_SHELLISH)
def test_shell_like_fragments_never_raise(text: str) -> None:
    _check(analyze(text))
    _check(analyze(text, tool="psql"))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([c for c in CORPUS if c.tool == "bash" and "'" not in c.command and "\n" not in c.command]))
def test_bash_c_wrapping_keeps_the_severity(case: Case) -> None:
    assert analyze(f"bash -c '{case.command}'").severity == analyze(case.command).severity


_BIG_INPUTS = {
    "many commands": "echo hello world; rm -rf /tmp/x && ls | grep y\n" * 2100,
    "one long word": "a" * 100_000,
    "deep substitutions": "$(" * 25_000 + ")" * 25_000,
    "deep subshells": "(" * 50_000 + ")" * 50_000,
    "unbalanced quotes": "echo 'x \" " * 10_000,
    "one comment": "#" + "rm -rf / " * 11_000,
    "nested quotes": "bash -c 'eval \"" * 6_000,
    "binary": "".join(chr(i % 256) for i in range(100_000)),
}


# Inputs just inside the parse budget, in the shapes bashlex is slowest on.
_SLOW_SHAPES = {
    "backticks": "echo " + "`a`" * 2600,
    "backticks in bash -c": "bash -c 'echo " + "`a`" * 2600 + "'",
    "long pipeline": "a | " * 1900 + "b",
    "parameter defaults": "echo " + "${a:-$(b)}" * 700,
}


@pytest.mark.parametrize("text", list(_BIG_INPUTS.values()), ids=list(_BIG_INPUTS))
def test_100kb_input_is_analyzed_well_under_a_second(text: str) -> None:
    assert len(text) >= 60_000
    start = time.perf_counter()
    _check(analyze(text))
    assert time.perf_counter() - start < 0.8


@pytest.mark.parametrize("text", list(_SLOW_SHAPES.values()), ids=list(_SLOW_SHAPES))
def test_parser_worst_cases_stay_under_a_second(text: str) -> None:
    start = time.perf_counter()
    _check(analyze(text))
    assert time.perf_counter() - start < 0.8


def test_unterminated_parameter_expansion_does_not_hang_bashlex() -> None:
    assert analyze("'${'x").severity == "warning"  # bashlex 0.18 loops forever here unguarded
