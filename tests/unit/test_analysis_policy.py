"""Policy deny/allow rules see the normalised parse of a command, not only its raw text."""

from __future__ import annotations

import pytest

from orchestrator.core.analysis import normalised_commands
from orchestrator.core.policy import Policy, Rule

_DENY_SHUTDOWN = Policy(deny=[Rule(pattern=r"^shutdown\b", reason="no shutdowns")])
_ALLOW_APP = Policy(allow=[Rule(pattern=r"^systemctl (status|restart) app$")])


@pytest.mark.parametrize(
    "command",
    [
        "shutdown -h now",
        'shutdow""n -h now',
        "s'hut'down -r now",
        "sudo shutdown -h now",
        "sudo sh -c 'shutdown -h now'",
        "ssh web1 shutdown -r now",
        "echo c2h1dGRvd24gLWggbm93 | base64 -d | sh",
        "$(echo shutdown) -h now",
        "python3 -c \"import os; os.system('shutdown -h now')\"",
    ],
)
def test_deny_rules_match_what_will_run(command: str) -> None:
    assert _DENY_SHUTDOWN.denial(command, "bash", [None]) == "no shutdowns"


@pytest.mark.parametrize("command", ["echo shutdown", "grep shutdown /var/log/syslog", "cat <<EOF\nshutdown -h now\nEOF"])
def test_deny_rules_leave_data_alone(command: str) -> None:
    assert _DENY_SHUTDOWN.denial(command, "bash", [None]) is None


def test_allow_rules_accept_the_same_command_however_it_is_quoted() -> None:
    assert _ALLOW_APP.denial("systemctl restart app", "bash", [None]) is None
    assert _ALLOW_APP.denial('systemctl "restart" app', "bash", [None]) is None


@pytest.mark.parametrize("command", ["systemctl restart app; rm -rf /", "systemctl stop app", "rm -rf /"])
def test_allow_rules_still_refuse_anything_else(command: str) -> None:
    assert (
        _ALLOW_APP.denial(command, "bash", [None])
        == "command matches no allow rule for this tool and node; aim it elsewhere with --node or --label"
    )


def test_normalised_commands_list_each_form() -> None:
    assert normalised_commands("sudo sh -c 'shutdown -h now'") == ["sudo sh -c shutdown -h now", "shutdown -h now"]


_DENY_UNAME = Policy(deny=[Rule(pattern=r"^uname"), Rule(pattern=r"^shutdown")])
_TOO_MANY = "true; " * 4001


@pytest.mark.parametrize(
    "command",
    [
        "/bin/uname -a",
        "{uname,-a}",
        "/sbin/shutdown -h now",
        "sudo /sbin/shutdown -h now",
        "{shutdown,-h,now}",
        "bash -c 'bash -c '\"'\"'uname'\"'\"''",
        'bash -c \'bash -c "uname"\'""',
    ],
)
def test_deny_rules_see_paths_braces_and_nested_quoting(command: str) -> None:
    assert _DENY_UNAME.denial(command, "bash", [None]) is not None


def test_a_command_too_large_to_read_whole_is_refused_when_rules_apply() -> None:
    assert "too large" in (_DENY_UNAME.denial(_TOO_MANY + "uname -a", "bash", [None]) or "")
    assert "too large" in (_ALLOW_APP.denial(_TOO_MANY + "systemctl restart app", "bash", [None]) or "")
    assert Policy().denial(_TOO_MANY + "uname -a", "bash", [None]) is None  # no rules: the analysis holds it


_ALLOW_LIST = Policy(allow=[Rule(pattern=r"^(echo|ls|df|cat /var/log/.*)( .*)?$")])
_ALLOW_DOCS = Policy(allow=[Rule(pattern=r"^(systemctl (status|restart) app|/opt/app/bin/.*)$")])


@pytest.mark.parametrize(
    ("policy", "command"),
    [
        (_ALLOW_LIST, "id"),
        (_ALLOW_LIST, "echo hi; id"),
        (_ALLOW_LIST, "echo hi && cat /etc/shadow"),
        (_ALLOW_LIST, "echo $(id)"),
        (_ALLOW_LIST, "ls | sh"),
        (_ALLOW_DOCS, "/opt/app/bin/x; cat /etc/shadow"),
    ],
)
def test_an_allow_list_needs_every_simple_command_to_match(policy: Policy, command: str) -> None:
    assert (
        policy.denial(command, "bash", [None])
        == "command matches no allow rule for this tool and node; aim it elsewhere with --node or --label"
    )


@pytest.mark.parametrize(
    ("policy", "command"),
    [
        (_ALLOW_LIST, "echo hi; ls -la"),
        (_ALLOW_LIST, "df -h | cat /var/log/syslog"),
        (_ALLOW_DOCS, "/opt/app/bin/deploy --now"),
        (_ALLOW_DOCS, "systemctl status app && systemctl restart app"),
    ],
)
def test_an_allow_list_passes_commands_made_only_of_allowed_ones(policy: Policy, command: str) -> None:
    assert policy.denial(command, "bash", [None]) is None


_ALLOW_ECHO_WORDS = Policy(allow=[Rule(pattern=r"^echo [a-z ]*$")])


@pytest.mark.parametrize(
    ("policy", "command"),
    [
        (_ALLOW_DOCS, "systemctl restart app > /etc/passwd"),  # the allowed command, writing where it may not
        (_ALLOW_DOCS, "systemctl status app >> /root/.ssh/authorized_keys"),
        (_ALLOW_DOCS, "systemctl status app &> /etc/cron.d/x"),
        (_ALLOW_DOCS, "systemctl status app; > /etc/passwd"),  # a redirection alone empties the file
        (_ALLOW_DOCS, "systemctl status app < /etc/shadow"),
        (_ALLOW_ECHO_WORDS, "echo hi > /etc/passwd"),
        (_ALLOW_ECHO_WORDS, "echo $(echo hi > /etc/passwd)"),
    ],
)
def test_an_allow_rule_covers_the_files_a_command_redirects_to(policy: Policy, command: str) -> None:
    assert (
        policy.denial(command, "bash", [None])
        == "command matches no allow rule for this tool and node; aim it elsewhere with --node or --label"
    )


@pytest.mark.parametrize(
    "command",
    ["systemctl status app 2>&1", "systemctl status app 2>/dev/null", "systemctl status app >&2", "systemctl status app <<< hi"],
)
def test_redirections_that_touch_no_file_leave_an_allowed_command_allowed(command: str) -> None:
    assert _ALLOW_DOCS.denial(command, "bash", [None]) is None


def test_a_rule_that_names_the_redirection_allows_it() -> None:
    policy = Policy(allow=[Rule(pattern=r"^systemctl status app( >> /var/log/app-status\.log)?$")])
    assert policy.denial("systemctl status app >> /var/log/app-status.log", "bash", [None]) is None
    assert policy.denial("systemctl status app >> /etc/passwd", "bash", [None]) is not None


def test_rules_for_the_shell_apply_to_a_job_of_another_tool_whose_line_the_shell_reads() -> None:
    # `--tool git` runs its command under bash (decide.argv_for): bash's rules still apply.
    policy = Policy(allow=[Rule(pattern=r"^(date|id)$", tools=["bash", "sh"])], deny=[Rule(pattern=r"^touch ", tools=["bash"])])
    assert policy.denial("touch /tmp/x", "git", [None], interpreter="bash") is not None
    assert policy.denial("date", "git", [None], interpreter="bash") is None
    assert (
        policy.denial("rm -f /tmp/x", "git", [None], interpreter="bash")
        == "command matches no allow rule for this tool and node; aim it elsewhere with --node or --label"
    )
    # A rule of the tool itself still counts beside the shell's.
    both = Policy(allow=[Rule(pattern=r"^date$", tools=["bash"]), Rule(pattern=r"^git status$", tools=["git"])])
    assert both.denial("git status", "git", [None], interpreter="bash") is None


_ALLOW_DATE = Policy(allow=[Rule(pattern=r"^(date|echo hi)$")])


@pytest.mark.parametrize(
    ("policy", "command"),
    [
        (_ALLOW_DATE, "flock /tmp/na date"),  # a wrapper that writes a file
        (_ALLOW_DATE, "strace -o /tmp/na date"),
        (_ALLOW_DATE, "/usr/bin/time -o /tmp/na date"),
        (_ALLOW_DATE, "PATH=/tmp/evil:/usr/bin date"),  # the variables it sets for itself
        (_ALLOW_DATE, "LD_PRELOAD=/tmp/evil.so date"),
        (_ALLOW_DATE, "BASH_ENV=/tmp/evil date"),
        (_ALLOW_DATE, "/tmp/evil/date"),  # another program of the same name
        (_ALLOW_DATE, "./date"),
        (_ALLOW_DATE, "xargs -a /etc/hostname echo hi"),
        (_ALLOW_DATE, "sudo date"),
        (_ALLOW_DOCS, "/opt/app/bin/../../../usr/bin/touch /tmp/x"),  # out of the allowed directory
        (_ALLOW_DOCS, "PATH=/tmp/evil systemctl restart app"),
    ],
)
def test_an_allow_rule_matches_the_command_exactly_as_it_runs(policy: Policy, command: str) -> None:
    # Attack review: wrappers, variables and paths were peeled before the allow rules saw the command.
    assert (
        policy.denial(command, "bash", [None])
        == "command matches no allow rule for this tool and node; aim it elsewhere with --node or --label"
    )


def test_an_allow_rule_that_names_the_wrapper_or_path_allows_it() -> None:
    policy = Policy(allow=[Rule(pattern=r"^(sudo )?(/usr/bin/)?date$")])
    assert policy.denial("sudo date", "bash", [None]) is None
    assert policy.denial("/usr/bin/date", "bash", [None]) is None
    assert policy.denial("/usr/bin/../bin/date", "bash", [None]) is None  # resolved: /usr/bin/date
    assert policy.denial("/tmp/date", "bash", [None]) is not None
    # Deny rules still see every form: the program without its path, unwrapped.
    deny = Policy(deny=[Rule(pattern=r"^date")])
    assert deny.denial("PATH=/x /usr/local/bin/date", "bash", [None]) is not None
    assert deny.denial("sudo date", "bash", [None]) is not None


_DENY_RM = Policy(deny=[Rule(pattern=r"^rm( |$)")])


@pytest.mark.parametrize(
    "command",
    [
        "find /tmp/x -exec rm -f {} +",
        "find /tmp -name '*.log' -exec rm {} \\;",
        "trap 'rm -f /tmp/x' EXIT",
        "trap -- 'rm -rf /tmp/y' INT TERM",
    ],
)
def test_deny_rules_see_commands_run_by_find_and_by_a_trap(command: str) -> None:
    # Attack review: both ran past a `^rm` deny rule.
    assert _DENY_RM.denial(command, "bash", [None]) == "command matches deny rule '^rm( |$)'"


@pytest.mark.parametrize("command", ["trap - EXIT", "trap -p", "trap 'echo bye' INT"])
def test_a_trap_that_runs_nothing_denied_passes(command: str) -> None:
    assert _DENY_RM.denial(command, "bash", [None]) is None


@pytest.mark.parametrize("command", ["echo hi 2>/dev/stderr", "echo hi >/dev/stdout", "echo hi > /dev/tty"])
def test_redirections_to_the_jobs_own_streams_touch_no_file(command: str) -> None:
    assert Policy(allow=[Rule(pattern=r"^echo hi$")]).denial(command, "bash", [None]) is None


_DENY_WHOAMI = Policy(deny=[Rule(pattern=r"^whoami", reason="no whoami")])


@pytest.mark.parametrize("command", ["echo ~$(whoami)", "echo ~`whoami`", "echo x~$(whoami)"])
def test_deny_rules_see_a_substitution_wherever_it_is_in_a_word(command: str) -> None:
    assert _DENY_WHOAMI.denial(command, "bash", [None]) == "no whoami"


@pytest.mark.parametrize("command", ['c="env whoami"; $c', 'c="sudo whoami"; $c', "c=whoami; $c --help"])
def test_deny_rules_see_a_variable_split_into_the_command_it_runs(command: str) -> None:
    assert _DENY_WHOAMI.denial(command, "bash", [None]) == "no whoami"


def test_deny_rules_see_the_known_programs_a_pattern_in_a_command_name_matches() -> None:
    assert _DENY_SHUTDOWN.denial("/sbin/shutdow? -h now", "bash", [None]) == "no shutdowns"


@pytest.mark.parametrize("command", ["alias zz=whoami\nzz", "shopt -s expand_aliases; alias zz='env whoami'; zz"])
def test_deny_rules_see_what_an_alias_runs(command: str) -> None:
    assert _DENY_WHOAMI.denial(command, "bash", [None]) == "no whoami"


def test_an_allow_list_refusal_names_the_labels_of_the_node_it_is_for() -> None:
    """Audit: an untargeted job was refused "for this tool and node" with no node named, because a
    production node could have been chosen; the reason now says which, and how to aim it."""
    policy = Policy(allow=[Rule(pattern=r"^date$", labels={"env": "prod"})])
    said = policy.denial("id", "bash", [{"env": "dev"}, {"env": "prod", "role": "web"}])
    where = "(a node labelled env=prod, role=web)"
    assert said == f"command matches no allow rule for this tool and node {where}; aim it elsewhere with --node or --label"
