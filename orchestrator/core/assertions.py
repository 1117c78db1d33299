"""The test phase: evaluate a job's assertions against what happened.

exit_code and output_contains are judged here, from the exit code and the
text view of the output; file_exists, http_ok and command were checked on the
node by the agent, and their results arrive in `exited.checks`, in order.

output_contains patterns are RE2 (`text.user_regex`: linear time, no
backreferences or lookaround), with ^ and $ matching at line breaks. The
output is not held in memory: `OutputMatcher` reads it chunk by chunk and
`evaluate` gets the `OutputScan` it produced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orchestrator.core.text import PatternError, UserRegex, user_regex
from schemas.limits import MAX_OUTPUT_TEST_BYTES
from schemas.text import TextViewStream
from schemas.values import NODE_TESTS, ExitCodeTest, JobTest, OutputContainsTest, TestResult

_SHOWN = 200  # characters of output quoted in a result


def needs_output(tests: Sequence[JobTest]) -> bool:
    return any(isinstance(t, OutputContainsTest) for t in tests)


def pattern_problem(pattern: str) -> str | None:
    """Why an output_contains pattern could never be judged (compiled as `OutputMatcher` compiles it); None when it can."""
    try:
        user_regex(pattern, multiline=True)
    except PatternError as exc:
        return f"invalid pattern {pattern!r}: {exc}"
    return None


def tests_problem(tests: Sequence[JobTest]) -> str | None:
    """Why one of `tests` could never be judged (the first such); None when all can. Refused
    before anything runs, rather than failing the job after its command ran."""
    for n, test in enumerate(tests, 1):
        if isinstance(test, OutputContainsTest) and (why := pattern_problem(test.pattern)) is not None:
            return f"test {n} (output_contains): {why}"
    return None


@dataclass(frozen=True)
class OutputScan:
    """What an `OutputMatcher` saw: per pattern, the start of its first match (None:
    no match) or why the pattern cannot run, and how many characters of text it read."""

    found: Mapping[str, str | None]
    errors: Mapping[str, str]
    characters: int


class OutputMatcher:
    """Searches a job's output for the patterns of its output_contains tests, fed in chunks.

    Raw chunks become the text view incrementally (`TextViewStream`). The text is
    searched (as UTF-8) each time `window` bytes of it are new, together with the
    last `window` bytes already searched, so memory stays about 3 x `window` plus
    one chunk, whatever the size of the output. A match of at most `window` bytes
    is always found; a longer one may be missed. `settled` turns true once every pattern has matched
    (or cannot run): the rest of the output cannot change the verdict.
    """

    def __init__(self, tests: Sequence[JobTest], window: int = MAX_OUTPUT_TEST_BYTES) -> None:
        self._regexes: dict[str, UserRegex] = {}
        self._errors: dict[str, str] = {}
        for test in tests:
            if isinstance(test, OutputContainsTest) and test.pattern not in self._regexes:
                try:
                    self._regexes[test.pattern] = user_regex(test.pattern, multiline=True)
                except PatternError as exc:
                    self._errors[test.pattern] = str(exc)
        self._found: dict[str, str | None] = dict.fromkeys(self._regexes)
        self._window = window
        self._stream = TextViewStream()
        # UTF-8 from here on: RE2 searches bytes without copying or converting offsets.
        self._tail = b""  # text searched before, kept for matches that continue into new text
        self._start = 0  # where in `_tail` a match may start (after one character of look-behind)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._characters = 0

    @property
    def settled(self) -> bool:
        return all(found is not None for found in self._found.values())

    def feed(self, raw: bytes) -> None:
        """Add raw output bytes."""
        self.feed_text(self._stream.feed(raw))

    def feed_text(self, text: str) -> None:
        """Add text that is already the text view."""
        if not text:
            return
        self._characters += len(text)
        data = text.encode("utf-8", errors="surrogatepass")
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= self._window:
            self._search(final=False)

    def finish(self) -> OutputScan:
        """The end of the output: search what is left and report."""
        self.feed_text(self._stream.finish())
        self._search(final=True)
        return OutputScan(found=dict(self._found), errors=dict(self._errors), characters=self._characters)

    def _search(self, *, final: bool) -> None:
        region = self._tail + b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        # Before the end, the last character is only look-ahead: `$`, `\b` and `\z` need
        # to see what follows; it is searched next time, from the kept tail.
        end = len(region) if final else max(_char_start(region, len(region) - 1), self._start)
        for pattern, regex in self._regexes.items():
            if self._found[pattern] is None:
                match = regex.search(region, self._start, end)
                if match is not None:
                    self._found[pattern] = match.group(0).decode("utf-8", errors="replace")[:_SHOWN]
        if len(region) > self._window + 4:
            cut = _char_start(region, len(region) - self._window)
            behind = _char_start(region, cut - 1)  # look-behind for `^` and `\b`
            self._tail, self._start = region[behind:], cut - behind
        else:
            self._tail = region


def _char_start(data: bytes, index: int) -> int:
    """The start of the UTF-8 character at `index` (UTF-8 continuation bytes are 10xxxxxx)."""
    while index > 0 and data[index] & 0xC0 == 0x80:
        index -= 1
    return max(index, 0)


def scan_text(tests: Sequence[JobTest], text: str) -> OutputScan:
    """`OutputMatcher` over text that is already whole (and already the text view)."""
    matcher = OutputMatcher(tests)
    matcher.feed_text(text)
    return matcher.finish()


def evaluate(
    tests: Sequence[JobTest],
    exit_code: int | None,
    output: OutputScan | str | None,
    checks: Sequence[TestResult],
    no_exit_code: str = "no exit code",
    no_node_result: str = "no result from the agent",
) -> list[TestResult]:
    """One result per test, in the order given. `output`: the scan of the attempt's
    output for these tests (or its whole text view), None when it cannot be read.
    `no_exit_code`: what an exit_code test got when there is no exit code (and why);
    `no_node_result`: what a node-side test got when the node gave no result (and why)."""
    if isinstance(output, str):
        output = scan_text(tests, output)
    node_results = iter(checks)
    results: list[TestResult] = []
    for test in tests:
        if isinstance(test, ExitCodeTest):
            results.append(
                TestResult(
                    type="exit_code",
                    passed=exit_code == test.expected,
                    expected=str(test.expected),
                    actual=no_exit_code if exit_code is None else str(exit_code),
                )
            )
        elif isinstance(test, OutputContainsTest):
            results.append(_output_contains(test, output))
        elif isinstance(test, NODE_TESTS):
            found = next(node_results, None)
            if found is None:
                kind = str(test.__struct_config__.tag)
                found = TestResult(type=kind, passed=False, expected="checked on the node", actual=no_node_result)
            results.append(found)
    return results


def _output_contains(test: OutputContainsTest, scan: OutputScan | None) -> TestResult:
    expected = f"{'no ' if test.negate else ''}match for /{test.pattern}/"
    if scan is not None and test.pattern in scan.errors:
        return TestResult(type="output_contains", passed=False, expected=expected, actual=f"invalid pattern: {scan.errors[test.pattern]}")
    if scan is None or test.pattern not in scan.found:
        return TestResult(type="output_contains", passed=False, expected=expected, actual="output not available")
    found = scan.found[test.pattern]
    actual = f"matched {found!r}" if found is not None else f"no match in {scan.characters} characters"
    return TestResult(type="output_contains", passed=(found is not None) != test.negate, expected=expected, actual=actual)
