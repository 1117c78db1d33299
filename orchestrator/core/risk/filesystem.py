"""Filesystem pack: recursive deletes by the class of the path, find -delete, shredding, moving
system paths away, sync tools that delete at the destination, and truncating redirections.

Recursive delete (`rm -r`, `find -delete`, `srm -r`) by path class (`risk.paths`); a find matching only
cache directories by name (`-name __pycache__`) is info:
  root, home, home_data, system          critical
  broad, project, dynamic, input, other  warning
  guarded, scratch, build                info
Non-recursive `rm`/`unlink` is critical on files the node cannot boot or log in without
(`/etc/passwd`, `/boot/...`, `/usr/bin/...`, `/etc/*`) and on `~/.ssh/authorized_keys`, a warning
on other system files.
`shred`/`srm`/`wipe` destroy beyond recovery: critical. `mv` of root, home or system paths,
of a vital file (`mv /usr/bin/sudo /tmp/`), or anything moved onto /dev/null: critical (also
`mv /usr/bin/* DIR`). A vital file replaced
by a device (`cp /dev/null /etc/passwd`, `install ... /dev/null F`, `ln -sf X /etc/passwd`) or
emptied by `sed -i` with a delete command (or `s/^root:.*//`): critical; copied over from another file: a warning.
A file emptied (`truncate -s 0`, `: > F`, `> F`, `cp /dev/null F`, `ln -sf /dev/null F`, `tee F
< /dev/null`): critical under /etc and /var/lib/SERVICE/ and for `.ssh/authorized_keys`, a warning for the system's logs (files
directly in /var/log, /var/log/audit/); an application's logs (/var/log/app/app.log) stay quiet.
`tar -c` with a block device as the archive, `tar -x` into / or an OS tree (`-C /`): critical. `rsync --delete` and `rclone sync/purge/delete`:
critical unless they preview (`-n`, `--dry-run`); a warning into scratch or build dirs.

`journalctl` vacuuming to less than a day (`--vacuum-time=1s`, `--vacuum-size=1K`,
`--vacuum-files=1`) deletes nearly every archived log: a warning. Appending to /etc/sudoers (`>>`,
`tee -a`) grants sudo rights past visudo's syntax check: a warning.
"""

# ruff: noqa: E501 - a pack keeps one rule per line, so it reads as a table

from __future__ import annotations

import re
from collections.abc import Iterable

from orchestrator.core.risk.disks import is_block_device
from orchestrator.core.risk.paths import REASON, PathKind, Place, contents_base, is_top_level, place
from orchestrator.core.risk.table import Pack, Rule, has_flag, positionals, tool
from orchestrator.core.risk_types import SEVERITY_RANK, Invocation, Risk, Severity, Word, approval_phrase, program

RECURSIVE_DELETE: dict[PathKind, Severity] = {
    "root": "critical",
    "home": "critical",
    "home_data": "critical",
    "system": "critical",
    "broad": "warning",
    "project": "warning",
    "dynamic": "warning",
    "input": "warning",
    "other": "warning",
    "guarded": "info",
    "scratch": "info",
    "build": "info",
}
VITAL = re.compile(
    r"^/(?:etc/(?:passwd|shadow|group|gshadow|sudoers|fstab|crypttab|ssh/sshd_config|pam\.d/.*|sudoers\.d)"
    r"|boot/.+|s?bin/.+|usr/s?bin/.+|lib(?:32|64)?/.+|usr/lib(?:32|64)?/[^/]+\.so[.\d]*|etc)$"
)

# Deleted (not rewritten: a new /etc/hosts is routine), these leave the node unable to name itself
# or resolve names, log users in or load libraries: `rm /etc/hosts` is held like `mv /etc/hosts /tmp`.
_ETC_NEEDED = re.compile(r"^/etc/(?:hosts|hostname|nsswitch\.conf|machine-id|login\.defs|ld\.so\.conf|inittab|os-release|profile|environment)$")


def rm_suggestions(found: Place, target: str) -> tuple[str, ...]:
    kind, path = found.kind, found.path
    if kind == "root":
        return ("Name the exact directory to delete instead of '/'",)
    if kind == "dynamic":
        var = re.search(r"\$\{?(\w+)", target)
        name = var.group(1) if var else "DIR"
        return (f'Guard the variable so an empty value cannot expand to /: "${{{name}:?}}" instead of "${name}"',)
    if kind == "input":
        return ("Review the input list first: run the command that produces it on its own",)
    if kind in {"broad", "project"}:
        return (
            f"Check the working directory first: pwd && ls -la {target}",
            "Use an absolute path so the command cannot hit the wrong directory",
        )
    if kind in {"guarded", "scratch", "build"}:
        return ()
    tips = [f"List what would be removed first: ls -la {path}"]
    if target.endswith("*"):
        tips.append(f"Delete only the entries you mean inside {path} rather than all of them")
    else:
        tips.append(f"Back it up first, e.g. tar -czf backup.tgz {path}")
    return tuple(tips)


def _rm_flags(inv: Invocation) -> tuple[bool, bool, bool, list[Word]]:
    recursive = force = no_preserve = False
    targets: list[Word] = []
    options_done = False
    for w in inv.argv[1:]:
        t = w.text
        if not options_done and t == "--":
            options_done = True
        elif not options_done and t.startswith("--"):
            recursive |= t in {"--recursive", "--dir"} and t == "--recursive"
            force |= t == "--force"
            no_preserve |= t == "--no-preserve-root"
        elif not options_done and t.startswith("-") and len(t) > 1:
            recursive |= "r" in t or "R" in t
            force |= "f" in t
        elif not (inv.via_xargs and t == "{}"):
            targets.append(w)
    return recursive, force, no_preserve, targets


def delete_risk(flag: str, targets: list[Word], cwd: str | None, recursive: bool) -> Risk | None:
    """The worst target of a delete: by path class when recursive, by vital files otherwise."""
    best: tuple[Severity, Place, Word] | None = None
    for target in targets:
        found = place(target, cwd)
        if recursive:
            rated: Severity | None = RECURSIVE_DELETE[found.kind]
        elif (
            VITAL.match(found.path)
            or _ETC_NEEDED.match(found.path)
            or AUTHORIZED_KEYS.search(found.path)
            or (found.kind in {"system", "root", "home"} and target.text.endswith("*"))
        ):
            rated = "critical"
        else:
            rated = "warning" if found.kind == "root" or (found.kind == "system" and is_top_level(found)) else None
        if rated and (best is None or SEVERITY_RANK[rated] > SEVERITY_RANK[best[0]]):
            best = (rated, found, target)
    if best is None:
        return None
    sev, found, target = best
    where = f"'{target.text}'" + (f" ({found.path})" if found.path not in {target.text, contents_base(target.text)} else "")
    tail = "" if sev == "info" else f" - {approval_phrase(sev)}"
    tips = rm_suggestions(found, target.text) if recursive else (f"Back it up first: cp -a {found.path} {found.path}.bak",)
    return Risk("destructive_command", sev, f"Command contains '{flag}' on {where} ({REASON[found.kind]}){tail}", tips)


def rm_risks(inv: Invocation) -> list[Risk]:
    recursive, force, no_preserve, targets = _rm_flags(inv)
    name = inv.name
    flag = f"{name} -rf" if recursive and force else f"{name} -r" if recursive else f"{name} -f" if force else name
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
        sev = find_delete_severity(inv.input_roots, inv.cwd)
        roots = " ".join(r.text for r in inv.input_roots)
        return [
            Risk(
                "destructive_command",
                sev,
                f"Command pipes files found under '{roots}' into '{flag}' - {approval_phrase(sev)}",
                (f"Review the list first: run the find under '{roots}' without '| xargs {name}'",),
            )
        ]
    risks: list[Risk] = []
    if inv.via_xargs and recursive:
        risks.append(
            Risk(
                "destructive_command",
                "warning",
                f"Command runs '{flag}' on paths read from its input - review before running",
                (f"Review the input list first: run the pipeline without '| xargs {name}'",),
            )
        )
    if name in {"srm", "wipe"}:
        recursive = recursive or name == "wipe"
    found = delete_risk(flag, targets, inv.cwd, recursive)
    if found:
        risks.append(found)
    if name in {"srm", "wipe"} and targets:
        risks.append(_shred(inv, targets[0].text))
    return risks


def _shred(inv: Invocation, target: str) -> Risk:
    return Risk(
        "destructive_command",
        "critical",
        f"Command '{inv.name}' overwrites '{target}' beyond recovery - requires approval",
        (f"Check the target first: ls -la {target}; use plain rm if the data need not be unrecoverable",),
    )


def shred_risks(inv: Invocation) -> list[Risk] | None:
    targets = [a for a in positionals(inv.args, _SHRED) if a != "-"]
    if not targets or is_block_device(targets[0]):
        return None  # block devices are the disks pack's
    return [_shred(inv, targets[0])]


_EXPR_START = re.compile(r"^(?:-.+|\(|\)|!|,)$")
FIND_DELETERS = frozenset({"rm", "unlink", "shred", "srm"})


def find_parts(argv: tuple[Word, ...] | list[Word]) -> tuple[list[Word], list[list[Word]], bool]:
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
            while i < len(argv) and argv[i].text not in {";", "+", "\\;"}:
                cmd.append(argv[i])
                i += 1
            if cmd:
                execs.append(cmd)
        i += 1
    return roots or [Word(".")], execs, delete


def find_delete_severity(roots: tuple[Word, ...] | list[Word], cwd: str | None) -> Severity:
    places = [place(r, cwd) for r in roots]
    kinds = {"scratch" if p.path in {"/tmp", "/var/tmp", "/dev/shm"} else p.kind for p in places}
    if kinds & {"root", "home", "home_data", "system"}:
        return "critical"
    return "info" if kinds <= {"scratch", "build", "guarded"} else "warning"


# Caches a tool makes again on its next run (not node_modules or *.pyc: a reinstall, a rebuild).
_CACHES = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})


def _only_caches(argv: tuple[Word, ...]) -> bool:
    """`find . -name __pycache__ -exec rm -rf {} +`: every match is a cache directory."""
    names = [argv[i + 1].text for i, w in enumerate(argv[:-1]) if w.text in {"-name", "-iname"}]
    if not names or any(w.text in {"-o", "-or", ",", "!", "-not"} for w in argv):
        return False
    return all(n in _CACHES for n in names)


def find_risks(inv: Invocation) -> list[Risk]:
    roots, execs, delete = find_parts(inv.argv)
    deleters = [c for c in execs if program(c[0]) in FIND_DELETERS]
    if not delete and not deleters:
        return []
    sev = find_delete_severity(roots, inv.cwd)
    if sev == "warning" and _only_caches(inv.argv):
        sev = "info"
    how = "-delete" if delete else f"-exec {deleters[0][0].text}"
    where = " ".join(r.text for r in roots)
    tail = "" if sev == "info" else f" - {approval_phrase(sev)}"
    return [
        Risk(
            "destructive_command",
            sev,
            f"Command contains 'find {where} ... {how}'{tail}",
            (f"Run the same find with -print instead of '{how}' first to review the matches",),
        )
    ]


def mv_risks(inv: Invocation) -> list[Risk] | None:
    words = [w for w in inv.argv[1:] if not w.text.startswith("-")]
    if len(words) < 2:
        return None
    *sources, dest = words
    if dest.text == "/dev/null":
        return [
            Risk(
                "destructive_command", "critical", f"Command moves '{sources[0].text}' onto /dev/null, which deletes it - requires approval"
            )
        ]
    for src in sources:
        found = place(src, inv.cwd)
        if VITAL.match(found.path) and found.path != "/etc" and not src.text.endswith("*"):
            return [
                Risk(
                    "destructive_command",
                    "critical",
                    f"Command moves '{found.path}' away, a file the system needs to boot or log in - requires approval",
                    (f"Copy it instead (cp -a {found.path} {found.path}.bak) and leave the original in place",),
                )
            ]
        if (found.kind in {"root", "home"} or (found.kind == "system" and is_top_level(found))) and (
            not src.text.endswith("*") or _OS_TREE.match(found.path)
        ):
            return [
                Risk(
                    "destructive_command",
                    "critical",
                    f"Command moves '{src.text}' ({REASON[found.kind]}) away - requires approval",
                    (f"Copy it instead (cp -a {found.path} ...) and remove the original once the copy is checked",),
                )
            ]
    return None


_OS_TREE = re.compile(r"^/(?:etc|boot|s?bin|lib(?:32|64)?|usr(?:/s?bin|/lib(?:32|64)?)?)$")
_INSTALL = tool("install", values="-m --mode -o --owner -g --group -t --target-directory -S --suffix")
_SED_DELETE = re.compile(r"(?:^|[;}\s/$\d])d\s*$")
# `s/^root:.*//`: a substitution that blanks whole lines is a delete too.
_SED_BLANK = re.compile(r"^s(.)\^?[^\n]*\.\*\$?\1\1[gI0-9]*$")
AUTHORIZED_KEYS = re.compile(r"(?:^|/)\.ssh/authorized_keys2?$")


def _replaced(verb: str, target: Word, source: str, cwd: str | None) -> list[Risk] | None:
    """A vital file replaced: by a device (emptied for good) is critical, by another file a warning."""
    found = place(target, cwd)
    if not VITAL.match(found.path) or found.path == "/etc":
        return None
    if source.startswith("/dev/"):
        return [Risk("destructive_command", "critical", f"Command '{verb}' replaces '{found.path}' with {source}, a file the system needs to boot or log in - requires approval")]
    return [
        Risk(
            "destructive_command",
            "warning",
            f"Command '{verb}' replaces '{found.path}', a file the system needs to boot or log in - review before running",
            (f"Back it up first (cp -a {found.path} {found.path}.bak) and check the new file before it goes in place",),
        )
    ]


def copy_risks(inv: Invocation) -> list[Risk] | None:
    """`cp`/`install`/`ln -f` onto a vital file."""
    name = inv.name
    if name == "ln" and not (has_flag(inv.args, "-f") or "--force" in inv.args):
        return None
    words = positionals(inv.args, _INSTALL) if name == "install" else [a for a in inv.args if not a.startswith("-")]
    if len(words) < 2:
        return None
    if words[0] == "/dev/null" and (emptied := emptied_risks(f"{name} /dev/null", Word(words[-1]), inv.cwd)):
        return emptied
    return _replaced(name, Word(words[-1]), "/dev/" if name == "ln" and words[0].startswith("/dev/") else words[0], inv.cwd)


def sed_risks(inv: Invocation) -> list[Risk] | None:
    """`sed -i` whose script deletes lines of a vital file (`sed -i d /etc/passwd`, `'1,$d'`)."""
    args = inv.args
    if not any(a == "-i" or a.startswith(("-i", "--in-place")) or re.fullmatch(r"-[nErsuz]*i\S*", a) for a in args):
        return None
    words = [a for a in args if not a.startswith("-")]
    script = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in {"-e", "--expression"}), None)
    files = words if script is not None else words[1:]
    script = script if script is not None else (words[0] if words else "")
    if not _SED_DELETE.search(script) and not _SED_BLANK.match(script):
        return None
    for f in files:
        found = place(Word(f), inv.cwd)
        if VITAL.match(found.path) and found.path != "/etc":
            return [Risk("destructive_command", "critical", f"Command 'sed -i {script}' deletes lines of '{found.path}', a file the system needs to boot or log in - requires approval",
                         (f"Back it up first (cp -a {found.path} {found.path}.bak) and preview the edit without -i",))]
    return None


def tar_risks(inv: Invocation) -> list[Risk] | None:
    """`tar -c` (or `-r`, `-u`) whose archive is a block device: the disk is overwritten; `tar -x`
    into `/` or an OS tree (`-C /`, `-C /usr`): the system's files are overwritten."""
    args = inv.args
    if not args:
        return None
    archive = None
    letters = ""
    if re.fullmatch(r"[A-Za-z]+", args[0]):  # old style: `tar cf ARCHIVE ...`
        letters = args[0]
        archive = args[1] if "f" in letters and len(args) > 1 else None
    for i, a in enumerate(args):
        if a.startswith("--file="):
            archive = a.split("=", 1)[1]
        elif a == "--file" or (re.fullmatch(r"-[A-Za-z]*f", a) and i + 1 < len(args)):
            archive = args[i + 1] if i + 1 < len(args) else None
        if re.fullmatch(r"-[A-Za-z]+", a):
            letters += a[1:]
    writes = bool(set(letters) & set("cruA")) or any(a in {"--create", "--append", "--update", "--concatenate"} for a in args)
    if writes and archive is not None and is_block_device(archive):
        return [Risk("device_write", "critical", f"Command 'tar' writes its archive onto block device '{archive}', destroying its data - requires approval",
                     (f"Double-check the target first with lsblk -f {archive}; write the archive to a file instead",))]
    extracts = "x" in letters or any(a in {"--extract", "--get"} for a in args)
    into = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in {"-C", "--directory"}), None)
    into = next((a.split("=", 1)[1] for a in args if a.startswith("--directory=")), into) or inv.cwd
    where = place(Word(into)).path if extracts and into is not None else ""
    if where == "/" or _OS_TREE.match(where):
        return [Risk("destructive_command", "critical", f"Command 'tar' extracts an archive into '{where}', overwriting the system's files with whatever it holds - requires approval",
                     (f"List it first (tar -tf {archive or 'ARCHIVE'}) and extract into an empty directory, then copy what you need",))]
    return None


_RSYNC = tool(
    "rsync",
    values="-e --rsh --exclude --include --filter -f --files-from --rsync-path --port --log-file -T --temp-dir --backup-dir --suffix --chmod --chown -M --remote-option",
)
_SHRED = tool("shred", values="-n --iterations -s --size --random-source")


def rsync_risks(inv: Invocation) -> list[Risk] | None:
    args = inv.args
    deletes = any(a.startswith("--del") for a in args) or "--remove-source-files" in args
    if not deletes or has_flag(args, "-n", _RSYNC) or has_flag(args, "--dry-run") or has_flag(args, "--list-only"):
        return None
    places = positionals(args, _RSYNC)
    dest = places[-1] if len(places) >= 2 else ""
    if "--remove-source-files" in args and not any(a.startswith("--del") for a in args):
        return [
            Risk(
                "destructive_command",
                "warning",
                f"Command '{inv.line[:120]}' removes the source files after copying - review before running",
            )
        ]
    local = dest.split(":", 1)[-1] if re.match(r"^[\w.@-]+:", dest) else dest
    sev: Severity = "warning" if place(Word(local), inv.cwd).kind in {"scratch", "build"} else "critical"
    return [
        Risk(
            "destructive_command",
            sev,
            f"Command 'rsync ... --delete' deletes files under '{dest}' that are not in the source - {approval_phrase(sev)}",
            (f"Preview it first with the same options plus --dry-run: rsync --dry-run {' '.join(args)}",),
        )
    ]


def truncate_risks(inv: Invocation) -> list[Risk] | None:
    files = [w for w in inv.argv[1:] if not w.text.startswith("-") and not re.fullmatch(r"[<>%/*+-]?\d+[KMGTPEkmgtpe]?[Bb]?", w.text)]
    for w in files:
        found = place(w, inv.cwd)
        if VITAL.match(found.path):
            return [
                Risk(
                    "destructive_command",
                    "critical",
                    f"Command 'truncate' empties '{found.path}', a file the system needs - requires approval",
                )
            ]
    args = inv.args
    size = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in {"-s", "--size"}), None)
    size = size or next((a.split("=", 1)[1] if "=" in a else a[2:] for a in args if a.startswith(("-s", "--size="))), None)
    if size is None or not re.fullmatch(r"0+[KMGTPEkmgtpe]?[Bb]?", size):
        return None
    return worst(r for w in files for r in emptied_risks("truncate -s 0", w, inv.cwd)) or None


_EMPTIED: tuple[tuple[re.Pattern[str], Severity, str], ...] = (
    (AUTHORIZED_KEYS, "critical", "the keys users log in with over SSH"),
    (re.compile(r"^/etc/."), "critical", "a system configuration file"),
    (re.compile(r"^/var/lib/[^/]+/."), "critical", "a service's data (a database or state file)"),
    # The system's own logs (/var/log/syslog, auth.log, audit/), not an application's directory of them.
    (re.compile(r"^/var/log(?:/[^/]+|/(?:audit|journal)/.+)?$"), "warning", "a system log: its records are lost"),
)


def emptied_risks(how: str, target: Word, cwd: str | None) -> list[Risk]:
    """A file emptied (`truncate -s 0 F`, `: > F`, `cp /dev/null F`, `ln -sf /dev/null F`): by
    where it is. Files the node needs to boot or log in are the callers' own rules (`VITAL`)."""
    found = place(target, cwd)
    if VITAL.match(found.path):
        return []
    for pattern, severity, what in _EMPTIED:
        if pattern.search(found.path):
            return [
                Risk(
                    "destructive_command",
                    severity,
                    f"Command '{how}' empties '{found.path}', {what} - {approval_phrase(severity)}",
                    (f"Back it up first: cp -a {found.path} {found.path}.bak",),
                )
            ]
    return []


def worst(risks: Iterable[Risk]) -> list[Risk]:
    found = max(risks, key=lambda r: SEVERITY_RANK[r.severity], default=None)
    return [found] if found else []


_RCLONE = tool("rclone", values="--config --filter --include --exclude --transfers --checkers --bwlimit --log-file --backup-dir")
_RCLONE_PREVIEW = ("--dry-run", "-n", "--interactive", "-i", "--help", "-h")
_PREVIEW = "Preview it first with the same arguments plus --dry-run: {cmd} --dry-run"

# fmt: off
RULES: tuple[Rule, ...] = (
    Rule("filesystem.rclone-purge", _RCLONE, ("purge",), "critical", "deletes a remote path and all its contents", unless=_RCLONE_PREVIEW, suggestion=_PREVIEW),
    Rule("filesystem.rclone-delete", _RCLONE, ("delete|deletefile|rmdirs",), "critical", "deletes files on a remote", unless=_RCLONE_PREVIEW, suggestion=_PREVIEW),
    Rule("filesystem.rclone-sync", _RCLONE, ("sync|bisync",), "critical", "deletes destination files that are not in the source", unless=_RCLONE_PREVIEW, suggestion=_PREVIEW),
    Rule("filesystem.rclone-move", _RCLONE, ("move|moveto|cleanup|dedupe",), "warning", "removes or replaces files on a remote", unless=_RCLONE_PREVIEW, suggestion=_PREVIEW),
)
# fmt: on

PACK = Pack(
    name="filesystem",
    summary="rm, find -delete, shred/srm/wipe, mv of system paths, rsync --delete, rclone, truncate",
    rules=RULES,
    handlers={
        "rm": rm_risks,
        "unlink": rm_risks,
        "srm": rm_risks,
        "wipe": rm_risks,
        "find": find_risks,
        "shred": shred_risks,
        "mv": mv_risks,
        "rsync": rsync_risks,
        "truncate": truncate_risks,
        "cp": copy_risks,
        "install": copy_risks,
        "ln": copy_risks,
        "sed": sed_risks,
        "tar": tar_risks,
        "tee": lambda inv: tee_risks(inv),
        "journalctl": lambda inv: journal_risks(inv),
    },
)


def redirect_risks(op: str, target: str, cwd: str | None) -> list[Risk]:
    """Writing onto a block device or the sysrq trigger; truncating a file the system needs."""
    if not op.endswith(">") and op not in {">>", "&>>", ">|", "<>", ">&"}:
        return []
    if is_block_device(target):
        return [
            Risk(
                "device_write",
                "critical",
                f"Command redirects output onto block device '{target}' - requires approval",
                (f"Double-check the target first with lsblk -f {target}: writing to a block device destroys its data",),
            )
        ]
    if target == "/proc/sysrq-trigger":
        return [Risk("power", "critical", "Command writes to /proc/sysrq-trigger (can crash or reboot the node) - requires approval")]
    found = place(Word(target), cwd)
    if op in {">", ">|", "&>"} and VITAL.match(found.path) and found.path != "/etc":
        return [
            Risk(
                "destructive_command",
                "critical",
                f"Command overwrites '{found.path}', a file the system needs to boot or log in - requires approval",
                (
                    f"Back it up first (cp -a {found.path} {found.path}.bak) and append with >> or edit it with a tool that validates it (visudo, vipw)",
                ),
            )
        ]
    if op in {">>", "&>>"} and found.path == "/etc/sudoers":
        return [
            Risk(
                "system_permissions",
                "warning",
                "Command appends to /etc/sudoers: it grants sudo rights, and a syntax error there breaks sudo for everyone - review before running",
                ("Write a file in /etc/sudoers.d/ and check it with visudo -cf FILE",),
            )
        ]
    return []


def tee_risks(inv: Invocation) -> list[Risk] | None:
    """`tee FILE` writes like `> FILE` (`tee -a` like `>>`); block devices are the disks pack's."""
    op = ">>" if has_flag(inv.args, "-a") or has_flag(inv.args, "--append") else ">"
    risks = [r for a in inv.args if not a.startswith("-") and not is_block_device(a) for r in redirect_risks(op, a, inv.cwd)]
    return risks or None


# `journalctl --vacuum-time=1s` (or --vacuum-size=1K, --vacuum-files=1): every archived journal goes.
_VACUUM_ALL = re.compile(r"^--vacuum-(?:time=\d*(?:us|ms|s|sec|m|min|h)?|size=\d*[BK]?|files=[01])$")


def journal_risks(inv: Invocation) -> list[Risk] | None:
    args = inv.args
    joined = [f"{a}={args[i + 1]}" if a.startswith("--vacuum-") and "=" not in a and i + 1 < len(args) else a for i, a in enumerate(args)]
    wiping = [a for a in joined if _VACUUM_ALL.match(a) and not re.match(r"--vacuum-time=(?:\d{3,}|2[4-9]|[3-9]\d)h$", a)]
    if not wiping:
        return None
    return [Risk("destructive_command", "warning", f"Command 'journalctl {wiping[0]}' deletes nearly every archived log of the node - review before running", ("Keep a useful window, e.g. --vacuum-time=14d",))]
