"""The test phase: evaluate a job's assertions against what happened.

exit_code and output_contains are judged here, from the exit code and the
text view of the output; file_exists, http_ok and command were checked on the
node by the agent, and their results arrive in `exited.checks`, in order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from schemas.events import NODE_TESTS, ExitCodeTest, JobTest, OutputContainsTest, TestResult

_SHOWN = 200  # characters of output quoted in a failed result


def needs_output(tests: Sequence[JobTest]) -> bool:
    return any(isinstance(t, OutputContainsTest) for t in tests)


def evaluate(
    tests: Sequence[JobTest], exit_code: int | None, output: str | None, checks: Sequence[TestResult]
) -> list[TestResult]:
    """One result per test, in the order given."""
    node_results = iter(checks)
    results: list[TestResult] = []
    for test in tests:
        if isinstance(test, ExitCodeTest):
            results.append(
                TestResult(type="exit_code", passed=exit_code == test.expected, expected=str(test.expected), actual=str(exit_code))
            )
        elif isinstance(test, OutputContainsTest):
            results.append(_output_contains(test, output))
        elif isinstance(test, NODE_TESTS):
            found = next(node_results, None)
            if found is None:
                kind = str(test.__struct_config__.tag)
                found = TestResult(type=kind, passed=False, expected="checked on the node", actual="no result from the agent")
            results.append(found)
    return results


def _output_contains(test: OutputContainsTest, output: str | None) -> TestResult:
    expected = f"{'no ' if test.negate else ''}match for /{test.pattern}/"
    if output is None:
        return TestResult(type="output_contains", passed=False, expected=expected, actual="output not available")
    try:
        match = re.search(test.pattern, output, re.MULTILINE)
    except re.error as exc:
        return TestResult(type="output_contains", passed=False, expected=expected, actual=f"invalid pattern: {exc}")
    found = match is not None
    actual = f"matched {match.group(0)[:_SHOWN]!r}" if match else f"no match in {len(output)} characters"
    return TestResult(type="output_contains", passed=found != test.negate, expected=expected, actual=actual)
