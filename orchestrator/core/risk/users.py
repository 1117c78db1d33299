"""Users and permissions pack: accounts, passwords, sudo, cron tables, and ownership or modes
rewritten across system paths.

Critical: `chmod/chown/chgrp -R` (and `setfacl -R`, `chattr -R`) on root, home or system paths,
`chmod 777 /` or on vital files, a mode that locks out a vital file or program (`chmod 000
/etc/sudoers`, `chmod -x /bin/chmod`), `userdel -r` / `deluser --remove-home` (the home directory goes
too), deleting or locking root (`passwd -d root`, `usermod -L root`), `crontab -r` and `crontab
/dev/null` (every job of the user, without asking), writing a `sudoers` file with `>`.
Warning: `userdel`/`deluser`/`groupdel`, `passwd -d/-l USER`, `usermod -G` without `-a` (drops
the other groups), a world-writable `chmod -R` elsewhere, setuid bits, `crontab -ri`, `crontab
FILE` (replaces the table).
Safe: `crontab -l`, `id`, `getent`, `chmod -R 755 ./dist`, `chown -R app /srv/app/releases/42`.

A login shell that refuses logins (`usermod -s /sbin/nologin`, `chsh -s /bin/false`) locks the
account out as surely as a locked password: critical for root (or with no user named, which is
root under sudo), a warning for another user; another shell (`chsh -s /bin/zsh`) is safe.
"""

# ruff: noqa: E501 - a pack keeps one rule per line, so it reads as a table

from __future__ import annotations

import re

from orchestrator.core.risk.filesystem import VITAL
from orchestrator.core.risk.paths import REASON, Place, place
from orchestrator.core.risk.table import Pack, Rule, has_flag, tool
from orchestrator.core.risk_types import Invocation, Risk, Severity, Word, approval_phrase

_CHMOD_OPTIONS = frozenset({"-R", "-c", "-f", "-v", "--recursive", "--changes", "--silent", "--quiet", "--verbose"})
_WORLD_WRITABLE = re.compile(r"^(?:[0-7]?[0-7][0-7][2367]|[ugo]*[ao][ugo]*[+=][rwxXst]*w[rwxXst]*|\+?w|\+?[rwx]*w[rwx]*)$")
_SETUID = re.compile(r"^(?:[4-7][0-7]{3}|[ugo]*\+[rwx]*s[rwx]*)$")
_PROGRAM_DIRS = re.compile(r"^/(?:usr/(?:local/)?)?s?bin/[^/]+$")
_NO_EXECUTE = re.compile(r"^(?:[ugoa]*-[rwx]*x[rwx]*|[ugoa]*=[rw]*|[0-7]?[0246][0-7]{2})$")
_NO_ACCESS = re.compile(r"^(?:[0-7]?0[0-7]{2}|[ugoa]*-[rwx]*r[rwx]*|[ugoa]*=)$")


def _locks_out(spec: str, found: Place) -> bool:
    """`chmod 000 /etc/sudoers`, `chmod -x /bin/chmod`: a file the node needs made unusable."""
    if _PROGRAM_DIRS.match(found.path):
        return bool(_NO_EXECUTE.match(spec))
    return bool(VITAL.match(found.path)) and found.path != "/etc" and bool(_NO_ACCESS.match(spec))


_OS_TREES = (
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/boot",
    "/var/lib",
    "/var/spool",
    "/proc",
    "/sys",
    "/dev",
    "/run",
)


def _os_owned(found: Place) -> bool:
    """Root, homes, top-level directories and the trees the OS owns; not /srv/app or /var/www."""
    if found.kind in {"root", "home"}:
        return True
    parts = [p for p in found.path.split("/") if p]
    return found.kind == "system" and (len(parts) == 1 or any(found.path == t or found.path.startswith(t + "/") for t in _OS_TREES))


def permission_risks(inv: Invocation) -> list[Risk]:
    name = inv.name
    recursive = False
    positional: list[Word] = []
    for w in inv.argv[1:]:
        t = w.text
        if t == "--recursive" or re.fullmatch(r"-[cfvhHLP]*R[cfvhHLPR]*", t):
            recursive = True
        elif (
            t in _CHMOD_OPTIONS
            or t.startswith("--")
            or (name != "chmod" and t.startswith("-"))
            or (name == "chmod" and re.fullmatch(r"-[cfvR]+", t))
        ):
            continue
        else:
            positional.append(w)
    if len(positional) < 2:
        return []
    spec, targets = positional[0].text, positional[1:]
    places = [(place(t, inv.cwd), t) for t in targets]
    change = f"{name} {'-R ' if recursive else ''}{spec}"
    world = name == "chmod" and any(_WORLD_WRITABLE.match(part) for part in spec.split(","))
    for found, target in places:
        if recursive and _os_owned(found):
            return [
                Risk(
                    "system_permissions",
                    "critical",
                    f"Command '{change}' on '{target.text}' rewrites permissions of {REASON[found.kind]} - requires approval",
                    (f"Scope '{name}' to the directory that needs it, below '{found.path}'",)
                    + (("Avoid 777: use 755 for directories and 644 for files",) if world else ()),
                )
            ]
        if found.kind == "root" and (world or name != "chmod"):
            return [Risk("system_permissions", "critical", f"Command '{change}' on '/' - requires approval")]
    for found, target in places:
        if name == "chmod" and _locks_out(spec, found):
            return [
                Risk(
                    "system_permissions",
                    "critical",
                    f"Command '{change}' on '{target.text}' makes a file the node needs unusable - requires approval",
                    ("Check the mode first: programs need x, and /etc/sudoers is 0440",),
                )
            ]
        if world and VITAL.match(found.path) and found.path != "/etc":
            return [
                Risk(
                    "system_permissions",
                    "critical",
                    f"Command '{change}' on '{target.text}' lets every user rewrite a file the node needs to boot or log in - requires approval",
                    ("Check the mode first: /etc/shadow is 0640 or 0000, /etc/passwd 0644, /etc/sudoers 0440",),
                )
            ]
        if (recursive and world) or (found.kind in {"system", "home"} and world):
            return [
                Risk(
                    "system_permissions",
                    "warning",
                    f"Command '{change}' on '{target.text}' makes files world-writable - review before running",
                    ("Avoid world-writable modes: use 755 for directories and 644 for files",),
                )
            ]
        if name == "chmod" and _SETUID.match(spec) and not recursive:
            return [
                Risk(
                    "system_permissions",
                    "warning",
                    f"Command '{change}' on '{target.text}' sets a setuid/setgid bit - review before running",
                )
            ]
    return []


def _user_target(inv: Invocation) -> str:
    words = [a for a in inv.args if not a.startswith("-")]
    return words[-1] if words else ""


_NO_LOGIN = re.compile(r"^(?:/usr)?(?:/s?bin/)?(?:nologin|false)$")


def _shell(args: list[str]) -> str | None:
    """The login shell `usermod -s`/`chsh -s` sets."""
    for i, a in enumerate(args):
        if a in {"-s", "--shell"} and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--shell="):
            return a.split("=", 1)[1]
    return None


def account_risks(inv: Invocation) -> list[Risk] | None:
    name, args = inv.name, inv.args
    user = _user_target(inv)
    if name in {"userdel", "deluser"}:
        if user == "root":
            return [Risk("account_change", "critical", "Command deletes the root account - requires approval")]
        if has_flag(args, "-r") or has_flag(args, "--remove") or "--remove-home" in args or "--remove-all-files" in args:
            return [
                Risk(
                    "account_change",
                    "critical",
                    f"Command '{name} {' '.join(args)}' deletes user '{user}' and their home directory - requires approval",
                    (f"Archive the home directory first (tar -czf {user}-home.tgz ~{user}), or drop -r to keep it",),
                )
            ]
        return [
            Risk(
                "account_change",
                "warning",
                f"Command '{name}' deletes user '{user}' - review before running",
                (f"Lock the account instead: usermod -L {user}",),
            )
        ]
    if name in {"usermod", "chsh"} and (shell := _shell(args)) is not None and _NO_LOGIN.match(shell):
        level: Severity = "critical" if user in {"root", ""} or user == shell else "warning"
        who = "root (or the current user)" if user in {"", shell} else f"'{user}'"
        return [
            Risk(
                "account_change",
                level,
                f"Command '{name} {' '.join(args)}' gives {who} a shell that refuses logins - {approval_phrase(level)}",
                ("Lock a service account's password instead (usermod -L USER); never change root's shell to nologin",),
            )
        ]
    if name in {"passwd", "usermod", "chage"}:
        locks = (
            has_flag(args, "-d")
            or has_flag(args, "-l")
            or has_flag(args, "-L")
            or has_flag(args, "--lock")
            or has_flag(args, "--delete")
            or has_flag(args, "-e")
            or has_flag(args, "--expire*")
        )
        if (
            name == "usermod"
            and (has_flag(args, "-G") or has_flag(args, "--groups"))
            and not (has_flag(args, "-a") or has_flag(args, "--append"))
        ):
            return [
                Risk(
                    "account_change",
                    "warning",
                    f"Command 'usermod -G' without -a replaces every supplementary group of '{user}' (sudo included) - review before running",
                    ("Add -a to append the group: usermod -aG GROUP USER",),
                )
            ]
        if (locks and name != "chage") or (name == "chage" and has_flag(args, "-E")):
            sev: Severity = "critical" if user in {"root", ""} else "warning"
            who = f"'{user}'" if user else "the current user (root when run with sudo)"
            return [
                Risk(
                    "account_change",
                    sev,
                    f"Command '{name} {' '.join(args)}' locks, expires or removes the password of {who} - "
                    + ("requires approval" if sev == "critical" else "review before running"),
                )
            ]
    return None


def crontab_risks(inv: Invocation) -> list[Risk] | None:
    args = inv.args
    files = [a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1 : i] != ["-u"]]
    if has_flag(args, "-r") or "--remove" in args or files[:1] == ["/dev/null"]:
        if has_flag(args, "-i"):
            return [
                Risk(
                    "account_change",
                    "warning",
                    "Command 'crontab -ri' deletes the user's cron table (after a prompt) - review before running",
                )
            ]
        return [
            Risk(
                "account_change",
                "critical",
                f"Command 'crontab {'/dev/null' if files[:1] == ['/dev/null'] else '-r'}' deletes every cron job of the user "
                "without asking - requires approval",
                ("Back the table up first: crontab -l > crontab.backup; edit single jobs with crontab -e",),
            )
        ]
    if files and files[0] != "-" and not has_flag(args, "-l"):
        return [
            Risk(
                "account_change",
                "warning",
                f"Command 'crontab {files[0]}' replaces the user's whole cron table - review before running",
                ("Back the table up first: crontab -l > crontab.backup",),
            )
        ]
    return None


_GROUPS = tool("groupdel", "delgroup", "gpasswd")

# fmt: off
RULES: tuple[Rule, ...] = (
    Rule("users.groupdel", _GROUPS, (), "warning", "deletes a group or removes its members", flags=(), unless=("--help", "-a", "--add"), type="account_change"),
)
# fmt: on

PACK = Pack(
    name="users",
    summary="chmod/chown/chgrp/setfacl on system paths, userdel -r, passwd/usermod locks, crontab -r",
    rules=RULES,
    handlers={
        "chmod": permission_risks,
        "chown": permission_risks,
        "chgrp": permission_risks,
        "userdel": account_risks,
        "deluser": account_risks,
        "passwd": account_risks,
        "usermod": account_risks,
        "chage": account_risks,
        "chsh": account_risks,
        "crontab": crontab_risks,
        "setfacl": lambda inv: _acl_risks(inv),
        "chattr": lambda inv: _acl_risks(inv),
    },
)


def _acl_risks(inv: Invocation) -> list[Risk] | None:
    if not (has_flag(inv.args, "-R") or has_flag(inv.args, "--recursive")):
        return None
    for w in inv.argv[1:]:
        if w.text.startswith("/") or w.text.startswith("~"):
            found = place(w, inv.cwd)
            if _os_owned(found):
                return [
                    Risk(
                        "system_permissions",
                        "critical",
                        f"Command '{inv.name} -R' on '{w.text}' rewrites access control of {REASON[found.kind]} - requires approval",
                    )
                ]
    return None
