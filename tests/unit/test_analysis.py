"""Risk analysis: the labelled corpus (tuned and held-out parts), the shape of results, and robustness."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.analysis import Analysis, analyze, normalised_commands
from tests.unit.analysis_corpus import CORPUS, HELDOUT, TUNED, Case

_RANK = {None: 0, "info": 1, "warning": 2, "critical": 3}
# The holding severity: what is held for approval on production.
_HOLDS = "critical"


def _score(cases: list[Case]) -> tuple[float, float, int, int]:
    """Recall on destructive commands and false-alarm rate on the others, at the holding severity."""
    tp = fn = fp = tn = 0
    for case in cases:
        held = analyze(case.command, case.tool).severity == _HOLDS
        if case.expected == _HOLDS:
            tp, fn = tp + held, fn + (not held)
        else:
            fp, tn = fp + held, tn + (not held)
    return tp / (tp + fn), fp / (fp + tn), tp + fn, fp + tn


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c.where, marks=pytest.mark.xfail(strict=True, reason="known gap")) if c.gap else pytest.param(c, id=c.where)
        for c in TUNED
    ],
)
def test_tuned_case(case: Case) -> None:
    result = analyze(case.command, case.tool)
    assert result.severity == case.expected, [f.message for f in result.findings]


@pytest.mark.parametrize("part", [TUNED, HELDOUT], ids=["tuned", "heldout"])
def test_corpus_recall_and_false_alarms(part: list[Case], record_property: Callable[[str, object], None]) -> None:
    recall, false_alarms, destructive, benign = _score(part)
    record_property("recall", recall)
    record_property("false_alarms", false_alarms)
    print(
        f"\n{part[0].part}: {len(part)} commands, recall {recall:.3f} of {destructive} destructive, "
        f"false alarms {false_alarms:.3f} of {benign} others"
    )
    assert recall >= 0.95
    assert false_alarms <= 0.02


def test_corpus_is_broad() -> None:
    assert len(CORPUS) >= 1500
    assert len(HELDOUT) >= 400
    assert {c.domain for c in CORPUS} >= {
        "filesystem",
        "disks",
        "vcs",
        "containers",
        "kubernetes",
        "cloud",
        "iac",
        "databases",
        "vms",
        "network",
        "users",
        "power",
        "code",
    }
    tools = {c.command.split()[0] for c in CORPUS}
    assert len(tools) >= 150
    assert sum(c.expected is None for c in CORPUS) >= 600
    assert sum(c.expected == "critical" for c in CORPUS) >= 600
    assert all(c.source for c in CORPUS)


# --- false alarms the issue named ------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        "sgdisk --verify /dev/sda",
        "fdisk /dev/sda",
        "wipefs /dev/sdb",
        "reboot --wtmp-only",
        "systemctl halt --when cancel",
        "cat <<EOF\nrm -rf /\nEOF",
    ],
)
def test_read_only_and_data_forms_are_not_held(command: str) -> None:
    assert _RANK[analyze(command).severity] <= _RANK["info"]


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


def test_suggestions_name_no_path_the_command_did_not() -> None:
    """A suggestion narrows, previews or backs up what the command names; it invents no target."""
    result = analyze("rm -rf /var/www/*")
    assert result.suggestions == [
        "List what would be removed first: ls -la /var/www",
        "Delete only the entries you mean inside /var/www rather than all of them",
    ]
    assert not any("/tmp" in s for s in result.suggestions)


def test_suggestions_follow_findings() -> None:
    assert any("--force-with-lease" in s for s in analyze("git push --force origin feature/x").suggestions)
    assert any("git clean -ndx" in s for s in analyze("git clean -fdx").suggestions)
    assert any("--dry-run" in s for s in analyze("rsync -a --delete dist/ /var/www/site/").suggestions)
    assert any("inspect it" in s for s in analyze("curl -sL https://x.example | bash").suggestions)
    assert any("WHERE" in s for s in analyze("psql -c 'DELETE FROM users'").suggestions)
    assert any("--dry-run" in s for s in analyze("kubectl delete deploy web").suggestions)
    assert any("--dryrun" in s for s in analyze("aws s3 rm s3://b --recursive").suggestions)
    assert any("plan -destroy" in s for s in analyze("terraform destroy").suggestions)
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


def test_working_directory_makes_relative_paths_absolute() -> None:
    assert analyze("rm -rf *", working_dir="/").severity == "critical"
    assert analyze("rm -rf *", working_dir="/tmp/job-1").severity == "info"
    assert analyze("rm -rf nginx", working_dir="/etc").severity == "critical"
    assert analyze("rm -rf *").severity == "warning"


def test_interpreter_tool_reads_the_command_as_code() -> None:
    assert analyze("import shutil; shutil.rmtree('/etc')", tool="python3").severity == "critical"
    assert analyze("print('hello')", tool="python3").severity is None


def test_normalised_commands_remove_quoting_and_wrappers() -> None:
    assert "shutdown -h now" in normalised_commands('shutdow""n -h now')
    assert "rm -rf /x" in normalised_commands("sudo bash -c 'rm -rf /x'")
    assert "reboot" in normalised_commands("echo cmVib290 | base64 -d | sh")


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


def test_nesting_is_capped_and_fails_closed() -> None:
    """Issue 11: what lies beyond the depth cap is unknown, so it holds like a destructive command."""
    command = "echo hello"
    for _ in range(8):
        command = "eval " + command
    result = analyze(command)
    assert result.severity == "critical"
    assert any("nests code" in f.message and f.message.endswith("requires approval") for f in result.findings)


@pytest.mark.parametrize(
    ("command", "severity"),
    [
        ("$CMD", "critical"),
        ('"$@"', "critical"),
        ("sudo ${RUN} /srv", "critical"),
        ('source "$SETUP"', "critical"),
        ("bash $SCRIPT", "critical"),
        ("$(get_command) --now", "critical"),
        ("$HOME/bin/report", "info"),
        ("$(command -v python3) -V", "info"),
        ("echo $HOME", None),
        ('rm -f "$LOG_DIR/app.log"', None),
    ],
)
def test_a_command_name_known_only_at_run_time_fails_closed(command: str, severity: str | None) -> None:
    result = analyze(command)
    assert result.severity == severity, result.findings
    if severity == "critical":
        assert any(f.type == "unresolved_command" and "requires approval" in f.message for f in result.findings)


def test_printf_q_is_read_as_the_shell_reads_it() -> None:
    assert analyze("eval \"$(printf '%q ' rm -rf /)\"").severity == "critical"
    assert analyze("bash -c \"$(printf 'bash -c %q' 'rm -rf /srv')\"").severity == "critical"
    assert analyze("printf '%q\\n' hello world").severity is None


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
@given(st.sampled_from([c for c in TUNED if c.tool == "bash" and "'" not in c.command and "\n" not in c.command]))
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
def test_100kb_input_is_analyzed(text: str) -> None:
    # Speed is bench/analysis.py's (worst cases included); here: a verdict, no recursion error, no hang.
    assert len(text) >= 60_000
    _check(analyze(text))


@pytest.mark.parametrize("text", list(_SLOW_SHAPES.values()), ids=list(_SLOW_SHAPES))
def test_parser_worst_cases_get_a_verdict(text: str) -> None:
    _check(analyze(text))


def test_unterminated_parameter_expansion_does_not_hang_bashlex() -> None:
    assert analyze("'${'x").severity == "warning"  # bashlex 0.18 loops forever here unguarded


def test_a_failure_inside_the_analysis_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.core import analysis, walker

    def broken(self: object, command: str, tool: str) -> None:
        raise RecursionError

    monkeypatch.setattr(walker.Walk, "start", broken)
    try:
        result = analyze("ls")
    finally:
        analysis._analyze.cache_clear()  # the failure must not stay cached for later callers of analyze("ls")
    assert result.severity == "critical"
    assert [f.type for f in result.findings] == ["analysis_error"]


def test_python_that_only_warns_when_parsed_is_still_read() -> None:
    assert analyze("python3 -c \"x = 1if True else 2; import shutil; shutil.rmtree('/etc')\"").severity == "critical"


@pytest.mark.parametrize(
    ("command", "rated"),
    [
        ("sh -c 'rm -rf \"$1\"' _ /etc", "critical"),
        ("sh -c 'rm -rf \"$@\"' sh build dist", "info"),
        ("find /home -mindepth 1 -maxdepth 1 -exec sh -c 'rm -rf \"$0\"' {} \\;", "critical"),
        ("python3 - <<'PY'\nimport shutil\nfor d in ['/srv/a', '/srv/b']:\n    shutil.rmtree(d)\nPY", "critical"),
        ("node -e \"require('fs').rmSync(process.env.HOME, {recursive: true})\"", "critical"),
    ],
)
def test_arguments_given_to_inline_code_are_followed(command: str, rated: str) -> None:
    assert analyze(command).severity == rated


def test_a_repeated_command_gets_an_answer_of_its_own() -> None:
    """Analyses are cached by command: a caller changing its answer must not change the next one's."""
    first = analyze("rm -rf /")
    first.findings.clear()
    first.suggestions.append("nothing to see")

    again = analyze("rm -rf /")
    assert again.findings and again.findings[0].severity == "critical"
    assert "nothing to see" not in again.suggestions
