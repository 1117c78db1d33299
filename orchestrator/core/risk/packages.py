"""Packages pack: system package managers removing what the node needs, and registry unpublishes.

Critical: removing an essential package with apt/apt-get/aptitude, dpkg, yum/dnf/microdnf/tdnf,
rpm, zypper, pacman or apk (the C library, systemd/init, the kernel, openssh-server, sudo, the
shells and core utilities, the package manager itself, grub/shim; python3 with the Debian and
RHEL tools that run on it; musl/busybox on Alpine), also named by a glob (`'linux-image-*'`);
removing any package past its dependency checks (`rpm -e --nodeps`, `dpkg --force-all`/
`--force-depends`/`--force-remove-essential`, `pacman -Rdd`, `apt --allow-remove-essential`);
`npm unpublish` of a whole package.
Warning: removing any other package (`apt remove nginx`, `dnf remove httpd`, `snap remove`),
removing one versioned kernel image (`apt remove linux-image-5.15.0-91-generic`: check it is
not the running one), a package manager uninstalling itself or the distribution's Python
bindings (`npm uninstall -g npm`, `pip uninstall python-apt`), `npm unpublish PKG@VERSION`.
Safe: install, upgrade, update, list, search, `autoremove` (only what nothing needs), previews
(`apt-get -s remove`, `dnf remove --assumeno`, `rpm -e --test`), `pip uninstall` of an
ordinary package and a project's own `npm uninstall` (a virtualenv or node_modules, not the node).
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

from orchestrator.core.risk.table import Pack, has_flag, positionals, tool
from orchestrator.core.risk_types import Invocation, Risk, Severity, approval_phrase

# What a node cannot boot, log in or install packages without, as names or patterns.
ESSENTIAL = (
    "libc6",
    "libc-bin",
    "glibc",
    "glibc-common",
    "musl",
    "busybox",
    "systemd",
    "systemd-sysv",
    "init",
    "sysvinit-core",
    "openrc",
    "linux-image-*",
    "linux",
    "linux-lts",
    "kernel",
    "kernel-core",
    "openssh-server",
    "openssh",
    "sudo",
    "bash",
    "dash",
    "coreutils",
    "util-linux",
    "login",
    "passwd",
    "base-files",
    "apt",
    "dpkg",
    "rpm",
    "yum",
    "dnf",
    "zypper",
    "pacman",
    "apk-tools",
    "grub*",
    "shim*",
)
# apt, yum and dnf run on Python on Debian and RHEL: removing it takes the package manager with it.
_SYSTEM_PYTHON = ("python3", "python3-minimal", "python3-libs", "platform-python")
_PYTHON_MANAGERS = frozenset({"apt", "apt-get", "aptitude", "dpkg", "yum", "dnf", "microdnf", "tdnf", "rpm", "zypper"})
# One kernel among several, named with its version: routine clean-up of old kernels.
_ONE_KERNEL = re.compile(r"^(?:linux-image|kernel(?:-core)?)-\d")
_GLOB = re.compile(r"[*?\[]")

_APT = tool("apt", "apt-get", "aptitude", values="-o --option -c --config-file -t --target-release -a --host-architecture")
_YUM = tool(
    "yum",
    "dnf",
    "microdnf",
    "tdnf",
    "zypper",
    values="-c --config --installroot --releasever --enablerepo --disablerepo --repo --repoid -x --exclude -R --root",
)
_APK = tool("apk", values="-X --repository -p --root --arch --cache-dir")
_REMOVE_VERBS = frozenset({"remove", "purge", "erase", "rm", "del"})
# The options that only show what would be removed, per manager.
_PREVIEW = {
    "apt": ("-s", "--simulate", "--dry-run", "--just-print", "--no-act", "--recon"),
    "yum": ("--assumeno", "--dry-run", "-D"),
    "apk": ("-s", "--simulate"),
    "dpkg": ("--no-act", "--dry-run", "--simulate"),
    "rpm": ("--test",),
    "pacman": ("-p", "--print"),
}
_PYTHON_BINDINGS = frozenset({"pip", "python-apt", "dnf", "rpm", "libdnf", "dbus-python", "pygobject"})
_SELF = frozenset({"npm", "corepack", "yarn", "pnpm"})


def _bare(name: str) -> str:
    """`libc6:amd64`, `bash=5.1-6`, `nginx/jammy`: the package's name."""
    return re.split(r"[:=/]", name, maxsplit=1)[0].lower()


def _essential(name: str, manager: str) -> bool:
    names = ESSENTIAL + (_SYSTEM_PYTHON if manager in _PYTHON_MANAGERS else ())
    if _GLOB.search(name):  # `'linux-image-*'`, `'python3*'`: anything essential it matches
        return any(fnmatchcase(e, name) or fnmatchcase(e.replace("*", ""), name) for e in names)
    return not _ONE_KERNEL.match(name) and any(fnmatchcase(name, e) for e in names)


def _removal(inv: Invocation) -> tuple[list[str], bool] | None:
    """The packages a system package manager removes, and whether dependency checks are skipped;
    None when the command removes nothing (or only previews)."""
    name, args = inv.name, inv.args
    family = "apt" if name in _APT.names else "yum" if name in _YUM.names else name
    if any(has_flag(args, p) for p in _PREVIEW.get(family, ())):
        return None
    if name in _APT.names:
        words = positionals(args, _APT)
        if not words or words[0] not in {"remove", "purge"}:
            return None
        return words[1:], "--allow-remove-essential" in args or has_flag(args, "--force-remove-essential")
    if name in _YUM.names:
        words = positionals(args, _YUM)
        if not words or words[0] not in _REMOVE_VERBS:
            return None
        return words[1:], "--nodeps" in args
    if name == "apk":
        words = positionals(args, _APK)
        return (words[1:], "--force-broken-world" in args) if words[:1] == ["del"] else None
    packages = [a for a in args if not a.startswith("-")]
    if name == "dpkg":
        if not any(a in {"-r", "--remove", "-P", "--purge"} for a in args):
            return None
        forced = [f for a in args if a.startswith("--force-") for f in a.removeprefix("--force-").split(",")]
        return packages, bool({"all", "depends", "remove-essential", "remove-protected"} & set(forced))
    if name == "rpm":
        if not (has_flag(args, "-e") or "--erase" in args):
            return None
        return packages, "--nodeps" in args
    if name == "pacman":
        ops = [a for a in args if re.fullmatch(r"-R[a-zA-Z]*", a) or a == "--remove"]
        if not ops:
            return None
        skips = sum(a.count("d") for a in args if re.fullmatch(r"-[a-zA-Z]+", a)) + args.count("--nodeps")
        return packages, skips >= 2
    return None


def _risk(severity: Severity, inv: Invocation, effect: str, *tips: str) -> Risk:
    return Risk("package_remove", severity, f"Command '{inv.line[:120]}' {effect} - {approval_phrase(severity)}", tips)


def system_risks(inv: Invocation) -> list[Risk] | None:
    found = _removal(inv)
    if found is None:
        return None
    packages, forced = found
    if forced:
        return [
            _risk(
                "critical",
                inv,
                "removes packages past their dependency checks, which can leave the node unable to boot or run its tools",
                "Remove the package without forcing it and let the package manager say what depends on it",
            )
        ]
    vital = [p for p in map(_bare, packages) if _essential(p, inv.name)]
    if vital:
        what = f"every package matching '{vital[0]}'" if _GLOB.search(vital[0]) else f"'{vital[0]}'"
        return [
            _risk(
                "critical",
                inv,
                f"removes {what}, which the node needs to boot, log in or manage packages",
                "Preview what it would take with it first (apt-get -s remove / dnf remove --assumeno)",
            )
        ]
    if any(_ONE_KERNEL.match(_bare(p)) for p in packages):
        return [_risk("warning", inv, "removes a kernel image", "Check it is not the running kernel first: uname -r")]
    return [_risk("warning", inv, "removes installed packages and what depends on them")] if packages else None


def snap_risks(inv: Invocation) -> list[Risk] | None:
    if positionals(inv.args, tool("snap"))[:1] != ["remove"]:
        return None
    return [_risk("warning", inv, "removes a snap (with --purge, without keeping a snapshot of its data)")]


def pip_risks(inv: Invocation) -> list[Risk] | None:
    words = positionals(inv.args, tool("pip", values="-r --requirement --log --proxy --python"))
    if words[:1] != ["uninstall"]:
        return None
    if any(_bare(w) in _PYTHON_BINDINGS for w in words[1:]):
        return [_risk("warning", inv, "uninstalls pip or a Python package the distribution's tools import")]
    return None


def npm_risks(inv: Invocation) -> list[Risk] | None:
    args = inv.args
    words = positionals(args, tool("npm", "pnpm", "yarn", values="--registry --otp --prefix -w --workspace --tag"))
    if not words or has_flag(args, "--dry-run"):
        return None
    if words[0] == "unpublish":
        named = words[1:]
        if named and "@" in named[0].lstrip("@") and not has_flag(args, "--force"):
            return [_risk("warning", inv, "unpublishes a version from the registry (its number cannot be reused)")]
        return [
            _risk(
                "critical",
                inv,
                "unpublishes every version of a package from the registry",
                "Deprecate it instead: npm deprecate PACKAGE 'message'",
            )
        ]
    removes = words[0] in {"uninstall", "remove", "rm", "un", "r"}
    if removes and (has_flag(args, "-g") or has_flag(args, "--global")) and any(w in _SELF for w in words[1:]):
        return [_risk("warning", inv, "uninstalls the package manager itself")]
    return None


PACK = Pack(
    name="packages",
    summary="apt/dpkg/yum/dnf/rpm/zypper/pacman/apk removing essential packages or skipping dependency checks; snap, pip, npm",
    handlers={
        **{name: system_risks for name in (*_APT.names, *_YUM.names, "apk", "dpkg", "rpm", "pacman")},
        "snap": snap_risks,
        "pip": pip_risks,
        "pip3": pip_risks,
        "npm": npm_risks,
        "pnpm": npm_risks,
        "yarn": npm_risks,
    },
)
