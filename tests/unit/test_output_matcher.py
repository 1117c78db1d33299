"""Output tests read the output as a stream: the incremental text view and the windowed matcher."""

from __future__ import annotations

import os
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.assertions import OutputMatcher, evaluate, scan_text
from schemas.text import TextViewStream, text_view
from schemas.values import OutputContainsTest

MiB = 1024 * 1024

# Pieces that stress every boundary: escapes split anywhere, CR runs before LF, split UTF-8, bad bytes.
_PIECES = [
    b"\x1b[31m", b"\x1b[", b"0m", b"\x1b]0;title\x07", b"\x1b]8;;x\x1b\\", b"\x1b", b"(B", b"\x1bM", b"\x1b]", b"\\",
    b"\x07", b"\r", b"\n", b"\r\n", b"ok", b"done", b" ", "é✓".encode(), b"\xff", b"\xe2\x82",
]  # fmt: skip


def _chunks(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(raw)) for c in cuts})
    return [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=30), st.lists(st.integers(0, 200), max_size=8))
def test_the_streamed_text_view_equals_the_whole_one(pieces: list[bytes], cuts: list[int]) -> None:
    raw = b"".join(pieces)
    stream = TextViewStream()
    text = "".join(stream.feed(chunk) for chunk in _chunks(raw, cuts)) + stream.finish()
    assert text == text_view(raw)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"ok", b"done", b"\n", b"\r\n", b" ", b"\x1b[1m", " é ".encode()]), max_size=60),
    st.lists(st.integers(0, 300), max_size=10),
    st.sampled_from([r"^done$", r"\bok\b", r"ok done", r"^ok", r"done$", r"é\s*ok", r"\Aok", r"done\z"]),
)
def test_a_match_shorter_than_the_window_is_found_exactly_when_the_whole_text_has_one(
    pieces: list[bytes], cuts: list[int], pattern: str
) -> None:
    raw = b"".join(pieces)
    matcher = OutputMatcher([OutputContainsTest(pattern=pattern)], window=16)  # tiny: many windows
    for chunk in _chunks(raw, cuts):
        matcher.feed(chunk)
    scan = matcher.finish()
    whole = re.search(pattern.replace(r"\z", r"\Z"), text_view(raw), re.MULTILINE)
    assert (scan.found[pattern] is not None) == (whole is not None)
    if whole is not None:
        assert scan.found[pattern] == whole.group(0)


def test_anchors_see_the_text_around_a_chunk_boundary() -> None:
    # "done" at the start of a chunk is not at the start of a line, "end" at the end of
    # one is not at the end of a line: the matcher keeps one character either side.
    matcher = OutputMatcher([OutputContainsTest(pattern="^done$"), OutputContainsTest(pattern="end$")], window=4)
    for chunk in (b"not ", b"done yet\nthe end", b"ing\n", b"x" * 10):
        matcher.feed(chunk)
    assert matcher.finish().found == {"^done$": None, "end$": None}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_200_mb_of_output_streams_through_in_bounded_memory_and_the_end_is_searched() -> None:
    tests = [
        OutputContainsTest(pattern=r"^THE END \d+$"),
        OutputContainsTest(pattern="ERROR", negate=True),
        OutputContainsTest(pattern="(a+)+$"),  # catastrophic for backtracking engines
    ]
    matcher = OutputMatcher(tests)
    chunk = b"\x1b[32mline of build output 0123456789 aaaaaaaaaaaaaaaaaaaaaaaa!\x1b[0m\r\n" * 1000  # ~70 KB, like a PTY read
    baseline = peak = _rss_bytes()
    fed = 0
    while fed < 200 * MiB:
        matcher.feed(chunk)
        fed += len(chunk)
        if fed % (10 * len(chunk)) == 0:
            peak = max(peak, _rss_bytes())
    matcher.feed(b"THE END 42\r\n")
    scan = matcher.finish()
    peak = max(peak, _rss_bytes())
    assert scan.found == {r"^THE END \d+$": "THE END 42", "ERROR": None, "(a+)+$": None}
    assert scan.characters > 150 * MiB
    assert peak - baseline < 32 * MiB, f"memory grew by {(peak - baseline) / MiB:.0f} MiB while reading 200 MiB"


def test_settled_once_every_pattern_matched() -> None:
    matcher = OutputMatcher([OutputContainsTest(pattern="ready"), OutputContainsTest(pattern="ERROR", negate=True)], window=8)
    matcher.feed(b"starting\nready\n" + b"." * 64)
    assert not matcher.settled  # ERROR has not been seen: the rest of the output may hold it
    matcher.feed(b"ERROR: disk full\n" + b"." * 64)
    assert matcher.settled


def test_evaluate_takes_a_scan_or_the_whole_text() -> None:
    tests = [OutputContainsTest(pattern=r"^build (ok|failed)$"), OutputContainsTest(pattern="warning", negate=True)]
    text = "compiling\nbuild ok\n"
    from_scan = evaluate(tests, 0, scan_text(tests, text), [])
    assert from_scan == evaluate(tests, 0, text, [])
    assert [(r.passed, r.actual) for r in from_scan] == [(True, "matched 'build ok'"), (True, "no match in 19 characters")]


def test_a_scan_without_the_pattern_or_no_scan_at_all_fails_the_test() -> None:
    test = OutputContainsTest(pattern="x")
    assert evaluate([test], 0, None, [])[0].actual == "output not available"
    other = scan_text([OutputContainsTest(pattern="y")], "x")
    assert evaluate([test], 0, other, [])[0].actual == "output not available"
