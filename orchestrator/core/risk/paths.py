"""Paths as the shell will see them, and what kind of place each one is.

`place(word, cwd)` normalises a path argument: `$HOME`/`${HOME}` become `~`, `$TMPDIR` (also
`${TMPDIR:-...}`) becomes `/tmp`, `$PWD` the working directory, `..` is folded (`$TMPDIR/../etc` is
`/etc`), a trailing `/*` or `/.` means the directory itself, and a relative path is joined to the
working directory when that is known (`cd / && rm -rf *`). Then it is classified:

  root       `/`                                              the whole filesystem
  home       `~`, `/home/bob`, `/root`                        a home directory
  home_data  `~/Documents`, `/home/bob/src`                   inside a home directory
  system     a top-level dir (`/data`), two levels under a system top (`/var/www`, `/srv/app`),
             a child of /var/lib, or anything under /etc, /usr, /boot, /bin, /sbin, /lib*
             (`/etc/systemd/system`); `/home/$USER/x` counts as under /home
  broad      `.`, `..`, `*` with an unknown working directory
  project    any other relative path (`src`, `.git`)
  dynamic    built from a variable (`$DIR/*`), which may expand to anything, `/` included
  guarded    `${DIR:?}`: the shell refuses to run with it empty
  input      `{}`: filled from the input (xargs, parallel, find -exec)
  other      any other absolute path (`/srv/app/releases/42`)
  scratch    under /tmp, /var/tmp, /dev/shm, $TMPDIR
  build      a build or cache directory by name (`node_modules`, `dist`, `~/.cache`, `__pycache__`)
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from orchestrator.core.risk_types import Word

PathKind = Literal["root", "home", "home_data", "system", "broad", "project", "dynamic", "guarded", "input", "other", "scratch", "build"]

SYSTEM_TOP = frozenset(
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
_SYSTEM_SECOND = frozenset({"/var/lib", "/usr/lib", "/usr/local", "/usr/share", "/usr/lib64", "/var/spool"})
_SCRATCH = ("/tmp", "/var/tmp", "/dev/shm")
_OS_TREES = frozenset({"etc", "usr", "boot", "bin", "sbin", "lib", "lib32", "lib64", "libx32"})  # system at any depth
BUILD_NAMES = frozenset(
    [
        "node_modules",
        "dist",
        "build",
        "builds",
        "target",
        "out",
        "_build",
        ".build",
        "__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".tox",
        ".nox",
        ".venv",
        "venv",
        ".cache",
        "cache",
        ".next",
        ".nuxt",
        ".parcel-cache",
        ".turbo",
        "coverage",
        "htmlcov",
        ".coverage",
        ".gradle",
        ".eggs",
        "tmp",
        "temp",
        ".tmp",
        ".sass-cache",
        "bower_components",
        ".terraform",
        ".serverless",
        ".angular",
        ".svelte-kit",
        ".expo",
        ".dart_tool",
        "deps",
        "obj",
        "bin_debug",
        "cmake-build-debug",
        "cmake-build-release",
        "_site",
        "public_html_cache",
        ".jekyll-cache",
        ".docusaurus",
        "storybook-static",
    ]
)
_HOME_CACHES = frozenset({".cache", ".npm", ".yarn", ".pnpm-store", ".gradle", ".m2", ".cargo", ".rustup", ".local/share/Trash"})

REASON: dict[PathKind, str] = {
    "root": "the root filesystem",
    "home": "a home directory",
    "home_data": "files in a home directory",
    "system": "a system or top-level path",
    "broad": "the working directory or a parent of it",
    "project": "a project directory",
    "dynamic": "a path built from a variable, which may expand to /",
    "guarded": "a path from a variable guarded against being empty",
    "input": "paths read from the input",
    "other": "a path outside temporary directories",
    "scratch": "a temporary directory",
    "build": "a build or cache directory",
}


@dataclass(frozen=True, slots=True)
class Place:
    kind: PathKind
    path: str  # the normalised path, for messages


_HOME_VAR = re.compile(r"^(?:\$HOME|\$\{HOME(?::?[-?=][^}]*)?\})(?=/|$)")  # `${HOME:?}` only guards it against being empty
_TMP_VAR = re.compile(r"^(?:\$TMPDIR|\$\{TMPDIR(?::?[-=][^}]*)?\}|\$TMP|\$\{TMP\}|\$TEMP)(?=/|$)")
_PWD_VAR = re.compile(r"^(?:\$PWD|\$\{PWD\}|\$\(pwd\)|`pwd`)(?=/|$)")
_GUARDED = re.compile(r"^\$\{\w+:\?[^}]*\}(?=/|$)")


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


def expand(text: str, cwd: str | None) -> str:
    """Substitute the variables whose meaning is known; leave the others."""
    text = _HOME_VAR.sub("~", text)
    text = _TMP_VAR.sub("/tmp", text)
    if cwd:
        text = _PWD_VAR.sub(cwd.replace("\\", "\\\\"), text)
    return text


def place(word: Word, cwd: str | None = None) -> Place:
    text = expand(word.text, cwd)
    if text == "{}":
        return Place("input", text)
    if _GUARDED.match(text) and "$" not in _GUARDED.sub("", text):
        return Place("guarded", text)
    if "$" in text or "`" in text:
        return _dynamic(text, cwd)
    path = contents_base(text)
    if not path.startswith(("/", "~")):
        if cwd and cwd.startswith(("/", "~")):
            path = posixpath.join(cwd, path)
        else:
            return _relative(path)
    if path.startswith("~"):
        return _home(path)
    return _absolute(posixpath.normpath(path))


def is_top_level(found: Place) -> bool:
    """`/etc`, `/var/www`, `/var/lib/mysql`: a directory the system is organised by, not a file deep in it."""
    parts = [p for p in found.path.split("/") if p]
    return len(parts) <= 2 or (len(parts) == 3 and posixpath.dirname(found.path) in _SYSTEM_SECOND)


_VAR = re.compile(r"\$\{?(\w+)\}?")
_CRITICAL_KINDS = frozenset({"root", "home", "home_data", "system"})


def _dynamic(text: str, cwd: str | None) -> Place:
    """A variable inside a fixed absolute prefix (`/home/$USER/x`) still names a place under it."""
    head = text.split("$", 1)[0]
    if head.startswith(("/", "~")) and head.strip("/~") and "`" not in text:
        named_text = _VAR.sub(lambda m: m.group(1), text)
        named = place(Word(named_text), cwd) if "$" not in named_text else Place("dynamic", text)
        if named.kind in _CRITICAL_KINDS:
            return Place(named.kind, text)
    return Place("dynamic", text)


def _relative(path: str) -> Place:
    norm = posixpath.normpath(path)
    parts = norm.split("/")
    ups = next((i for i, p in enumerate(parts) if p != ".."), len(parts))
    if 2 <= ups < len(parts) and parts[ups] in SYSTEM_TOP:
        return Place("system", "/" + "/".join(parts[ups:]))  # ../../etc climbs out of any usual working directory
    if norm == "." or all(p == ".." for p in parts):
        return Place("broad", path)
    if parts[0] in BUILD_NAMES or parts[-1] in BUILD_NAMES or parts[-1].endswith(".egg-info"):
        return Place("build", path)
    return Place("project", path)


def _home(path: str) -> Place:
    user, _, rest = path.partition("/")
    norm = posixpath.normpath("/" + rest).lstrip("/") if rest else ""
    if norm.startswith(".."):
        return _absolute(posixpath.normpath(posixpath.join("/home/user", norm)))
    if not norm:
        return Place("home", path)
    if any(norm == c or norm.startswith(c + "/") for c in _HOME_CACHES) or norm.split("/")[-1] in BUILD_NAMES:
        return Place("build", path)
    return Place("home_data", f"{user}/{norm}")


# A path component the shell expands as a pattern: `*`, `?` or a bracket expression (`[e]tc`).
GLOB = re.compile(r"[*?]|\[!?\^?\]?[^]]*\]")
# Names a pattern component is tried against: what makes a path a system or home place.
_NAMES = frozenset({*SYSTEM_TOP, *(part for p in _SYSTEM_SECOND for part in p.split("/") if part), "tmp", "shm"})
_KIND_RANK: dict[PathKind, int] = {"root": 6, "home": 5, "system": 4, "home_data": 3, "other": 2, "build": 1, "scratch": 0}
_MAX_MATCHES = 64


def _absolute(norm: str) -> Place:
    """An absolute path's place; one with a pattern in it (`/va[r]/www`, `/*/www`) is rated as the
    worst place it can match among the names that matter (`/var/www`: system), never as a
    literal name (`va[r]`, an `other` path) that bash would not leave as it is."""
    if not GLOB.search(norm):
        return _named(norm)
    candidates = [""]
    for part in (p for p in norm.split("/") if p):
        names = [n for n in sorted(_NAMES) if fnmatchcase(n, part.replace("[^", "[!"))] if GLOB.search(part) else []
        candidates = [f"{c}/{n}" for c in candidates for n in [*names, part]][:_MAX_MATCHES]
    worst = max((_named(c) for c in candidates), key=lambda found: _KIND_RANK.get(found.kind, 0))
    return Place(worst.kind, norm)


def _named(norm: str) -> Place:
    parts = [p for p in norm.split("/") if p]
    if not parts:
        return Place("root", "/")
    if norm in _SCRATCH:
        return Place("other", norm)
    if any(norm.startswith(s + "/") for s in _SCRATCH):
        return Place("scratch", norm)
    if norm == "/root" or (len(parts) == 2 and parts[0] == "home"):
        return Place("home", norm)
    if len(parts) == 1 or (len(parts) == 2 and parts[0] in SYSTEM_TOP):
        return Place("system", norm)
    if len(parts) == 3 and posixpath.dirname(norm) in _SYSTEM_SECOND:
        return Place("system", norm)
    if parts[0] in _OS_TREES:
        return Place("system", norm)
    if parts[-1] in BUILD_NAMES or parts[-1].endswith(".egg-info"):
        return Place("build", norm)
    if parts[0] == "root" or parts[0] == "home":
        return Place("home_data", norm)
    return Place("other", norm)
