"""User regexes (output_contains, policy rules) run on RE2: linear time, clear refusals."""

from __future__ import annotations

import time

import msgspec
import pytest

from orchestrator.core.assertions import evaluate
from orchestrator.core.policy import Policy, Rule
from orchestrator.core.text import PatternError, user_regex
from schemas.values import OutputContainsTest

CATASTROPHIC = "(a+)+$"  # exponential backtracking in Python's re: 27 characters took 13 s


def test_a_catastrophic_output_pattern_on_a_short_input_returns_at_once() -> None:
    # With Python's re this input alone takes seconds (doubling with each extra "a").
    started = time.perf_counter()
    [result] = evaluate([OutputContainsTest(pattern=CATASTROPHIC)], 0, "a" * 25 + "!", [])
    assert time.perf_counter() - started < 0.5
    assert not result.passed and result.actual == "no match in 26 characters"


def test_a_catastrophic_output_pattern_on_a_long_input_stays_linear() -> None:
    output = ("a" * 10_000 + "!\n") * 100  # 1 MB of near misses
    started = time.perf_counter()
    [result] = evaluate([OutputContainsTest(pattern=CATASTROPHIC)], 0, output, [])
    assert time.perf_counter() - started < 1.0
    assert not result.passed


def test_a_catastrophic_deny_rule_returns_at_once() -> None:
    policy = Policy(deny=[Rule(pattern=CATASTROPHIC, reason="no")], allow=[Rule(pattern="^(x+x+)+y$")])
    started = time.perf_counter()
    assert (
        policy.denial("a" * 100_000 + "!", "bash", [None])
        == "command matches no allow rule for this tool and node; aim it elsewhere with --node or --label"
    )
    assert (
        policy.denial("x" * 100_000, "bash", [None])
        == "command matches no allow rule for this tool and node; aim it elsewhere with --node or --label"
    )
    assert time.perf_counter() - started < 0.5
    assert policy.denial("aaa", "bash", [None]) == "no"


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(\w+) \1", "backreferences are not supported"),
        (r"error(?!: ignored)", "lookahead and lookbehind are not supported"),
        (r"(?<=id=)\d+", "lookahead and lookbehind are not supported"),
        (r"a++", "possessive quantifiers are not supported"),
        (r"done\Z", r"use \z for the end of the text"),
        (r"(unclosed", "missing ): (unclosed"),
    ],
)
def test_a_pattern_re2_cannot_run_fails_its_test_with_the_reason(pattern: str, reason: str) -> None:
    tests = [OutputContainsTest(pattern=pattern), OutputContainsTest(pattern="ok")]
    bad, good = evaluate(tests, 0, "ok\n", [])
    assert not bad.passed
    assert bad.actual.startswith("invalid pattern: ") and reason in bad.actual and "RE2 syntax" in bad.actual
    assert good.passed  # one bad pattern does not spoil the others
    with pytest.raises(PatternError, match="RE2 syntax"):
        user_regex(pattern)


def test_a_policy_with_a_pattern_re2_cannot_run_is_refused_at_load() -> None:
    with pytest.raises(ValueError, match=r"invalid pattern '\(a\)\\\\1': .*backreferences are not supported"):
        Policy(deny=[Rule(pattern=r"(a)\1")])
    with pytest.raises(msgspec.ValidationError, match="lookahead and lookbehind"):
        msgspec.yaml.decode(b"deny:\n  - pattern: 'rm(?= -rf)'\n", type=Policy)


def test_a_pattern_too_big_for_re2s_memory_budget_is_refused() -> None:
    with pytest.raises(PatternError, match="pattern too large"):
        user_regex(r"\pL{1000}")  # a thousand copies of every Unicode letter range


def test_output_patterns_keep_their_meaning() -> None:
    output = "\x1b[32m✓ build ok\x1b[0m\nwarnings: 0\nTHE END\n"
    tests = [
        OutputContainsTest(pattern=r"^warnings: \d+$"),  # ^ and $ at line breaks, as before
        OutputContainsTest(pattern="✓ build"),  # UTF-8 on both sides
        OutputContainsTest(pattern=r"(?i)the end"),
        OutputContainsTest(pattern="error", negate=True),
    ]
    results = evaluate(tests, 0, output, [])
    assert all(r.passed for r in results), results
    assert results[0].actual == "matched 'warnings: 0'"
