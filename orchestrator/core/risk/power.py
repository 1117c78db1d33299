"""Power pack: taking the node down, and stopping the services it is reached through.

Critical: shutdown/reboot/halt/poweroff (also `systemctl` reboot/poweroff/halt/kexec/suspend/
hibernate/rescue/emergency/soft-reboot, `isolate rescue.target`), `init 0/1/6`, `kexec -e`,
`loginctl poweroff/reboot`, `ipmitool chassis power off/cycle/reset`, writes to
/proc/sysrq-trigger, `kill` of PID 1 or of every process (`kill -9 -1`), stopping, disabling or
masking the units that carry remote access (ssh, sshd, networking, NetworkManager, ...).
Also critical: killing those services' processes (`pkill sshd`, `killall -9 sshd`, `kill -9
$(pgrep sshd)`), every process of root (`pkill -u root`), and every process (`killall5`, a pkill
pattern that matches anything: `pkill -9 .`, `pkill -f .`, `killall -r .`).
Warning: stopping, disabling, masking or killing any other service (systemctl, service,
/etc/init.d, rc-service, update-rc.d, chkconfig), killing a known service's processes by name
(`pkill nginx`, `killall -9 java`, `kill -9 $(pgrep -f postgres)`), `pkill -u USER`.
Quiet on purpose: `kill PID` of one process (the operator named it), `pkill -f my-script` and
other programs that are not a service, and reload or log-reopen signals (`-HUP`, `-USR1`).
Safe: `shutdown -c` (cancels), `shutdown -k` (only warns), `reboot/halt --wtmp-only` (-w: only
writes the record), `systemctl ... --when=cancel`, `--help`, `systemctl status/restart/reload`.
"""

# ruff: noqa: E501 - a pack keeps one rule per line, so it reads as a table

from __future__ import annotations

import re

from orchestrator.core.risk.table import Pack, Rule, has_flag, positionals, tool
from orchestrator.core.risk_types import Invocation, Risk

_POWER_SUGGESTION = "Drain the node first and schedule the restart with approval, e.g. 'shutdown -r +5' (cancel with 'shutdown -c')"
REMOTE_ACCESS_UNITS = frozenset(
    [
        "ssh",
        "sshd",
        "openssh-server",
        "networking",
        "network",
        "NetworkManager",
        "systemd-networkd",
        "wpa_supplicant",
        "firewalld",
        "ufw",
        "nftables",
        "iptables",
        "tailscaled",
        "wg-quick@wg0",
        "nexus-agent",
    ]
)
_SYSTEMCTL_POWER = frozenset(
    [
        "reboot",
        "poweroff",
        "halt",
        "kexec",
        "suspend",
        "hibernate",
        "hybrid-sleep",
        "suspend-then-hibernate",
        "rescue",
        "emergency",
        "soft-reboot",
    ]
)
_SYSTEMCTL = tool(
    "systemctl",
    values="-H --host -M --machine -t --type -s --signal -p --property -n --lines -o --output --when --kill-whom --job-mode --root",
)


def _power(command: str) -> Risk:
    return Risk("power", "critical", f"Command '{command}' takes the node down - requires approval", (_POWER_SUGGESTION,))


def service_stop(verb: str, unit: str) -> Risk:
    bare = unit.removesuffix(".service").removesuffix(".socket").removesuffix(".target")
    if bare in REMOTE_ACCESS_UNITS:
        return Risk(
            "service_stop",
            "critical",
            f"Command would {verb} '{unit}', which can cut off remote access to the node - requires approval",
            ("Use 'restart' or 'reload' instead, and keep a console session open",),
        )
    return Risk(
        "service_stop",
        "warning",
        f"Command would {verb} service '{unit}' - review before running",
        ("Prefer 'systemctl reload' or 'restart' if you only need to apply configuration",),
    )


def power_risks(inv: Invocation) -> list[Risk] | None:
    name, args = inv.name, inv.args
    if "--help" in args:
        return []
    if name == "shutdown":
        return [] if {"-c", "-k", "--help"} & set(args) else [_power(("shutdown " + " ".join(args)).strip())]
    if name in {"reboot", "halt", "poweroff"}:
        return [] if has_flag(args, "-w") or has_flag(args, "--wtmp-only") else [_power(name)]
    if name in {"init", "telinit"}:
        return [_power(f"{name} {args[0]}")] if args[:1] and args[0] in {"0", "1", "6", "s", "S"} else []
    if name == "kexec":
        return [_power("kexec -e")] if has_flag(args, "-e") or has_flag(args, "--exec") else []
    return None


def systemctl_risks(inv: Invocation) -> list[Risk] | None:
    args = inv.args
    words = positionals(args, _SYSTEMCTL)
    if not words or "--help" in args:
        return []
    verb, units = words[0], [u for u in words[1:] if u not in {"--now"}]
    if verb in _SYSTEMCTL_POWER:
        if any(a in {"--when=cancel", "--when=show"} for a in args) or any(
            args[i : i + 2] == ["--when", w] for i in range(len(args)) for w in ("cancel", "show")
        ):
            return []
        return [_power(f"systemctl {verb}")]
    if verb == "isolate" and any(
        u.split(".")[0] in {"rescue", "emergency", "poweroff", "reboot", "halt", "runlevel0", "runlevel1", "runlevel6"} for u in units
    ):
        return [_power(f"systemctl isolate {units[0]}")]
    if verb in {"stop", "disable", "mask", "kill"} and units:
        risks = [service_stop(verb, u) for u in units]
        return sorted(risks, key=lambda r: r.severity != "critical")[:1]
    return []


def service_risks(inv: Invocation) -> list[Risk] | None:
    name, args = inv.name, inv.args
    if inv.argv[0].text.startswith("/etc/init.d/"):
        return [service_stop("stop", name)] if args[:1] == ["stop"] else []
    if name in {"service", "rc-service", "invoke-rc.d"} and len(args) >= 2 and args[1] == "stop":
        return [service_stop("stop", args[0])]
    if name == "update-rc.d" and len(args) >= 2 and args[1] in {"disable", "remove"}:
        return [service_stop("disable", args[0])]
    if name == "chkconfig" and len(args) >= 2 and args[1] == "off":
        return [service_stop("disable", args[0])]
    return []


_PKILL = tool("pkill", "killall", values="-u --user -g -G -P -t -s -U -F --pidfile --signal -n --ns --nslist")
_PROCESS_LOOKUP = re.compile(r"\$\((?:pgrep|pidof|pkill)\s+(?:-\S+\s+)*([\w@.-]+)")


# Processes that are a service: killing one stops what the node serves (`pkill nginx`, `killall
# -9 java`). A one-off script (`pkill -f my-test-script`) or a desktop program is not on it.
SERVICE_PROCESSES = frozenset(
    [
        "java",
        "nginx",
        "apache2",
        "httpd",
        "haproxy",
        "envoy",
        "traefik",
        "caddy",
        "postgres",
        "postmaster",
        "mysqld",
        "mariadbd",
        "mongod",
        "redis-server",
        "memcached",
        "elasticsearch",
        "beam.smp",
        "rabbitmq-server",
        "dockerd",
        "containerd",
        "kubelet",
        "etcd",
        "consul",
        "vault",
        "named",
        "php-fpm",
    ]
)
# A pkill pattern that matches every process name or command line.
_EVERYTHING = frozenset({".", ".*", ".+", "^", "$", "^.*", "^.*$", ""})

_GENTLE_SIGNALS = frozenset({"HUP", "1", "USR1", "10", "USR2", "12", "CONT", "18", "WINCH", "28", "0"})


def _gentle(args: list[str]) -> bool:
    """A signal that asks a daemon to reload or reopen its logs (`-HUP`, `-s USR1`), not to die."""
    given = [args[i + 1] for i, a in enumerate(args[:-1]) if a in {"-s", "-n", "--signal"}]
    given += [a.split("=", 1)[1] for a in args if a.startswith("--signal=")]
    given += [a[1:] for a in args if len(a) > 1 and a[0] == "-" and (a[1:].isdigit() or a[1:].isupper())]
    return bool(given) and all(g.upper().removeprefix("SIG") in _GENTLE_SIGNALS for g in given)


def _cuts_access(process: str) -> Risk:
    return Risk(
        "service_stop",
        "critical",
        f"Command kills '{process}', which can cut off remote access to the node - requires approval",
        ("Use 'systemctl restart' instead, and keep a console session open",),
    )


def _stops_service(process: str) -> Risk:
    return Risk(
        "service_stop",
        "warning",
        f"Command kills '{process}', which stops the service it runs - review before running",
        ("Stop it through its service manager instead (systemctl stop UNIT), so it shuts down cleanly",),
    )


def _service(pattern: str) -> str | None:
    """The service a process name or `-f` pattern names (`postgres`, `^nginx: master`, `/usr/bin/java -jar x`)."""
    words = pattern.strip("^$").split()
    name = words[0].rsplit("/", 1)[-1].removesuffix(":") if words else ""
    return name if name in SERVICE_PROCESSES or name.startswith("php-fpm") else None


def pkill_risks(inv: Invocation) -> list[Risk] | None:
    args = inv.args
    if inv.name == "pgrep" or _gentle(args):
        return None
    patterns = positionals(args, _PKILL)
    for name in patterns:
        if name.removesuffix(":") in REMOTE_ACCESS_UNITS:
            return [_cuts_access(name)]
    regex = inv.name == "pkill" or has_flag(args, "-r") or "--regexp" in args
    if regex and any(p in _EVERYTHING for p in patterns):
        return [
            Risk(
                "power",
                "critical",
                f"Command '{inv.line[:120]}' matches every process on the node (sshd, the agent, init's children) - requires approval",
                ("Name the process exactly: pkill -x NAME",),
            )
        ]
    users = [args[i + 1] for i, a in enumerate(args[:-1]) if a in {"-u", "--user", "-U"}]
    users += [a.split("=", 1)[1] for a in args if a.startswith("--user=")] + [a[2:] for a in args if re.fullmatch(r"-u\S+", a)]
    if any(u in {"root", "0"} for u in ",".join(users).split(",")):
        return [Risk("power", "critical", f"Command '{inv.line[:120]}' kills every process of root (sshd, the agent, ...) - requires approval", ("Name the processes to stop instead",))]
    services = [s for p in patterns if (s := _service(p))]
    return [_stops_service(services[0])] if services and not users else None


def kill_risks(inv: Invocation) -> list[Risk] | None:
    args = inv.args
    for a in args:
        if (m := _PROCESS_LOOKUP.search(a)) and not _gentle(args):
            if m.group(1) in REMOTE_ACCESS_UNITS:
                return [_cuts_access(m.group(1))]
            if service := _service(m.group(1)):
                return [_stops_service(service)]
    if args[:1] in (["-0"], ["-s", "0"], ["-n", "0"]) or args[:2] in (["-s", "0"], ["-n", "0"]) or "-l" in args:
        return None  # signal 0 only checks that the process exists
    if args[:1] in (["-s"], ["-n"]):
        args = args[2:]
    elif len(args) > 1 and args[0].startswith("-"):
        args = args[1:]  # the signal
    if "1" in args:
        return [
            Risk(
                "power",
                "critical",
                "Command kills PID 1 (init), which panics or reboots the node - requires approval",
                (_POWER_SUGGESTION,),
            )
        ]
    if "-1" in args:
        return [
            Risk(
                "power",
                "critical",
                "Command 'kill -1' signals every process the user can reach - requires approval",
                ("Name the process ids, or use pkill with an exact name",),
            )
        ]
    return None


_RTCWAKE = tool("rtcwake", values="-s --seconds -t --time -d --device --date")
_IPMI = tool("ipmitool", values="-H -U -P -I -p -L -f -y -k -C")

# fmt: off
RULES: tuple[Rule, ...] = (
    Rule("power.ipmi-off", _IPMI, ("chassis|power", "**", "off|cycle|reset|soft|diag"), "critical", "cuts or cycles the machine's power", suggestion=_POWER_SUGGESTION, type="power"),
    Rule("power.loginctl", tool("loginctl"), ("poweroff|reboot|halt|suspend|hibernate|kexec",), "critical", "takes the node down", suggestion=_POWER_SUGGESTION, type="power"),
    Rule("power.rtcwake-safe", _RTCWAKE, (), None, flags=("--mode=show", "-m=show", "--mode=disable", "-m=disable", "--mode=on", "-m=on", "--mode=no", "-m=no")),
    Rule("power.rtcwake", _RTCWAKE, (), "critical", "suspends or powers the node off", flags=("-m", "--mode"), unless=("--dry-run", "-n"), type="power"),
    Rule("power.pm-suspend", tool("pm-suspend", "pm-hibernate", "pm-suspend-hybrid", "zzz"), (), "critical", "suspends the node", type="power"),
    Rule("power.killall5", tool("killall5"), (), "critical", "signals every process on the node", type="power"),
    Rule("power.pkill-root", tool("pkill", "killall", values="-u --user -g -G -P -t -s"), (), "warning", "kills every process of a user", flags=("-u", "--user"), type="power"),
)
# fmt: on

PACK = Pack(
    name="power",
    summary="shutdown/reboot/halt, systemctl power verbs and service stops, init, kexec, ipmitool, kill 1",
    rules=RULES,
    handlers={
        "shutdown": power_risks,
        "reboot": power_risks,
        "halt": power_risks,
        "poweroff": power_risks,
        "init": power_risks,
        "telinit": power_risks,
        "kexec": power_risks,
        "systemctl": systemctl_risks,
        "service": service_risks,
        "rc-service": service_risks,
        "invoke-rc.d": service_risks,
        "update-rc.d": service_risks,
        "chkconfig": service_risks,
        "kill": kill_risks,
        "pkill": pkill_risks,
        "killall": pkill_risks,
    },
)
