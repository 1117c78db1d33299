"""The vocabulary of the risk rules: argv words, unwrapped commands, risks and severities.

Every pack under `orchestrator.core.risk` takes an `Invocation` and returns `Risk` values;
`orchestrator.core.analysis` builds the `Word`s and turns the risks into findings.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Literal

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[Severity, int] = {"info": 1, "warning": 2, "critical": 3}


@dataclass(frozen=True, slots=True)
class Word:
    """One argv word after quote removal; `dynamic` if it holds a parameter or substitution."""

    text: str
    dynamic: bool = False
    substituted: frozenset[str] = frozenset()  # programs run by $(...) / <(...) inside the word
    # An expansion outside quotes (`$c`, not `"$c"`): bash splits its value into words on IFS, so
    # `c="rm -rf /x"; $c` runs `rm` with two arguments.
    split: bool = False


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
    cwd: str | None = None  # the working directory when it is known (`cd /srv && ...`, the job's)
    stdin_fed: bool = False  # a pipe, heredoc or here-string feeds the program's stdin

    @property
    def name(self) -> str:
        return program(self.argv[0]) if self.argv else ""

    @property
    def args(self) -> list[str]:
        return [w.text for w in self.argv[1:]]

    @property
    def line(self) -> str:
        return " ".join(w.text for w in self.argv)


def program(word: Word) -> str:
    return posixpath.basename(word.text) or word.text


def approval_phrase(severity: Severity) -> str:
    return "requires approval" if severity == "critical" else "review before running"


def worst(risks: list[Risk]) -> Severity | None:
    return max((r.severity for r in risks), key=SEVERITY_RANK.__getitem__, default=None)
