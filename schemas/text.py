"""The text view of raw output, part of the contract (DESIGN §8): ANSI escapes
stripped, CRLF folded, bad UTF-8 replaced; the raw bytes stay as they were.

One definition for the orchestrator (tests, `nexus logs`, the API's stream) and the agent
(test tails). `text_view(raw)` is the view of bytes taken whole; `TextViewStream` gives the
same view of a byte stream read in chunks (one per stream of an attempt), holding back at
most an unfinished escape sequence, a run of carriage returns and a split UTF-8 character,
so that a character or a sequence cut between two chunks is read whole.
"""

from __future__ import annotations

import codecs
import re

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), then any other escape:
# ESC, intermediates (0x20-0x2F, e.g. the "(" of ESC ( B), one final byte.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-~]")
CRLF_RUN = re.compile(r"\r+\n")


def text_view(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return CRLF_RUN.sub("\n", ANSI_ESCAPE.sub("", text))


# The start of an escape sequence that more input could still complete (or change).
_UNFINISHED_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[ -/]*)\Z")

MAX_HELD_ESCAPE = 4096
"""An escape sequence still open after this many characters is taken as text."""
MAX_HELD_CR = 4096
"""A run of carriage returns longer than this is passed on before its end is known."""


class TextViewStream:
    """`text_view` of a byte stream fed in chunks: `feed(raw)` returns the text that is
    settled so far, `finish()` the rest. Joined, they equal `text_view(all bytes)`,
    except for an escape sequence open longer than MAX_HELD_ESCAPE characters or a
    run of more than MAX_HELD_CR carriage returns (both taken as plain text)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""  # an unfinished escape sequence
        self._crs = 0  # carriage returns at the end of the text so far, not yet emitted

    def feed(self, raw: bytes) -> str:
        return self._settle(self._held + self._decoder.decode(raw), final=False)

    def finish(self) -> str:
        return self._settle(self._held + self._decoder.decode(b"", final=True), final=True)

    def _settle(self, text: str, *, final: bool) -> str:
        self._held = ""
        if not final:
            unfinished = _UNFINISHED_ESCAPE.search(text, max(0, len(text) - MAX_HELD_ESCAPE))
            if unfinished is not None:
                self._held, text = text[unfinished.start() :], text[: unfinished.start()]
        return self._fold_crs(ANSI_ESCAPE.sub("", text), final=final)

    def _fold_crs(self, text: str, *, final: bool) -> str:
        if self._crs:
            body = text.lstrip("\r")
            if not body and not final and self._crs + len(text) <= MAX_HELD_CR:
                self._crs += len(text)
                return ""
            # The held run joins the CRs this text starts with; "\n" next folds them all.
            lead = len(text) - len(body)
            text = ("" if body.startswith("\n") else "\r" * (self._crs + lead)) + body
            self._crs = 0
        if not final:
            body = text.rstrip("\r")
            if len(text) - len(body) <= MAX_HELD_CR:
                self._crs = len(text) - len(body)
                text = body
        return CRLF_RUN.sub("\n", text)


class TextViews:
    """The text view of a job's output as it is read, one `TextViewStream` per stream (stdout,
    stderr) of each attempt: a character is only ever cut between two chunks of one stream of
    one attempt. Chunks come in order, so an attempt's first chunk ends the one before it."""

    def __init__(self) -> None:
        self._views: dict[str, tuple[int, TextViewStream]] = {}

    def feed(self, attempt: int, stream: str, raw: bytes) -> str:
        """The text of `raw` as far as it is settled, after what the attempt before left."""
        before = ""
        current = self._views.get(stream)
        if current is None or current[0] != attempt:
            before = current[1].finish() if current is not None else ""
            current = self._views[stream] = (attempt, TextViewStream())
        return before + current[1].feed(raw)

    def finish(self) -> dict[str, str]:
        """What each stream still holds back (an unfinished character or sequence, trailing CRs)."""
        return {stream: view.finish() for stream, (_, view) in self._views.items()}
