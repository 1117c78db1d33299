"""Version control pack: commands that throw away work or rewrite shared history.

Critical: `git reset --hard`, `git clean -f` (with -d/-x or not), `git checkout -- PATHS` /
`git checkout .` / `checkout -f`, `git restore` of the worktree, `git switch --discard-changes`,
`git stash clear`, `git push --force` / `+refspec` / `--mirror`, deleting main/master/production
remotely, `git filter-branch` / `filter-repo`; `hg purge --all`, `hg update --clean`, `svn revert -R`.
Warning: `git clean -fX` (ignored files only), `git reset --merge/--keep`, `git stash drop`,
`git branch -D`, `push --force-with-lease` onto a protected branch, deleting other remote
branches, `reflog expire`/`gc --prune=now`, `git rm -r`, `git update-ref -d`, `git worktree
remove --force`, `hg strip`, `hg revert --all`.
Safe: the previews (`git clean -n`, `--dry-run`), `git restore --staged`, `checkout -b`.
"""

# ruff: noqa: E501 - a pack keeps one rule per line, so it reads as a table

from __future__ import annotations

from orchestrator.core.risk.table import Pack, Rule, has_flag, positionals, tool
from orchestrator.core.risk_types import Invocation, Risk, Severity, approval_phrase

PROTECTED_BRANCHES = frozenset({"main", "master", "production", "prod", "release", "trunk", "develop"})
_GIT = tool("git", values="-C -c --git-dir --work-tree --namespace --exec-path --config-env")
_PUSH = tool("git", values="-C -c --git-dir --work-tree -o --push-option --repo --receive-pack --exec")
_STASH_FIRST = "Save the changes first with 'git stash' (they stay recoverable), then run it"


def _sub(inv: Invocation) -> tuple[str, list[str]]:
    args = inv.args
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in _GIT.value_options else 1
    return (args[i], args[i + 1 :]) if i < len(args) else ("", [])


def _risk(sev: Severity, cmd: str, effect: str, *tips: str, kind: str = "destructive_command") -> Risk:
    return Risk(kind, sev, f"Command '{cmd}' {effect} - {approval_phrase(sev)}", tips)


def git_risks(inv: Invocation) -> list[Risk] | None:
    sub, rest = _sub(inv)
    cmd = f"git {sub} {' '.join(rest)}".strip()
    handler = _GIT_SUBCOMMANDS.get(sub)
    return handler(cmd, rest) if handler else None


def _clean(cmd: str, rest: list[str]) -> list[Risk]:
    if not (has_flag(rest, "-f") or has_flag(rest, "--force")) or has_flag(rest, "-n") or has_flag(rest, "--dry-run"):
        return []
    if has_flag(rest, "-i") or has_flag(rest, "--interactive"):
        return []
    preview = "git clean -n" + "".join(c for c in "dxX" if has_flag(rest, "-" + c))
    if has_flag(rest, "-X") and not has_flag(rest, "-x"):
        return [_risk("warning", cmd, "deletes ignored files (build output, local config)", f"List them first: {preview}")]
    return [_risk("critical", cmd, "deletes untracked files, which git cannot bring back", f"List what would be deleted first: {preview}")]


def _reset(cmd: str, rest: list[str]) -> list[Risk]:
    if "--hard" in rest:
        return [
            _risk(
                "critical", cmd, "discards every uncommitted change", _STASH_FIRST, "Or keep the changes in the worktree: git reset --keep"
            )
        ]
    if "--merge" in rest or "--keep" in rest:
        return [_risk("warning", cmd, "may discard uncommitted changes", _STASH_FIRST)]
    return []


def _checkout(cmd: str, rest: list[str]) -> list[Risk]:
    if {"-b", "-B", "--orphan"} & set(rest) or has_flag(rest, "-h"):
        return []
    words = positionals(rest, _GIT)
    forced = has_flag(rest, "-f") or has_flag(rest, "--force")
    paths = rest[rest.index("--") + 1 :] if "--" in rest else [w for w in words if w in {".", "*", ":/"}]
    if paths or forced:
        what = f"'{' '.join(paths)}'" if paths else "the worktree"
        return [
            _risk(
                "critical",
                cmd,
                f"discards uncommitted changes to {what}",
                f"See what would be lost first: git diff -- {' '.join(paths) or '.'}",
                _STASH_FIRST,
            )
        ]
    return []


def _restore(cmd: str, rest: list[str]) -> list[Risk]:
    staged = has_flag(rest, "--staged") or has_flag(rest, "-S")
    worktree = has_flag(rest, "--worktree") or has_flag(rest, "-W")
    if (
        (staged and not worktree)
        or has_flag(rest, "-h")
        or has_flag(rest, "--help")
        or has_flag(rest, "--dry-run")
        or (not positionals(rest, _GIT) and "--" not in rest)
    ):
        return []
    return [
        _risk("critical", cmd, "overwrites uncommitted changes in the worktree", "See what would be lost first: git diff", _STASH_FIRST)
    ]


def _switch(cmd: str, rest: list[str]) -> list[Risk]:
    if has_flag(rest, "--discard-changes") or has_flag(rest, "-f") or has_flag(rest, "--force"):
        return [_risk("critical", cmd, "switches branches throwing away uncommitted changes", _STASH_FIRST)]
    return []


def _stash(cmd: str, rest: list[str]) -> list[Risk]:
    if rest[:1] == ["clear"]:
        return [_risk("critical", cmd, "deletes every stash", "List them first: git stash list; drop single entries instead")]
    if rest[:1] == ["drop"]:
        return [_risk("warning", cmd, "deletes a stash", "Check it first: git stash show -p")]
    return []


def _branch(cmd: str, rest: list[str]) -> list[Risk]:
    if "-D" in rest or ((has_flag(rest, "-d") or "--delete" in rest) and (has_flag(rest, "-f") or "--force" in rest)):
        return [
            _risk("warning", cmd, "deletes a branch even if it is not merged", "Use 'git branch -d', which refuses to delete unmerged work")
        ]
    return []


def _rewrite(cmd: str, rest: list[str]) -> list[Risk]:
    if has_flag(rest, "--help") or has_flag(rest, "--dry-run") or has_flag(rest, "--analyze"):
        return []
    return [
        _risk(
            "critical",
            cmd,
            "rewrites the repository's history",
            "Run it on a fresh clone and keep the original until the result is checked",
        )
    ]


def _prune(cmd: str, rest: list[str]) -> list[Risk]:
    if any(a.endswith("=now") or a.endswith("=all") for a in rest) or ("--all" in rest and cmd.startswith("git reflog")):
        return [_risk("warning", cmd, "makes unreachable commits unrecoverable")]
    return []


def _rm(cmd: str, rest: list[str]) -> list[Risk]:
    if has_flag(rest, "-r") and not has_flag(rest, "--cached") and not has_flag(rest, "-n") and not has_flag(rest, "--dry-run"):
        return [
            _risk("warning", cmd, "deletes tracked files from the worktree", "Preview it first: " + cmd.replace("git rm", "git rm -n", 1))
        ]
    return []


def _push(cmd: str, rest: list[str]) -> list[Risk]:
    force = lease = delete = mirror = False
    for a in rest:
        if a == "--force" or (a.startswith("-") and not a.startswith("--") and "f" in a):
            force = True
        elif a.startswith("--force-with-lease") or a == "--force-if-includes":
            lease = True
        elif a in {"--delete", "-d"}:
            delete = True
        elif a in {"--mirror", "--prune"}:
            mirror = True
    if has_flag(rest, "-n") or has_flag(rest, "--dry-run"):
        return []
    refspecs = positionals(rest, _PUSH)[1:]
    force |= any(r.startswith("+") for r in refspecs)
    delete |= any(r.startswith(":") for r in refspecs)
    branches = {r.lstrip("+").split(":")[-1].removeprefix("refs/heads/") for r in refspecs}
    protected = sorted(branches & PROTECTED_BRANCHES)
    onto = f" on '{protected[0]}'" if protected else ""
    if force:
        return [
            _risk(
                "critical",
                cmd,
                f"overwrites remote history{onto}",
                "Use --force-with-lease so the push fails if someone else pushed",
                kind="force_push",
            )
        ]
    if mirror:
        return [
            _risk(
                "critical",
                cmd,
                "makes the remote match this repository, deleting refs it does not have",
                f"Preview it first: {cmd} --dry-run",
                kind="force_push",
            )
        ]
    if lease:
        sev: Severity = "warning" if protected else "info"
        tips = ("Push to a feature branch and open a merge request instead of rewriting the shared branch",) if protected else ()
        return [
            Risk(
                "force_push",
                sev,
                f"Command '{cmd}' rewrites remote history{onto}" + (f" - {approval_phrase(sev)}" if protected else ""),
                tips,
            )
        ]
    if delete:
        sev = "critical" if protected else "warning"
        return [_risk(sev, cmd, f"deletes a remote branch{onto}", kind="force_push")]
    return []


def _update_ref(cmd: str, rest: list[str]) -> list[Risk]:
    if not (has_flag(rest, "-d") or "--delete" in rest):
        return []
    return [_risk("warning", cmd, "deletes a ref (a branch or tag) without the checks of git branch -d", "Delete branches with 'git branch -d', which refuses unmerged work")]


def _worktree(cmd: str, rest: list[str]) -> list[Risk]:
    if rest[:1] != ["remove"] or not (has_flag(rest, "-f") or "--force" in rest):
        return []
    return [_risk("warning", cmd, "removes a worktree with its uncommitted changes", "See what would be lost first: git -C WORKTREE status")]


_GIT_SUBCOMMANDS = {
    "clean": _clean,
    "reset": _reset,
    "checkout": _checkout,
    "restore": _restore,
    "switch": _switch,
    "stash": _stash,
    "branch": _branch,
    "filter-branch": _rewrite,
    "filter-repo": _rewrite,
    "reflog": _prune,
    "gc": _prune,
    "prune": _prune,
    "rm": _rm,
    "push": _push,
    "update-ref": _update_ref,
    "worktree": _worktree,
}

_HG = tool("hg", values="-R --repository --cwd --config -r --rev -I -X")
_SVN = tool("svn", values="-m --message -r --revision --depth --username --password")


# fmt: off
RULES: tuple[Rule, ...] = (
    Rule("vcs.hg-purge-all", _HG, ("purge|clean",), "critical", "deletes untracked and ignored files", flags=("--all",), unless=("--print", "-p"), suggestion="List them first: hg purge --all --print"),
    Rule("vcs.hg-purge", _HG, ("purge|clean",), "critical", "deletes untracked files", unless=("--print", "-p"), suggestion="List them first: hg purge --print"),
    Rule("vcs.hg-update-clean", _HG, ("update|up|checkout|co",), "critical", "discards uncommitted changes", flags=("-C", "--clean"), suggestion="Shelve the changes first: hg shelve"),
    Rule("vcs.hg-revert-all", _HG, ("revert",), "warning", "reverts every file (it keeps .orig copies)", flags=("--all", "-a"), unless=("-n", "--dry-run")),
    Rule("vcs.hg-strip", _HG, ("strip|prune",), "warning", "removes changesets from history"),
    Rule("vcs.svn-revert-recursive", _SVN, ("revert",), "critical", "discards every local change below the path", flags=("-R", "--recursive", "--depth=infinity"), suggestion="See what would be lost first: svn diff"),
    Rule("vcs.svn-cleanup-remove", _SVN, ("cleanup",), "critical", "deletes unversioned or ignored files", flags=("--remove-unversioned", "--remove-ignored")),
    Rule("vcs.svn-delete-url", _SVN, ("delete|del|remove|rm",), "warning", "deletes a path in the repository"),
)
# fmt: on

PACK = Pack(
    name="vcs",
    summary="git reset/clean/checkout/restore/push --force and history rewrites; hg and svn equivalents",
    rules=RULES,
    handlers={"git": git_risks},
)
