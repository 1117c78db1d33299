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
    assert _ALLOW_APP.denial(command, "bash", [None]) == "command matches no allow rule for this tool and node"


def test_normalised_commands_list_each_form() -> None:
    assert normalised_commands("sudo sh -c 'shutdown -h now'") == ["sudo sh -c shutdown -h now", "shutdown -h now"]
