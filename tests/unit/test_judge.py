"""Phase 1's one verdict (issue 11 item 5): `core.judge.judge`, and that nothing else reaches the analysis or the approval rule.

The orchestrator, `nexus validate` and `POST /api/v1/jobs/validate` all call `judge`; the
first tests prove it from the source (an ast walk), so a fourth copy of the rule cannot
creep back in. The rest pin what is analysed: the argv the agent really runs, test commands,
a step's health check and rollback, the job's env; and which messages claim approval.
"""

from __future__ import annotations

import ast

import pytest

from orchestrator.core.admission import Candidate, Companion, Judgement, Submission
from orchestrator.core.judge import judge
from orchestrator.core.policy import Policy, Rule
from schemas.values import CommandTest, ExitCodeTest, OutputContainsTest
from tests.unit.test_architecture import imports, sources

FLEET = {
    "web-1": Candidate(labels={"env": "prod", "role": "web"}, tools=["bash", "psql"], live=True),
    "dev-1": Candidate(labels={"env": "dev", "role": "web"}, tools=["bash", "psql"], live=True),
    "old-1": Candidate(labels={"env": "prod", "role": "db"}, tools=["bash"], live=False),
}
PROD_ONLY = Policy(approval_severity_anywhere="never")
ENTRY_POINTS = ("orchestrator.service", "orchestrator.cli.review", "orchestrator.api.jobs")


def verdict(command: str, policy: Policy = PROD_ONLY, **kw: object) -> Judgement:
    kw.setdefault("nodes", ["web-1"])
    return judge(Submission(command=command, user="ann", **kw), policy, FLEET)  # type: ignore[arg-type]


# ---------------------------------------------------------------- one path


def _calls(module: str) -> set[str]:
    """Every function or method name `module` calls."""
    tree = ast.parse(sources()[module].read_text())
    return {
        n.func.attr if isinstance(n.func, ast.Attribute) else n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute | ast.Name)
    }


def test_only_the_judge_reaches_the_analysis_and_the_approval_rule() -> None:
    """Fails when any module (one of the three callers above all) analyses a command, applies
    the deny/allow or approval rule, or checks who may submit, other than through `judge`."""
    own = {"orchestrator.core.judge"}
    allowed = {
        "orchestrator.core.analysis": own | {"orchestrator.core.policy"},  # policy: normalised for its rules
        "orchestrator.core.walker": {"orchestrator.core.analysis"},
    }
    for module in sources():
        if not module.startswith("orchestrator."):
            continue
        for target, who in allowed.items():
            if target in imports(module):
                assert module in who, f"{module} imports {target}: phase 1 must go through orchestrator.core.judge"
        if module in own | {"orchestrator.core.policy", "orchestrator.core.analysis"}:
            continue
        rules = _calls(module) & {"analyze", "admit", "needs_approval", "denial", "may_submit", "normalised_commands", "normalised"}
        assert not rules, f"{module} calls {sorted(rules)}: only orchestrator.core.judge may"


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_the_orchestrator_the_cli_and_the_api_each_call_the_judge(module: str) -> None:
    assert "orchestrator.core.judge" in imports(module)
    assert "judge" in _calls(module)


# ---------------------------------------------------------------- where it runs


def test_selectors_that_can_only_reach_production_need_approval_without_a_node_named() -> None:
    held = verdict("rm -rf /", nodes=[], labels={"env": "prod"})
    assert held.production and held.approval_needed and held.denied is None and held.unplaceable is None
    assert held.approval_reason is not None and held.approval_reason.startswith("critical command on a production node needs approval")


def test_a_named_node_counts_and_no_live_match_falls_back_to_the_selectors() -> None:
    assert not verdict("rm -rf /", nodes=["dev-1"]).production
    assert verdict("rm -rf /", nodes=["dev-1"], labels={"env": "prod"}).production  # a production selector still counts
    assert verdict("rm -rf /", nodes=[], labels={"role": "db"}).production is False  # the only db node is not live
    ghost = verdict("echo hi", nodes=["ghost"])
    assert (ghost.unplaceable, ghost.valid) == ("unknown_node", False)
    assert [f.type for f in ghost.node_findings] == ["unknown_node"]
    offline = verdict("echo hi", nodes=["old-1"])
    assert offline.valid and [f.type for f in offline.node_findings] == ["node_offline"]
    nowhere = verdict("echo hi", nodes=[], labels={"env": "qa"})
    assert (nowhere.unplaceable, [f.type for f in nowhere.node_findings]) == ("no_capable_node", ["no_capable_node"])


def test_a_named_node_without_the_selected_labels_is_refused_not_the_selector_dropped() -> None:
    # Review: `--node us1 -l region=eu` ran on us1 (region=us) and validate said valid.
    wrong = verdict("echo hi", nodes=["web-1"], labels={"env": "dev", "role": "web"})
    assert (wrong.unplaceable, wrong.valid) == ("no_capable_node", False)
    assert wrong.reason == "node 'web-1' does not have the labels env=dev (it has env=prod)"
    assert [(f.type, f.severity) for f in wrong.node_findings] == [("no_capable_node", "critical")]
    offline = verdict("echo hi", nodes=["old-1"], labels={"role": "web"})
    assert offline.unplaceable == "no_capable_node" and [f.type for f in offline.node_findings] == ["node_offline", "no_capable_node"]
    right = verdict("echo hi", nodes=["web-1"], labels={"env": "prod"})
    assert right.valid and right.unplaceable is None and right.node_findings == []


def test_a_test_pattern_re2_refuses_makes_the_request_invalid() -> None:
    # Review: `(a` was accepted, the command ran, and the job failed `got invalid pattern: missing ): (a`.
    bad = verdict("echo hi", tests=[ExitCodeTest(), OutputContainsTest(pattern="(a")])
    assert bad.invalid is not None and bad.invalid.startswith("test 2 (output_contains): invalid pattern '(a': missing ): (a")
    assert not bad.valid and bad.findings[0].type == "invalid_request"
    assert verdict("echo hi", tests=[OutputContainsTest(pattern="^done$")]).invalid is None


def test_offline_the_selectors_stand_for_the_target() -> None:
    offline = judge(Submission(command="rm -rf /", labels={"env": "prod"}), PROD_ONLY, None)
    assert offline.approval_needed and offline.unplaceable is None and offline.node_findings == []


@pytest.mark.parametrize(
    "command",
    [
        'c="rm -rf /var/www"; $c',
        "IFS=,; set -- rm,-rf,/var/www; $*",
        "/sbin/shutdow? -h now",
        "/usr/bin/r[m] -rf /srv/x",
        "rm -rf /va[r]/www",
        'shopt -s expand_aliases\nalias zz="rm -rf /srv/x"\nzz',
        'set -o history\nhistory -s "rm -rf /var/www"\nfc -s',
        "echo ~$(rm -rf /var/www)",
    ],
)
def test_forms_that_hid_a_critical_command_are_held(command: str) -> None:
    """A review's bypasses (2027-01): each was valid with no finding; each runs something critical, so each is held."""
    said = verdict(command, Policy())
    assert said.invalid is None and not said.valid and said.approval_needed and said.severity == "critical", said.findings


@pytest.mark.parametrize(
    "command",
    ['c="env whoami"; $c', "IFS=_; c=env_whoami; $c", "/usr/bin/whoam[i]", "alias zz=whoami\nzz", "echo ~$(whoami)"],
)
def test_forms_that_stepped_around_a_deny_rule_are_refused_or_held(command: str) -> None:
    said = verdict(command, Policy(deny=[Rule(pattern=r"^whoami", reason="no whoami")]))
    assert said.denied == "policy_denied" or said.approval_needed, said


@pytest.mark.parametrize(
    "command",
    ["ls *.txt", "echo ~", "cp ~/a ~/b", 'c="hello"; echo $c', 'for f in *.log; do gzip "$f"; done', "alias ll='ls -la'"],
)
def test_their_everyday_counterparts_stay_unflagged(command: str) -> None:
    said = verdict(command, Policy())
    assert said.valid and not said.approval_needed and said.severity is None, said.findings


def test_permission_then_deny_rules_and_the_findings_stay_visible() -> None:
    people = Policy(users={"vic": ["viewer"]})
    assert judge(Submission(command="true", user="vic"), people, FLEET).denied == "permission_denied"
    assert judge(Submission(command="true", user="nobody"), people, FLEET).denied == "permission_denied"
    rules = Policy(deny=[Rule(pattern=r"^shutdown\b", reason="no shutdowns")])
    said = verdict("shutdown now", rules)
    assert (said.denied, said.reason, said.valid) == ("policy_denied", "no shutdowns", False)
    assert said.severity == "critical"


def test_a_path_in_env_is_refused_where_allow_rules_apply() -> None:
    """Audit: `--env PATH=/tmp/evil:/usr/bin -- date` ran /tmp/evil/date on a node whose allow list
    is `^date$`; `PATH=/tmp/evil date` written in the command was refused."""
    rules = Policy(allow=[Rule(pattern=r"^date$", labels={"env": "prod"})])
    said = verdict("date", rules, env={"PATH": "/tmp/evil:/usr/bin:/bin"})
    assert said.denied == "policy_denied" and "env sets PATH" in (said.reason or ""), said.reason
    assert verdict("date", rules).denied is None  # the node's own PATH: allowed
    assert verdict("date", rules, nodes=["dev-1"], env={"PATH": "/opt/app/bin:/usr/bin"}).denied is None  # no allow rule there


# ---------------------------------------------------------------- what can run at all


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"command": ""}, "the command is empty"),
        ({"command": "   \n\t "}, "the command is empty"),
        ({"command": "echo \x00 nul"}, "the command holds a NUL byte"),
        ({"command": "true", "working_dir": "/tmp\x00x"}, "the working directory holds a NUL byte"),
        ({"command": "true", "tool": "ba\x00sh"}, "the tool holds a NUL byte"),
        ({"command": "true", "tests": [CommandTest(command="test -f x\x00")]}, "a test command holds a NUL byte"),
        ({"command": "true", "companions": [Companion(role="rollback", command="\x00")]}, "the rollback holds a NUL byte"),
        ({"command": "true", "env": {"A=B": "1"}}, "env name 'A=B' holds '='"),
        ({"command": "true", "env": {"": "2"}}, "an env entry has an empty name"),
        ({"command": "true", "env": {"A\x00": "2"}}, "env name 'A\\x00' holds a NUL byte"),
        ({"command": "true", "env": {"A": "x\x00y"}}, "the value of env 'A' holds a NUL byte"),
        ({"command": "true", "job_id": "j1", "after": ["j0", "j1"]}, "the job waits for itself"),
        ({"command": "echo " + "x" * 70_000}, "the command is 70,005 characters long; a job's command may be at most 65,536"),
        ({"command": 'echo "hello'}, "the command is not valid bash syntax: unexpected EOF while looking for matching"),
        ({"command": "if true; then echo x"}, "the command is not valid bash syntax: the command ends too early"),
        ({"command": "for i in 1 2; do echo $i"}, "the command is not valid bash syntax: the command ends too early"),
        ({"command": "echo )"}, "the command is not valid bash syntax: syntax error near unexpected token ')'"),
        ({"command": "echo $(("}, "the command is not valid bash syntax: unexpected EOF while looking for matching `)'"),
        ({"command": "echo $(( (1 + 2)"}, "the command is not valid bash syntax: unexpected EOF while looking for matching `)'"),
        ({"command": "if (( x > 1; then echo big; fi"}, "the command is not valid bash syntax: unexpected EOF while looking"),
        ({"command": "ls |"}, "the command is not valid bash syntax: the command ends too early"),
        ({"command": "&& ls"}, "the command is not valid bash syntax: syntax error near unexpected token '&&'"),
        ({"command": "ls", "tool": "sh", "tests": [CommandTest(command="test -f 'x")]}, "a test command is not valid bash syntax"),
        ({"command": "fi", "tool": "sh"}, "the command is not valid sh syntax: syntax error near unexpected token 'fi'"),
    ],
)
def test_a_request_that_can_never_run_is_invalid_whatever_the_policy_says(fields: dict[str, object], said: str) -> None:
    """Only a node could have found out (`embedded null byte`, `illegal environment variable name`),
    or it would have run nothing and succeeded: it is refused up front, with the reason."""
    found = judge(Submission(user="ann", **fields), Policy(), FLEET)  # type: ignore[arg-type]
    assert found.invalid is not None and found.invalid.startswith(said), found.invalid
    assert (found.valid, found.reason, found.approval_needed) == (False, found.invalid, False)
    assert [(f.type, f.severity, f.message) for f in found.findings] == [("invalid_request", "critical", found.invalid)]


def test_what_a_process_can_be_given_stays_valid() -> None:
    """POSIX names beyond [A-Za-z_][A-Za-z0-9_]* are names too (`BASH_FUNC_f%%` is how bash exports a function)."""
    env = {"BASH_FUNC_greet%%": "() { rm -rf /; }", "lower.dot": "1", "EMPTY": "", "_": "x=y"}
    found = judge(Submission(command="greet # a comment", env=env, job_id="j1", after=["j0"]), Policy(), FLEET)
    assert found.invalid is None and found.severity == "critical"  # judged as usual: the exported function is code


@pytest.mark.parametrize(
    ("command", "tool"),
    [
        ("ls", "bash"),
        ("grep -r TODO .", "bash"),
        ('echo "rm -rf /"', "bash"),
        ("git status", "bash"),
        ("df -h", "bash"),
        ("systemctl status sshd", "bash"),
        ("ls \\", "bash"),  # a trailing backslash is a literal one
        ("cat <<EOF\nno end", "bash"),  # bash warns and runs it
        ("case $x in a) echo 'a)';; esac", "bash"),
        ("[[ $x =~ ^(a|b)$ ]] && echo y", "bash"),
        ("for ((i=0; i<3; i++)); do echo $i; done", "bash"),
        ("echo $(( (1 + 2) * 3 )) $(echo $((4)))", "bash"),
        ("echo '$((' \"\\$((\" # $((", "bash"),  # quoted, escaped, a comment: no arithmetic
        ("cat <<EOF\n$((\nEOF", "bash"),  # a heredoc's body: `bash -n` passes it
        ("f() { (( x++ )); }; f", "bash"),
        ("() { echo anonymous; }", "zsh"),  # zsh grammar (an anonymous function): not checked as bash
    ],
)
def test_valid_shell_text_is_not_called_a_syntax_error(command: str, tool: str) -> None:
    assert judge(Submission(command=command, tool=tool, user="ann"), Policy(), None).invalid is None


# ---------------------------------------------------------------- what runs


def test_a_tool_that_is_not_a_shell_is_judged_as_the_bash_line_it_runs() -> None:
    """`tool: psql` is a capability; the agent runs the command with bash, so that is what is judged."""
    as_sql = verdict("DROP TABLE users", tool="psql")
    assert as_sql.severity is None  # bash runs a program named DROP: nothing to destroy
    hidden = verdict("rm -rf /var/lib/postgresql", tool="psql")
    assert hidden.severity == "critical" and hidden.approval_needed


def test_test_commands_are_judged_and_their_worst_finding_counts() -> None:
    tests = [ExitCodeTest(expected=0), CommandTest(command="rm -rf /etc")]
    found = verdict("echo deploy", tests=tests)
    assert found.severity == "critical" and found.approval_needed
    assert found.findings[0].message.startswith("Test command: Command contains 'rm -rf' on '/etc'")


def test_a_steps_health_check_and_rollback_count_for_its_job() -> None:
    steps = [Companion(role="health check", command="curl -fsS localhost/health"), Companion(role="rollback", command="rm -rf /srv")]
    found = verdict("deploy.sh", companions=steps)
    assert found.approval_needed and [f.message.split(":")[0] for f in found.findings] == ["Rollback"]


def test_a_variable_from_env_is_judged_as_its_value() -> None:
    assert verdict("$CMD", env={"CMD": "rm -rf /"}).severity == "critical"
    assert "destructive_command" in {f.type for f in verdict("$CMD", env={"CMD": "rm -rf /"}).findings}
    assert verdict("$CMD", env={"CMD": "ls -la"}).severity is None
    assert verdict('rm -rf "$TARGET"/*', env={"TARGET": "/"}).severity == "critical"
    assert verdict("bash -c '$RUN'", env={"RUN": "shutdown -h now"}).severity == "critical"
    assert verdict('echo "$MSG"', env={"MSG": "rm -rf / is a bad idea"}).severity is None
    # Not in env: unresolved, so it fails closed, and says so.
    unknown = verdict("$CMD")
    assert unknown.approval_needed and unknown.findings[0].type == "unresolved_command"
    assert unknown.findings[0].message.endswith(" - requires approval")
    assert verdict("echo $HOME").severity is None


def test_a_secret_is_never_expanded_into_a_finding() -> None:
    found = verdict("$DB_PASSWORD --force", env={"DB_PASSWORD": "rm -rf /s3cr3t"})
    assert [f.type for f in found.findings] == ["unresolved_command"]
    assert all("s3cr3t" not in f.message and "s3cr3t" not in (f.command or "") for f in found.findings)
    explicit = verdict("$X", env={"X": "rm -rf /"}, secrets=["X"])
    assert [f.type for f in explicit.findings] == ["unresolved_command"]


def test_a_secret_is_judged_as_its_value_and_only_the_severity_is_told() -> None:
    # A secret in an argument: `rm -rf $DIR_TOKEN` is what `rm -rf $DIR` is with the same value.
    for secret in ("/", "/var/lib/s3cr3t"):
        held = verdict("rm -rf $DIR_TOKEN", env={"DIR_TOKEN": secret})
        assert held.approval_needed and held.severity == "critical"
        assert [f.type for f in held.findings if f.severity == "critical"] == ["secret_value"]
    assert all("s3cr3t" not in f.message and "s3cr3t" not in (f.command or "") for f in held.findings)
    # Masked or sealed in the view (the orchestrator's case), opened and handed over: the same.
    masked = judge(
        Submission(command="dd if=/dev/zero of=$DEV_TOKEN", env={"DEV_TOKEN": "********"}), Policy(), None, {"DEV_TOKEN": "/dev/sda"}
    )
    assert masked.approval_needed and "secret_value" in {f.type for f in masked.findings}
    in_test = verdict("true", env={"Q_SECRET": "/"}, tests=[CommandTest(command="rm -rf $Q_SECRET")])
    assert in_test.approval_needed and "the test command is critical" in in_test.findings[-1].message
    # A harmless value, or one no worse than what the text alone shows: nothing more is said.
    assert "secret_value" not in {f.type for f in verdict("rm -rf $DIR_TOKEN", env={"DIR_TOKEN": "/tmp/x"}).findings}
    assert verdict('curl -H "Authorization: Bearer $API_TOKEN" https://example.com', env={"API_TOKEN": "abc"}).severity is None


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({"BASH_FUNC_ls%%": "() { rm -rf /; }"}, "destructive_command"),
        ({"PROMPT_COMMAND": "rm -rf /home"}, "destructive_command"),
        ({"BASH_ENV": "/tmp/x.sh"}, "unresolved_command"),
        ({"LD_PRELOAD": "/tmp/evil.so"}, "unresolved_command"),
        ({"NODE_OPTIONS": "--require /tmp/x.js"}, "unresolved_command"),
    ],
)
def test_env_entries_the_shell_or_the_loader_runs_are_code(env: dict[str, str], kind: str) -> None:
    found = verdict("ls", env=env)
    assert found.approval_needed and kind in {f.type for f in found.findings}, found.findings


def test_ordinary_env_is_not_code() -> None:
    assert verdict("make test", env={"PATH": "/opt/bin:/usr/bin", "NODE_OPTIONS": "--max-old-space-size=4096"}).findings == []


# ---------------------------------------------------------------- what the record says


def test_by_default_a_critical_finding_holds_on_any_node_and_says_so() -> None:
    dev = verdict("rm -rf /", Policy(), nodes=["dev-1"])
    assert dev.approval_needed and dev.findings[0].message.endswith(" - requires approval")
    assert dev.approval_reason is not None and dev.approval_reason.startswith("critical command needs approval: ")


def test_when_the_policy_holds_only_production_the_text_does_not_claim_approval_elsewhere() -> None:
    dev = verdict("rm -rf /", PROD_ONLY, nodes=["dev-1"])
    assert not dev.approval_needed and dev.valid is False
    assert dev.findings[0].message.endswith(" - requires approval on production nodes")
    prod = verdict("rm -rf /", PROD_ONLY, nodes=["web-1"])
    assert prod.findings[0].message.endswith(" - requires approval") and prod.approval_needed


def test_a_warning_that_holds_says_it_requires_approval() -> None:
    strict = Policy(approval_severity="warning", approval_severity_anywhere="never")
    held = verdict("rm -rf build-cache/old", strict, nodes=["web-1"])
    assert held.severity == "warning" and held.approval_needed
    assert held.findings[0].message.endswith(" - requires approval")
    elsewhere = verdict("rm -rf build-cache/old", strict, nodes=["dev-1"])
    assert not elsewhere.approval_needed and elsewhere.findings[0].message.endswith(" - requires approval on production nodes")
    relaxed = verdict("rm -rf build-cache/old", PROD_ONLY, nodes=["web-1"])
    assert not relaxed.approval_needed and relaxed.findings[0].message.endswith(" - review before running")
