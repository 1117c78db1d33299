"""Declarative rule tables: how a program's command line is read and what a row matches.

A `Tool` says how to read a program's arguments (its names, the options that take a value,
whether `-fdx` means `-f -d -x`). A `Rule` row says: when the leading positional words match
`verbs` and one of `flags` is present (and none of `unless`), the command has this effect, at
this severity, with this suggestion. A row with `severity=None` is a safe form and ends the
search, so `wipefs` (which only lists) or `restic forget --dry-run` stay quiet. Rows are tried
in order; the first that matches decides. A `Pack` groups a domain's rows with the handlers for
what a table cannot say (path classes, SQL text); a handler that returns None defers to the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from orchestrator.core.risk_types import Invocation, Risk, Severity, approval_phrase

_MAX_SHOWN = 120


@dataclass(frozen=True, slots=True)
class Tool:
    """How to read a program's command line."""

    names: frozenset[str]
    value_options: frozenset[str] = frozenset()
    clusters: bool = True  # `-fdx` is `-f -d -x`


def tool(*names: str, values: str = "", clusters: bool = True) -> Tool:
    return Tool(frozenset(names), frozenset(values.split()), clusters)


@dataclass(frozen=True, slots=True)
class Rule:
    """One row: leading positional `verbs`, required and excluding flags, the effect and its severity.

    `verbs`: one pattern per positional word; `a|b` alternatives, `*` any one word, `**` any
    number of words, and `*` inside a word a glob (`delete-*`, `*:noexecute`). `flags`: at least one present (empty: none needed); `-f`
    also matches inside a cluster (`-fd`), `--x=v` matches `--x=v` or `--x v`, `--x*` a prefix.
    `suggestion` may use `{cmd}`, the command line as written.
    """

    id: str
    tool: Tool
    verbs: tuple[str, ...]
    severity: Severity | None
    effect: str = ""
    flags: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()
    suggestion: str = ""
    type: str = "destructive_command"


Handler = Callable[[Invocation], "list[Risk] | None"]


@dataclass(frozen=True, slots=True)
class Pack:
    name: str
    summary: str
    rules: tuple[Rule, ...] = ()
    handlers: Mapping[str, Handler] = field(default_factory=dict)


# --- reading a command line ----------------------------------------------------------------


def positionals(args: Sequence[str], spec: Tool) -> list[str]:
    """The non-option words, with option values skipped (`-n ns`, `--profile p`)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            out.extend(args[i + 1 :])
            break
        if a.startswith("-") and len(a) > 1:
            if a in spec.value_options:
                i += 1
        else:
            out.append(a)
        i += 1
    return out


def has_flag(args: Sequence[str], flag: str, spec: Tool | None = None) -> bool:
    clusters = spec is None or spec.clusters
    key, eq, value = flag.partition("=")
    for i, a in enumerate(args):
        if a == "--":
            return False
        if eq:
            if a == flag or (a == key and i + 1 < len(args) and args[i + 1] == value):
                return True
        elif flag.endswith("*"):
            if a.startswith(flag[:-1]):
                return True
        elif a == flag or (a.startswith(flag + "=") and flag.startswith("--")) or (clusters and _in_cluster(flag, a)):
            return True
    return False


def _in_cluster(flag: str, arg: str) -> bool:
    """`-f` inside `-fdx`."""
    short = len(flag) == 2 and flag[0] == "-"
    return short and len(arg) > 2 and arg[0] == "-" and arg[1] != "-" and arg[1:].isalpha() and flag[1] in arg[1:]


def _verbs_match(patterns: Sequence[str], words: Sequence[str]) -> bool:
    if not patterns:
        return True
    head, rest = patterns[0], patterns[1:]
    if head == "**":
        return any(_verbs_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    word = words[0].lower()
    for alt in head.split("|"):
        if alt == word or ("*" in alt and fnmatchcase(word, alt)):
            return _verbs_match(rest, words[1:])
    return False


def rule_matches(rule: Rule, inv: Invocation) -> bool:
    args = inv.args
    if not _verbs_match(rule.verbs, positionals(args, rule.tool)):
        return False
    if rule.flags and not any(has_flag(args, f, rule.tool) for f in rule.flags):
        return False
    return not any(has_flag(args, f, rule.tool) for f in rule.unless)


def shown(inv: Invocation) -> str:
    line = inv.line
    return line if len(line) <= _MAX_SHOWN else line[: _MAX_SHOWN - 3] + "..."


def rule_risk(rule: Rule, inv: Invocation) -> Risk:
    assert rule.severity is not None
    cmd = shown(inv)
    tips = (rule.suggestion.replace("{cmd}", cmd),) if rule.suggestion else ()
    return Risk(rule.type, rule.severity, f"Command '{cmd}' {rule.effect} - {approval_phrase(rule.severity)}", tips)


def evaluate(rules: Sequence[Rule], inv: Invocation) -> list[Risk]:
    """The risk of the first row that matches, or nothing (also when a safe row matches first)."""
    for rule in rules:
        if rule_matches(rule, inv):
            return [] if rule.severity is None else [rule_risk(rule, inv)]
    return []
