"""File-system rules: path classification, rm, find -delete, and chmod/chown/chgrp.

Severities follow the contract in `orchestrator.core.risk_rules`: a path is classified first
(root, home, system, broad, dynamic, other, scratch, relative), then the command's severity is
read off that class.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from typing import Literal

from orchestrator.core.risk_types import SEVERITY_RANK, Invocation, Risk, Severity, Word, approval_phrase, program

PathKind = Literal["root", "home", "system", "broad", "dynamic", "other", "scratch", "relative"]

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


def rm_risks(inv: Invocation) -> list[Risk]:
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
                f"Command pipes files found under '{roots}' into '{flag}' - {approval_phrase(sev)}",
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
            message = f"Command contains '{flag}' on '{target.text}' ({_PATH_REASON[kind]}) - {approval_phrase(sev)}"
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


def find_risks(inv: Invocation) -> list[Risk]:
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
            f"Command contains 'find {where} ... {how}' - {approval_phrase(sev)}",
            (f"Run the same find without '{how}' first to review the matches", "Narrow the search root and -name"),
        )
    ]


# --- permissions -------------------------------------------------------------------------

_CHMOD_OPTIONS = frozenset({"-R", "-c", "-f", "-v", "--recursive", "--changes", "--silent", "--quiet", "--verbose"})
_WORLD_WRITABLE = re.compile(r"^(?:[0-7]?[0-7][0-7][2367]|[ugo]*[ao][ugo]*[+=][rwxXst]*w[rwxXst]*)$")


def permission_risks(inv: Invocation) -> list[Risk]:
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
