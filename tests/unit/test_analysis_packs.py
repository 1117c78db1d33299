"""Rule packs: the table machinery, and each pack's rows held by corpus commands."""

from __future__ import annotations

import shlex

import pytest

from orchestrator.core.analysis import analyze, normalised_commands
from orchestrator.core.risk.paths import place
from orchestrator.core.risk.table import Rule, has_flag, positionals, rule_matches, tool
from orchestrator.core.risk_rules import PACKS
from orchestrator.core.risk_types import Invocation, Word
from tests.unit.analysis_corpus import CORPUS, TUNED

_PACK_NAMES = [p.name for p in PACKS]


def _invocations(command: str) -> list[Invocation]:
    out = []
    for line in normalised_commands(command):
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        if words:
            out.append(Invocation(tuple(Word(w) for w in words)))
    return out


_CORPUS_INVOCATIONS = [(case, inv) for case in TUNED for inv in _invocations(case.command)]


# --- the table machinery ----------------------------------------------------------------------


def test_flags_match_clusters_values_and_prefixes() -> None:
    spec = tool("x", values="-n --namespace")
    assert has_flag(["-fdx"], "-d", spec)
    assert not has_flag(["--dry-run"], "-d", spec)
    assert has_flag(["--replicas", "0"], "--replicas=0")
    assert has_flag(["--replicas=0"], "--replicas=0")
    assert has_flag(["--delete-after"], "--delete*")
    assert not has_flag(["--", "-f"], "-f")
    assert positionals(["-n", "prod", "delete", "--all", "pods"], spec) == ["delete", "pods"]


def test_verbs_match_alternatives_wildcards_and_affixes() -> None:
    spec = tool("aws")
    row = Rule("t.x", spec, ("*", "delete-*|terminate-*"), "critical", "deletes")
    assert rule_matches(row, Invocation((Word("aws"), Word("ec2"), Word("terminate-instances"))))
    assert not rule_matches(row, Invocation((Word("aws"), Word("ec2"), Word("describe-instances"))))
    deep = Rule("t.y", spec, ("**", "delete"), "critical", "deletes")
    assert rule_matches(deep, Invocation((Word("aws"), Word("a"), Word("b"), Word("delete"))))
    suffix = Rule("t.z", spec, ("taint", "**", "*:noexecute"), "warning", "evicts")
    assert rule_matches(suffix, Invocation((Word("aws"), Word("taint"), Word("n1"), Word("k=v:NoExecute"))))


# --- paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "cwd", "kind", "normalised"),
    [
        ("/", None, "root", "/"),
        ("/*", None, "root", "/"),
        ("~", None, "home", "~"),
        ("$HOME/src", None, "home_data", "~/src"),
        ("$TMPDIR/../etc", None, "system", "/etc"),
        ("${TMPDIR:-/tmp}/x", None, "scratch", "/tmp/x"),
        ("../../../etc", None, "system", "/etc"),
        ("src", None, "project", "src"),
        ("node_modules", None, "build", "node_modules"),
        ("*", "/", "root", "/"),
        ("nginx", "/etc", "system", "/etc/nginx"),
        ("build", "/tmp", "scratch", "/tmp/build"),
        ('"${DIR:?}"', None, "dynamic", '"${DIR:?}"'),
        ("${DIR:?}/*", None, "guarded", "${DIR:?}/*"),
        ("$DIR", None, "dynamic", "$DIR"),
        ("{}", None, "input", "{}"),
        ("/srv/app/releases/4", None, "other", "/srv/app/releases/4"),
    ],
)
def test_paths_are_normalised_then_classified(path: str, cwd: str | None, kind: str, normalised: str) -> None:
    found = place(Word(path, "$" in path), cwd)
    assert (found.kind, found.path) == (kind, normalised)


# --- each pack -----------------------------------------------------------------------------------


def test_rule_ids_are_unique_and_name_their_pack() -> None:
    ids = [r.id for p in PACKS for r in p.rules]
    assert len(ids) == len(set(ids))
    for pack in PACKS:
        assert all(r.id.split(".")[0] in {pack.name, "backups"} for r in pack.rules), pack.name


@pytest.mark.parametrize("pack", PACKS, ids=_PACK_NAMES)
def test_every_destructive_row_is_held_by_a_corpus_command(pack: object) -> None:
    """A row nobody exercises is a row nobody checked: each has a labelled command in the tuned corpus."""
    rows = [r for r in pack.rules if r.severity is not None]  # type: ignore[attr-defined]
    unexercised = [r.id for r in rows if not any(rule_matches(r, inv) and inv.name in r.tool.names for _, inv in _CORPUS_INVOCATIONS)]
    assert not unexercised


@pytest.mark.parametrize("domain", _PACK_NAMES)
def test_each_pack_has_destructive_and_safe_commands(domain: str) -> None:
    cases = [c for c in CORPUS if c.domain == domain]
    assert sum(c.expected == "critical" for c in cases) >= 10, domain
    assert sum(c.expected is None for c in cases) >= 10, domain


@pytest.mark.parametrize(
    ("command", "rated"),
    [
        ("restic forget --keep-last 3", "critical"),
        ("restic forget --keep-last 3 --dry-run", None),
        ("duplicity remove-older-than 1Y --force file:///b", "critical"),
        ("duplicity remove-older-than 1Y file:///b", None),
        ("wipefs -a /dev/sdb", "critical"),
        ("wipefs /dev/sdb", None),
        ("git clean -fdx", "critical"),
        ("git clean -ndx", None),
        ("kubectl delete ns x", "critical"),
        ("kubectl delete ns x --dry-run=client", None),
        ("aws s3 rm s3://b --recursive", "critical"),
        ("aws s3 rm s3://b --recursive --dryrun", None),
    ],
)
def test_a_preview_form_is_safe(command: str, rated: str | None) -> None:
    assert analyze(command).severity == rated
