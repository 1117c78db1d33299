"""The text view of raw PTY output."""

from __future__ import annotations

import pytest

from schemas.text import TextViews, text_view


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        pytest.param(b"\x1b[31mred\x1b[0m", "red", id="sgr-colour"),
        pytest.param(b"\x1b[1;38;5;208mbold orange\x1b[m plain", "bold orange plain", id="sgr-256"),
        pytest.param(b"\x1b[38;2;1;2;3mtrue\x1b[39m", "true", id="sgr-truecolour"),
        pytest.param(b"\x1b[2K\x1b[1Gprogress", "progress", id="erase-and-move"),
        pytest.param(b"\x1b[?25lhidden cursor\x1b[?25h", "hidden cursor", id="private-mode"),
        pytest.param(b"\x1b]0;my title\x07after", "after", id="osc-bel"),
        pytest.param(b"\x1b]0;my title\x1b\\after", "after", id="osc-st"),
        pytest.param(
            b"\x1b]8;;https://example.com\x1b\\link\x1b]8;;\x1b\\",
            "link",
            id="osc-8-hyperlink",
        ),
        pytest.param(b"a\x1bMb\x1bDc\x1bEd", "abcd", id="two-byte-escapes"),
    ],
)
def test_strips_ansi_escapes(raw: bytes, text: str) -> None:
    assert text_view(raw) == text


def test_folds_crlf() -> None:
    assert text_view(b"one\r\ntwo\r\nthree") == "one\ntwo\nthree"


def test_lone_cr_is_kept() -> None:
    # Progress bars redraw with a bare CR; the text view only folds line endings.
    assert text_view(b"10%\r50%\r100%\n") == "10%\r50%\r100%\n"


def test_replaces_invalid_utf8() -> None:
    assert text_view(b"ok \xff\xfe bad") == "ok \ufffd\ufffd bad"
    assert text_view(b"cut \xe2\x82") == "cut \ufffd"


def test_keeps_valid_utf8() -> None:
    s = "héllo wörld ✓ 日本"
    assert text_view(s.encode()) == s


@pytest.mark.parametrize(
    "plain",
    [
        "",
        "hello\n",
        "a\tb\nc [31m not an escape ] ; \\ ~",
        "multi\nline\n\ntext with 100% of [brackets]",
    ],
)
def test_plain_text_is_unchanged(plain: str) -> None:
    assert text_view(plain.encode()) == plain


def test_everything_together() -> None:
    raw = b"\x1b]0;job\x07\x1b[32mPASS\x1b[0m test_a\r\n\x1b[31mFAIL\x1b[0m test_b \xff\r\n"
    assert text_view(raw) == "PASS test_a\nFAIL test_b \ufffd\n"


def test_is_idempotent_on_its_output() -> None:
    once = text_view(b"\x1b[1mx\x1b[0m\r\ny\r\n")
    assert text_view(once.encode()) == once


def test_pty_crcrlf_leaves_no_crlf() -> None:
    text = text_view(b"line one\r\r\nline two\r\r\n")
    assert "\r\n" not in text


@pytest.mark.parametrize(
    "escape",
    [
        pytest.param(b"\x1b(B", id="charset-ESC(B-from-tput-sgr0"),
        pytest.param(b"\x1b7", id="DECSC-ESC7"),
        pytest.param(b"\x1b8", id="DECRC-ESC8"),
        pytest.param(b"\x1b=", id="DECKPAM-ESC="),
        pytest.param(b"\x1b>", id="DECKPNM-ESC>"),
        pytest.param(b"\x1bc", id="RIS-ESCc"),
    ],
)
def test_other_common_escapes_are_stripped(escape: bytes) -> None:
    assert text_view(b"before" + escape + b"after") == "beforeafter"


def test_text_views_read_each_stream_of_each_attempt_across_its_chunks() -> None:
    one, two, err = "\u00e9\u4e2d\U0001f600\x1b[31mred\x1b[0m\r\n".encode(), "ok \u4e2d".encode(), "\U0001f600!".encode()
    views = TextViews()
    got = {"stdout": "", "stderr": ""}
    # Cut everywhere, the streams interleaved; attempt 2's first chunk ends attempt 1.
    for i in range(len(one)):
        got["stdout"] += views.feed(1, "stdout", one[i : i + 1])
        if i < len(err):
            got["stderr"] += views.feed(1, "stderr", err[i : i + 1])
    got["stdout"] += views.feed(2, "stdout", two[:4]) + views.feed(2, "stdout", two[4:])
    for stream, rest in views.finish().items():
        got[stream] += rest
    assert got == {"stdout": text_view(one) + text_view(two), "stderr": text_view(err)}
