"""Risk rules: what one unwrapped simple command can destroy, and how badly.

Pure functions over argv words; parsing and unwrapping (sudo, env, sh -c, ...) live in
`orchestrator.core.analysis`. Each rule returns `Risk` values; the analysis turns them into
findings. The severity contract (the corpus in tests/unit/analysis_corpus.py holds it):

Paths (rm -r, find -delete, chmod/chown -R) are classified first:
  root      `/`, `/*`, `/.`, `//`, `/..`                          -> critical
  home      `~`, `~/`, `~user`, `$HOME`, `${HOME}/*`, `/root`,
            `/home/bob`                                            -> critical
  system    any top-level dir (`/data`), two levels under a system top
            (`/etc/nginx`, `/var/www`, `/home`), or a child of /var/lib,
            /usr/lib, /usr/local, /usr/share (`/var/lib/mysql`)     -> critical
  broad     `.`, `..`, `*`, `./*`, `../..` (whole working dir)     -> warning
  dynamic   built from a variable other than HOME (`$DIR/*`)       -> warning
  other     any other absolute or home path (`/var/www/app/cache`) -> warning
  scratch   under /tmp, /var/tmp, /dev/shm (`/tmp/build`)          -> info
  relative  a named relative path (`./build`, `node_modules`)      -> info
A trailing `/*` or `/.*` means "the contents of" and classifies as the directory itself.

rm: recursive (-r/-R/--recursive) uses the table above; `--no-preserve-root` is critical.
  Non-recursive rm is a warning on root/system paths and nothing otherwise. `xargs rm -r`
  with unknown input is a warning; fed by `find ROOT`, it is rated like `find ROOT -delete`.
find: `-delete` or `-exec rm/unlink/shred` is critical when a root is root/home/system, else a
  warning (even under /tmp: find deletes by pattern across a whole tree).
Devices: mkfs*, mkswap, wipefs, blkdiscard, partition tools, dd of=, tee, cp or shred onto a
  block device, and `> /dev/sda` are critical; mkfs on an image file is a warning.
Power: shutdown/reboot/halt/poweroff, init 0/1/6, systemctl reboot/poweroff/rescue/... and
  writes to /proc/sysrq-trigger are critical; `shutdown -c` is nothing.
Services: systemctl stop/disable/mask/kill, service X stop, /etc/init.d/X stop are warnings;
  critical for units that carry remote access (ssh, sshd, networking, NetworkManager, ...).
Permissions: chmod/chown/chgrp -R on root/home/system is critical; -R with a world-writable
  mode elsewhere, or a non-recursive change on `/` or a system dir, is a warning.
git push: --force/-f/+refspec is a warning, critical onto main/master/production;
  --force-with-lease is info, a warning onto those branches; --delete/:branch/--mirror warning.
  `git clean -f` with -d or -x is a warning.
SQL through a client (-c/-e/--query/positional SQL, heredoc or echo piped in): DROP
  TABLE/DATABASE/SCHEMA, TRUNCATE, DELETE without WHERE are critical; other DROPs, UPDATE
  without WHERE and ALTER TABLE ... DROP are warnings. Redis FLUSHALL/FLUSHDB and Mongo
  dropDatabase()/drop()/deleteMany({}) are critical.
Infrastructure: terraform/tofu destroy (or apply -destroy), pulumi destroy, and kubectl delete
  of namespaces/nodes/PVs/CRDs or with --all/-A are critical; other kubectl delete, -target
  destroys, kubectl drain and helm uninstall are warnings; any of them with --dry-run is nothing.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[Severity, int] = {"info": 1, "warning": 2, "critical": 3}

PathKind = Literal["root", "home", "system", "broad", "dynamic", "other", "scratch", "relative"]


@dataclass(frozen=True, slots=True)
class Word:
    """One argv word after quote removal; `dynamic` if it holds a parameter or substitution."""

    text: str
    dynamic: bool = False
    substituted: frozenset[str] = frozenset()  # programs run by $(...) / <(...) inside the word


@dataclass(frozen=True, slots=True)
class Risk:
    type: str
    severity: Severity
    message: str
    suggestions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Invocation:
    """An unwrapped command: argv[0] is the program that really runs."""

    argv: tuple[Word, ...]
    via_xargs: bool = False  # more arguments arrive on stdin
    input_roots: tuple[Word, ...] = ()  # roots of a `find` whose output feeds xargs


def program(word: Word) -> str:
    return posixpath.basename(word.text) or word.text


def _worst(severities: Sequence[Severity]) -> Severity:
    return max(severities, key=SEVERITY_RANK.__getitem__)


def _approval(severity: Severity) -> str:
    return "requires approval" if severity == "critical" else "review before running"


# --- paths -------------------------------------------------------------------------------

_SYSTEM_TOP = frozenset(
    [
        "bin",
        "boot",
        "dev",
        "etc",
        "home",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "media",
        "mnt",
        "opt",
        "proc",
        "root",
        "run",
        "sbin",
        "snap",
        "srv",
        "sys",
        "usr",
        "var",
    ]
)
_SYSTEM_SECOND = frozenset({"/var/lib", "/usr/lib", "/usr/local", "/usr/share"})  # their children are system too
_SCRATCH = ("/tmp", "/var/tmp", "/dev/shm")
_HOME_VAR = re.compile(r"^(?:\$HOME|\$\{HOME\})(?=/|$)")
_PATH_REASON: dict[PathKind, str] = {
    "root": "the root filesystem",
    "home": "a home directory",
    "system": "a system or top-level path",
    "broad": "the working directory or a parent of it",
    "dynamic": "a path built from a variable, which may expand to /",
    "other": "a path outside temporary directories",
    "scratch": "a temporary directory",
    "relative": "a relative path",
}


def contents_base(text: str) -> str:
    """Strip trailing `/*`, `/.*`, `/.` and slashes: `/var/www/*` -> `/var/www`, `/*` -> `/`."""
    absolute = text.startswith("/")
    path = re.sub(r"/{2,}", "/", text)
    while True:
        stripped = re.sub(r"(?:/\.?\*|/\.|/)$", "", path)
        if stripped in {"*", ".*"}:
            stripped = ""
        if stripped == path:
            break
        path = stripped
    return path or ("/" if absolute else ".")


def classify_path(word: Word) -> PathKind:
    text = word.text
    if word.dynamic:
        text = _HOME_VAR.sub("~", text)
        if "$" in text or "`" in text:
            return "dynamic"
    if text in {"*", ".*"}:
        return "broad"
    path = contents_base(text)
    if path.startswith("~"):
        return "other" if path.partition("/")[2].strip("/") else "home"
    if path.startswith("/"):
        norm = posixpath.normpath(path)
        parts = [p for p in norm.split("/") if p]
        if not parts:
            return "root"
        if norm in _SCRATCH:
            return "other"
        if any(norm.startswith(s + "/") for s in _SCRATCH):
            return "scratch"
        if norm == "/root" or (len(parts) == 2 and parts[0] == "home"):
            return "home"
        if len(parts) == 1 or (len(parts) == 2 and parts[0] in _SYSTEM_TOP):
            return "system"
        if len(parts) == 3 and posixpath.dirname(norm) in _SYSTEM_SECOND:
            return "system"
        return "other"
    norm = posixpath.normpath(path)
    if all(p == ".." for p in norm.split("/")) or norm == ".":
        return "broad"
    return "relative"


_BLOCK_DEVICE = re.compile(
    r"^/dev/(?:(?:sd|hd|vd|xvd)[a-z]+\d*|nvme\d+n\d+(?:p\d+)?|mmcblk\d+(?:p\d+)?|md\d+|dm-\d+|loop\d+"
    r"|nbd\d+|rbd\d+|zd\d+|sr\d+|r?disk\d+(?:s\d+)?|mem|kmem|port|(?:mapper|disk|block|md)/.+)$"
)


def is_block_device(text: str) -> bool:
    return bool(_BLOCK_DEVICE.match(posixpath.normpath(text) if text.startswith("/") else text))


# --- rm and find ----------------------------------------------------------------------------

_RECURSIVE_RM: dict[PathKind, Severity | None] = {
    "root": "critical",
    "home": "critical",
    "system": "critical",
    "broad": "warning",
    "dynamic": "warning",
    "other": "warning",
    "scratch": "info",
    "relative": "info",
}


def _rm_suggestions(kind: PathKind, target: str, recursive: bool) -> tuple[str, ...]:
    if not recursive:
        return (f"Back up '{target}' first, e.g. cp -a {target} {target}.bak",)
    if kind == "root":
        return ("Name the exact directory to delete instead of '/'",)
    if kind == "dynamic":
        var = re.search(r"\$\{?(\w+)", target)
        name = var.group(1) if var else "DIR"
        return (f'Guard the variable so an empty value cannot expand to /: "${{{name}:?}}" instead of "${name}"',)
    preview = f"List what would be removed first: ls -la {target}"
    if kind in {"home", "system", "broad"}:
        base = "." if kind == "broad" else contents_base(target).rstrip("/")
        return (f"Use 'rm -rf {base}/tmp/*' for safer scoped deletion instead of '{target}'", preview)
    return (preview,) if kind == "other" else ()


def find_delete_severity(roots: Sequence[Word]) -> Severity:
    kinds = {classify_path(r) for r in roots}
    return "critical" if kinds & {"root", "home", "system"} else "warning"


def _rm(inv: Invocation) -> list[Risk]:
    recursive = force = no_preserve = False
    targets: list[Word] = []
    options_done = False
    for w in inv.argv[1:]:
        t = w.text
        if not options_done and t == "--":
            options_done = True
        elif not options_done and t.startswith("--"):
            recursive |= t == "--recursive"
            force |= t == "--force"
            no_preserve |= t == "--no-preserve-root"
        elif not options_done and t.startswith("-") and len(t) > 1:
            recursive |= "r" in t or "R" in t
            force |= "f" in t
        elif not (inv.via_xargs and t == "{}"):  # xargs -I{} fills the placeholder from its input
            targets.append(w)
    flag = "rm -rf" if recursive and force else "rm -r" if recursive else "rm -f" if force else "rm"
    if no_preserve:
        return [
            Risk(
                "destructive_command",
                "critical",
                f"Command contains '{flag} --no-preserve-root' - requires approval",
                ("Remove --no-preserve-root and name the exact directory to delete",),
            )
        ]
    if inv.via_xargs and inv.input_roots:
        sev = find_delete_severity(inv.input_roots)
        roots = " ".join(r.text for r in inv.input_roots)
        return [
            Risk(
                "destructive_command",
                sev,
                f"Command pipes files found under '{roots}' into '{flag}' - {_approval(sev)}",
                (f"Review the list first: run the find under '{roots}' without '| xargs rm'",),
            )
        ]
    risks: list[Risk] = []
    if inv.via_xargs and recursive:
        risks.append(
            Risk(
                "destructive_command",
                "warning",
                f"Command runs '{flag}' on paths read from its input - review before running",
                ("Review the input list first: run the pipeline without '| xargs rm'",),
            )
        )
    best: tuple[Severity, PathKind, Word] | None = None
    for target in targets:
        kind = classify_path(target)
        rated = _RECURSIVE_RM[kind] if recursive else ("warning" if kind in {"root", "system"} else None)
        if rated and (best is None or SEVERITY_RANK[rated] > SEVERITY_RANK[best[0]]):
            best = (rated, kind, target)
    if best:
        sev, kind, target = best
        if sev == "info":
            message = f"Command contains '{flag}' on '{target.text}' ({_PATH_REASON[kind]})"
        else:
            message = f"Command contains '{flag}' on '{target.text}' ({_PATH_REASON[kind]}) - {_approval(sev)}"
        risks.append(Risk("destructive_command", sev, message, _rm_suggestions(kind, target.text, recursive)))
    return risks


_EXPR_START = re.compile(r"^(?:-.+|\(|\)|!|,)$")
FIND_DELETERS = frozenset({"rm", "unlink", "shred"})


def find_parts(argv: Sequence[Word]) -> tuple[list[Word], list[list[Word]], bool]:
    """Split a find invocation into roots, the argv of each -exec/-ok, and whether -delete is set."""
    i = 1
    while i < len(argv) and (argv[i].text in {"-H", "-L", "-P"} or argv[i].text.startswith("-O")):
        i += 1
    if i < len(argv) and argv[i].text == "-D":
        i += 2
    roots: list[Word] = []
    while i < len(argv) and not _EXPR_START.match(argv[i].text):
        roots.append(argv[i])
        i += 1
    execs: list[list[Word]] = []
    delete = False
    while i < len(argv):
        t = argv[i].text
        if t == "-delete":
            delete = True
        elif t in {"-exec", "-execdir", "-ok", "-okdir"}:
            cmd: list[Word] = []
            i += 1
            while i < len(argv) and argv[i].text not in {";", "+"}:
                cmd.append(argv[i])
                i += 1
            if cmd:
                execs.append(cmd)
        i += 1
    return roots or [Word(".")], execs, delete


def _find(inv: Invocation) -> list[Risk]:
    roots, execs, delete = find_parts(inv.argv)
    deleters = [c for c in execs if program(c[0]) in FIND_DELETERS]
    if not delete and not deleters:
        return []
    sev = find_delete_severity(roots)
    how = "-delete" if delete else f"-exec {deleters[0][0].text}"
    where = " ".join(r.text for r in roots)
    return [
        Risk(
            "destructive_command",
            sev,
            f"Command contains 'find {where} ... {how}' - {_approval(sev)}",
            (f"Run the same find without '{how}' first to review the matches", "Narrow the search root and -name"),
        )
    ]


# --- block devices -------------------------------------------------------------------------

_DEVICE_CHECK = "Double-check the target with lsblk: writing to a block device destroys its data"
_MKFS = re.compile(r"^(?:mkfs(?:\..+)?|mke2fs|mkswap|mkdosfs|mkntfs|mkfs_\w+)$")
_PARTITION_TOOLS = frozenset({"fdisk", "sfdisk", "cfdisk", "gdisk", "sgdisk", "parted"})
_LISTING = frozenset({"-l", "--list", "-d", "--dump", "-p", "--print", "print", "-s", "--show", "-V", "--version"})


def _device_risk(program_name: str, device: str, what: str) -> Risk:
    return Risk("device_write", "critical", f"Command '{program_name}' {what} '{device}' - requires approval", (_DEVICE_CHECK,))


def _devices(inv: Invocation) -> list[Risk]:
    name = program(inv.argv[0])
    args = [w.text for w in inv.argv[1:]]
    devices = [a for a in args if is_block_device(a)]
    if name == "dd":
        for a in args:
            if a.startswith("of=") and is_block_device(a[3:]):
                return [_device_risk("dd", a[3:], "writes raw data onto block device")]
        return []
    if name in {"tee", "cp"} and devices:
        return [_device_risk(name, devices[0], "writes onto block device")]
    if name == "wipefs" and ("-n" in args or "--no-act" in args):
        return []
    if name in _PARTITION_TOOLS and set(args) & _LISTING:
        return []
    if _MKFS.match(name) or name in {"wipefs", "blkdiscard"} | _PARTITION_TOOLS:
        if devices:
            return [_device_risk(name, devices[0], "erases block device")]
        targets = [a for a in args if not a.startswith("-")]
        if not targets:
            return []
        return [
            Risk(
                "device_write",
                "warning",
                f"Command '{name}' formats or erases '{targets[-1]}' - review before running",
                (_DEVICE_CHECK,),
            )
        ]
    if name == "shred":
        targets = [a for a in args if not a.startswith("-")]
        if devices:
            return [_device_risk(name, devices[0], "overwrites block device")]
        if targets:
            return [Risk("destructive_command", "warning", f"Command 'shred' destroys '{targets[0]}' - review before running")]
    if name == "cryptsetup" and set(args) & {"luksFormat", "erase", "luksErase", "reencrypt"}:
        return [_device_risk(name, devices[0] if devices else " ".join(args), "reformats encrypted volume")]
    if name in {"lvremove", "vgremove", "pvremove"} or (name in {"zpool", "zfs"} and args[:1] == ["destroy"]):
        return [Risk("device_write", "critical", f"Command '{name} {' '.join(args)}' destroys a volume - requires approval")]
    return []


def redirect_risks(op: str, target: str) -> list[Risk]:
    """Risks of a redirection: writing onto a block device or the kernel's sysrq trigger."""
    if not op.endswith(">") and op not in {">>", "&>>", ">|", "<>", ">&"}:
        return []
    if is_block_device(target):
        return [
            Risk(
                "device_write",
                "critical",
                f"Command redirects output onto block device '{target}' - requires approval",
                (_DEVICE_CHECK,),
            )
        ]
    if target == "/proc/sysrq-trigger":
        return [Risk("power", "critical", "Command writes to /proc/sysrq-trigger (can crash or reboot the node)")]
    return []


# --- power and services -------------------------------------------------------------------

_POWER_SUGGESTION = "Drain the node and schedule the restart with approval, e.g. 'shutdown -r +5'"
_REMOTE_ACCESS_UNITS = frozenset(
    ["ssh", "sshd", "networking", "network", "NetworkManager", "systemd-networkd", "wpa_supplicant", "firewalld"]
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
_SYSTEMCTL_VALUE_OPTS = frozenset(
    ["-H", "--host", "-M", "--machine", "-t", "--type", "-s", "--signal", "-p", "--property", "-n", "--lines", "-o", "--output"]
)


def _power(command: str) -> Risk:
    return Risk("power", "critical", f"Command '{command}' takes the node down - requires approval", (_POWER_SUGGESTION,))


def _service_stop(verb: str, unit: str) -> Risk:
    bare = unit.removesuffix(".service").removesuffix(".socket")
    if bare in _REMOTE_ACCESS_UNITS:
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


def _power_and_services(inv: Invocation) -> list[Risk]:
    name = program(inv.argv[0])
    args = [w.text for w in inv.argv[1:]]
    if name == "shutdown":
        return [] if {"-c", "-k", "--help"} & set(args) else [_power("shutdown " + " ".join(args))]
    if name in {"reboot", "halt", "poweroff"}:
        return [] if "--help" in args else [_power(name)]
    if name in {"init", "telinit"}:
        return [_power(f"{name} {args[0]}")] if args[:1] and args[0] in {"0", "1", "6", "s", "S"} else []
    if name == "systemctl":
        positional: list[str] = []
        skip = False
        for a in args:
            if skip:
                skip = False
            elif a in _SYSTEMCTL_VALUE_OPTS:
                skip = True
            elif not a.startswith("-"):
                positional.append(a)
        if not positional:
            return []
        verb, units = positional[0], positional[1:]
        if verb in _SYSTEMCTL_POWER:
            return [_power(f"systemctl {verb}")]
        if verb == "isolate" and any(u.split(".")[0] in {"rescue", "emergency", "poweroff", "reboot", "halt"} for u in units):
            return [_power(f"systemctl isolate {units[0]}")]
        if verb in {"stop", "disable", "mask", "kill"}:
            return [_service_stop(verb, u) for u in units[:1]]
        return []
    if name in {"service", "rc-service", "invoke-rc.d"} and len(args) >= 2 and args[1] == "stop":
        return [_service_stop("stop", args[0])]
    if inv.argv[0].text.startswith("/etc/init.d/") and args[:1] == ["stop"]:
        return [_service_stop("stop", name)]
    if name == "update-rc.d" and len(args) >= 2 and args[1] in {"disable", "remove"}:
        return [_service_stop("disable", args[0])]
    if name == "chkconfig" and len(args) >= 2 and args[1] == "off":
        return [_service_stop("disable", args[0])]
    return []


# --- permissions -------------------------------------------------------------------------

_CHMOD_OPTIONS = frozenset({"-R", "-c", "-f", "-v", "--recursive", "--changes", "--silent", "--quiet", "--verbose"})
_WORLD_WRITABLE = re.compile(r"^(?:[0-7]?[0-7][0-7][2367]|[ugo]*[ao][ugo]*[+=][rwxXst]*w[rwxXst]*)$")


def _permissions(inv: Invocation) -> list[Risk]:
    name = program(inv.argv[0])
    recursive = False
    positional: list[Word] = []
    for w in inv.argv[1:]:
        t = w.text
        if t == "--recursive" or re.fullmatch(r"-[cfvhHLP]*R[cfvhHLPR]*", t):
            recursive = True
        elif t in _CHMOD_OPTIONS or t.startswith("--") or (name != "chmod" and t.startswith("-")):
            continue
        else:
            positional.append(w)
    if len(positional) < 2:
        return []
    spec, targets = positional[0].text, positional[1:]
    kinds = [(classify_path(t), t) for t in targets]
    change = f"{name} {'-R ' if recursive else ''}{spec}"
    world = name == "chmod" and any(_WORLD_WRITABLE.match(part) for part in spec.split(","))
    for kind, target in kinds:
        if recursive and kind in {"root", "home", "system"}:
            return [
                Risk(
                    "system_permissions",
                    "critical",
                    f"Command '{change}' on '{target.text}' rewrites permissions of {_PATH_REASON[kind]} - requires approval",
                    (f"Scope '{name}' to the application directory, not '{target.text}'",)
                    + (("Avoid 777: use 755 for directories and 644 for files",) if world else ()),
                )
            ]
    for kind, target in kinds:
        if (recursive and world) or (kind in {"root", "system"} and (world or kind == "root")):
            return [
                Risk(
                    "system_permissions",
                    "warning",
                    f"Command '{change}' on '{target.text}' - review before running",
                    ("Avoid world-writable modes: use 755 for directories and 644 for files",),
                )
            ]
    return []


# --- git ------------------------------------------------------------------------------------

_PROTECTED_BRANCHES = frozenset({"main", "master", "production"})
_GIT_VALUE_OPTS = frozenset({"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--exec-path"})
_PUSH_VALUE_OPTS = frozenset({"-o", "--push-option", "--repo", "--receive-pack", "--exec"})


def _git(inv: Invocation) -> list[Risk]:
    args = [w.text for w in inv.argv[1:]]
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in _GIT_VALUE_OPTS else 1
    if i >= len(args):
        return []
    sub, rest = args[i], args[i + 1 :]
    if sub == "clean":
        flags = "".join(a.lstrip("-") for a in rest if a.startswith("-") and not a.startswith("--"))
        forced = "f" in flags or "--force" in rest
        if forced and ("d" in flags or "x" in flags) and "n" not in flags and "--dry-run" not in rest:
            return [
                Risk(
                    "destructive_command",
                    "warning",
                    f"Command 'git clean {' '.join(rest)}' deletes untracked files - review before running",
                    ("Run 'git clean -n' first to list what would be deleted",),
                )
            ]
        return []
    if sub != "push":
        return []
    force = lease = delete = mirror = False
    positional: list[str] = []
    j = 0
    while j < len(rest):
        a = rest[j]
        if a in _PUSH_VALUE_OPTS:
            j += 1
        elif a == "--force":
            force = True
        elif a.startswith("--force-with-lease") or a == "--force-if-includes":
            lease = True
        elif a in {"--delete", "-d"}:
            delete = True
        elif a == "--mirror":
            mirror = True
        elif a.startswith("-") and not a.startswith("--") and "f" in a:
            force = True
        elif not a.startswith("-"):
            positional.append(a)
        j += 1
    refspecs = positional[1:]
    force |= any(r.startswith("+") for r in refspecs)
    delete |= any(r.startswith(":") for r in refspecs)
    branches = {r.lstrip("+").split(":")[-1].removeprefix("refs/heads/") for r in refspecs}
    protected = sorted(branches & _PROTECTED_BRANCHES)
    onto = f" onto '{protected[0]}'" if protected else ""
    cmd = "git push " + " ".join(rest)
    if force or lease:
        if force:
            sev: Severity = "critical" if protected else "warning"
            tips = ["Use --force-with-lease instead of --force"]
        else:
            sev = "warning" if protected else "info"
            tips = []
        if protected:
            tips.append("Push to a feature branch and open a merge request instead of rewriting the shared branch")
        approval = f" - {_approval(sev)}" if sev != "info" else ""
        return [Risk("force_push", sev, f"Command '{cmd}' rewrites remote history{onto}{approval}", tuple(tips))]
    if delete or mirror:
        sev = "critical" if protected else "warning"
        what = "mirrors (and may delete) remote refs" if mirror else "deletes a remote branch"
        named = f" ('{protected[0]}')" if protected else ""
        return [Risk("force_push", sev, f"Command '{cmd}' {what}{named} - {_approval(sev)}")]
    return []


# --- databases ----------------------------------------------------------------------------

SQL_CLIENTS: dict[str, frozenset[str]] = {
    "psql": frozenset({"-c", "--command"}),
    "usql": frozenset({"-c", "--command"}),
    "mysql": frozenset({"-e", "--execute"}),
    "mariadb": frozenset({"-e", "--execute"}),
    "cqlsh": frozenset({"-e", "--execute"}),
    "clickhouse-client": frozenset({"-q", "--query"}),
    "sqlcmd": frozenset({"-Q", "-q", "--query"}),
    "snowsql": frozenset({"-q", "--query"}),
    "trino": frozenset({"--execute"}),
    "duckdb": frozenset({"-c", "-s", "-cmd"}),
    "sqlite3": frozenset({"-cmd"}),
}
_POSITIONAL_SQL = frozenset({"sqlite3", "duckdb"})  # client DB [SQL ...]
_SQLITE_VALUE_OPTS = frozenset({"-init", "-separator", "-newline", "-nullvalue", "-vfs", "-maxsize", "-mmap"})


def sql_texts(inv: Invocation) -> list[str]:
    """SQL passed on the command line of a database client (not stdin)."""
    name = program(inv.argv[0])
    args = [w.text for w in inv.argv[1:]]
    if name == "clickhouse" and args[:1] == ["client"]:
        name, args = "clickhouse-client", args[1:]
    flags = SQL_CLIENTS.get(name)
    if flags is None:
        return []
    texts: list[str] = []
    positional: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in flags:
            if i + 1 < len(args):
                texts.append(args[i + 1])
            i += 2
            continue
        long_value = next((a[len(f) + 1 :] for f in flags if f.startswith("--") and a.startswith(f + "=")), None)
        short_value = next((a[2:] for f in flags if len(f) == 2 and a.startswith(f) and len(a) > 2), None)
        if long_value is not None or short_value is not None:
            texts.append(long_value if long_value is not None else str(short_value))
        elif a in _SQLITE_VALUE_OPTS:
            i += 1
        elif not a.startswith("-"):
            positional.append(a)
        i += 1
    if name in _POSITIONAL_SQL:
        texts.extend(positional[1:])
    return texts


def is_sql_client(inv: Invocation) -> bool:
    name = program(inv.argv[0])
    return name in SQL_CLIENTS or (name == "clickhouse" and [w.text for w in inv.argv[1:2]] == ["client"])


# Unterminated comments and literals run to the end, so every pattern is linear.
_SQL_NOISE = re.compile(r"--[^\n]*|/\*.*?(?:\*/|\Z)|'(?:[^']|'')*'?|\$\$.*?(?:\$\$|\Z)", re.S)
_SQL_CRITICAL_DROP = re.compile(r"\bDROP\s+(?:TABLE|DATABASE|SCHEMA|TABLESPACE|OWNED)\b", re.I)
_SQL_DROP = re.compile(r"\bDROP\s+(?:[A-Z]+\s+)?[A-Z]+\b", re.I)
_SQL_DELETE = re.compile(r"\bDELETE\s+(?:FROM\s+)?[\w.\"`\[\]]+", re.I)
_SQL_UPDATE = re.compile(r"\bUPDATE\s+[\w.\"`\[\]]+\s+SET\b", re.I)
_SQL_TRUNCATE = re.compile(r"\bTRUNCATE\b", re.I)
_SQL_WHERE = re.compile(r"\bWHERE\b", re.I)
_SQL_SUGGESTIONS = (
    "Add a WHERE clause so the statement only touches the intended rows",
    "Back up the table first (pg_dump -t / mysqldump) or run it inside BEGIN; ... ROLLBACK; to check the row count",
)


def sql_risks(sql: str) -> list[Risk]:
    """Risks of SQL text: DROP, TRUNCATE, DELETE/UPDATE without WHERE (comments and literals ignored)."""
    risks: list[Risk] = []
    for raw in _SQL_NOISE.sub(" '' ", sql[:100_000]).split(";"):
        stmt = " ".join(raw.split())
        if not stmt:
            continue
        shown = stmt if len(stmt) <= 80 else stmt[:77] + "..."
        has_where = _SQL_WHERE.search(stmt) is not None
        if m := _SQL_CRITICAL_DROP.search(stmt):
            risks.append(
                Risk("destructive_sql", "critical", f"SQL '{shown}' contains '{m.group(0)}' - requires approval", _SQL_SUGGESTIONS[1:])
            )
        elif _SQL_TRUNCATE.search(stmt):
            risks.append(Risk("destructive_sql", "critical", f"SQL '{shown}' empties a table - requires approval", _SQL_SUGGESTIONS[1:]))
        elif _SQL_DELETE.search(stmt) and not has_where:
            risks.append(
                Risk("destructive_sql", "critical", f"SQL '{shown}' deletes every row (no WHERE) - requires approval", _SQL_SUGGESTIONS)
            )
        elif _SQL_UPDATE.search(stmt) and not has_where:
            risks.append(
                Risk("destructive_sql", "warning", f"SQL '{shown}' updates every row (no WHERE) - review before running", _SQL_SUGGESTIONS)
            )
        elif m := _SQL_DROP.search(stmt):
            risks.append(
                Risk("destructive_sql", "warning", f"SQL '{shown}' contains '{m.group(0)}' - review before running", _SQL_SUGGESTIONS[1:])
            )
    return risks


_MONGO_DESTRUCTIVE = re.compile(r"dropDatabase\s*\(|\.drop\s*\(\s*\)|\.(?:deleteMany|remove)\s*\(\s*\{\s*\}\s*\)")


def _nosql(inv: Invocation) -> list[Risk]:
    name = program(inv.argv[0])
    args = [w.text for w in inv.argv[1:]]
    if name == "redis-cli":
        hit = next((a for a in args if a.upper() in {"FLUSHALL", "FLUSHDB"}), None)
        if hit:
            return [
                Risk(
                    "destructive_sql",
                    "critical",
                    f"Command 'redis-cli {hit}' deletes every key - requires approval",
                    ("Back up with 'redis-cli --rdb' first",),
                )
            ]
        return []
    for i, a in enumerate(args):
        script = args[i + 1] if a == "--eval" and i + 1 < len(args) else a.removeprefix("--eval=") if a.startswith("--eval=") else None
        if script and _MONGO_DESTRUCTIVE.search(script):
            return [
                Risk(
                    "destructive_sql",
                    "critical",
                    f"Command '{name} --eval' drops or empties a collection - requires approval",
                    ("Back up with mongodump first and pass a filter to deleteMany",),
                )
            ]
    return []


# --- infrastructure ------------------------------------------------------------------------

_KUBECTL_VALUE_OPTS = frozenset(
    ["-n", "--namespace", "--context", "--kubeconfig", "--cluster", "--user", "-s", "--server", "--as", "--token", "--request-timeout"]
)
_KUBE_BROAD = frozenset(
    [
        "ns",
        "namespace",
        "namespaces",
        "node",
        "nodes",
        "no",
        "pv",
        "persistentvolume",
        "persistentvolumes",
        "crd",
        "crds",
        "customresourcedefinition",
        "customresourcedefinitions",
        "all",
    ]
)


def _dry_run(args: Sequence[str]) -> bool:
    return any(a == "--dry-run" or (a.startswith("--dry-run=") and a != "--dry-run=none") for a in args)


def _infra(inv: Invocation) -> list[Risk]:
    name = program(inv.argv[0])
    args = [w.text for w in inv.argv[1:]]
    if name in {"kubectl", "oc"}:
        positional: list[str] = []
        i = 0
        while i < len(args):
            if args[i] in _KUBECTL_VALUE_OPTS:
                i += 1
            elif not args[i].startswith("-"):
                positional.append(args[i])
            i += 1
        if not positional or _dry_run(args):
            return []
        cmd = f"{name} {' '.join(args)}"
        if positional[0] == "drain":
            return [Risk("infra_destroy", "warning", f"Command '{cmd}' evicts every pod from a node - review before running")]
        if positional[0] != "delete":
            return []
        kinds = {k.split("/")[0].lower() for p in positional[1:2] for k in p.split(",")}
        broad = bool(kinds & _KUBE_BROAD) or bool({"--all", "-A", "--all-namespaces"} & set(args))
        sev: Severity = "critical" if broad else "warning"
        return [
            Risk(
                "infra_destroy",
                sev,
                f"Command '{cmd}' deletes cluster resources - {_approval(sev)}",
                (f"Run '{cmd} --dry-run=client -o name' first to see what would be deleted",),
            )
        ]
    if name == "helm":
        if args[:1] and args[0] in {"uninstall", "delete", "del", "un"} and not _dry_run(args):
            return [
                Risk(
                    "infra_destroy",
                    "warning",
                    f"Command 'helm {' '.join(args)}' removes a release - review before running",
                    ("Run with --dry-run first",),
                )
            ]
        return []
    if name in {"terraform", "tofu", "terragrunt", "pulumi"}:
        positional = [a for a in args if not a.startswith("-")]
        destroy = positional[:1] == ["destroy"] or (positional[:1] == ["apply"] and "-destroy" in args)
        if not destroy or {"-help", "-h", "--help"} & set(args):
            return []
        targeted = any(a.startswith(("-target", "--target")) for a in args)
        sev = "warning" if targeted else "critical"
        return [
            Risk(
                "infra_destroy",
                sev,
                f"Command '{name} {' '.join(args)}' destroys managed infrastructure - {_approval(sev)}",
                (f"Run '{name} plan -destroy' first and review it" if name != "pulumi" else "Run 'pulumi preview --destroy' first",),
            )
        ]
    return []


# --- dispatch -----------------------------------------------------------------------------


def command_risks(inv: Invocation) -> list[Risk]:
    """Every risk of one unwrapped command (its redirections are checked separately)."""
    if not inv.argv:
        return []
    name = program(inv.argv[0])
    if inv.argv[0].text.startswith("/etc/init.d/"):
        return _power_and_services(inv)
    if name == "rm":
        return _rm(inv)
    if name == "find":
        return _find(inv)
    if name in {"chmod", "chown", "chgrp"}:
        return _permissions(inv)
    if name == "git":
        return _git(inv)
    if is_sql_client(inv):
        return [r for text in sql_texts(inv) for r in sql_risks(text)]
    if name in {"redis-cli", "mongo", "mongosh"}:
        return _nosql(inv)
    if name in {"kubectl", "oc", "helm", "terraform", "tofu", "terragrunt", "pulumi"}:
        return _infra(inv)
    return _power_and_services(inv) or _devices(inv)
