"""The text view of raw PTY output, and the regexes users write against text.

The text view: ANSI escapes stripped, CRLF folded, bad UTF-8 replaced. The raw
bytes stay in NEXUS_OUTPUT; this is only how people and regex tests read them.
`TextViewStream` gives the same view chunk by chunk, holding back at most an
unfinished escape sequence, a run of carriage returns and a split UTF-8 character.

User regexes (output tests, policy rules) go through `user_regex`: RE2, whose
matching time is linear in the input whatever the pattern, so `(a+)+$` cannot
freeze the orchestrator. RE2 has no backreferences or lookaround; such a
pattern raises `PatternError` with the reason.
"""

from __future__ import annotations

import codecs
import re
from typing import Protocol

import re2  # type: ignore[import-untyped]

from schemas.text import ANSI_ESCAPE, CRLF_RUN

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), then any other escape:
# ESC, intermediates (0x20-0x2F, e.g. the "(" of ESC ( B), one final byte.
# The start of an escape sequence that more input could still complete (or change).
_UNFINISHED_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[ -/]*)\Z")

MAX_HELD_ESCAPE = 4096
"""An escape sequence still open after this many characters is taken as text."""
MAX_HELD_CR = 4096
"""A run of carriage returns longer than this is passed on before its end is known."""
REGEX_MAX_MEM = 2 * 1024 * 1024
"""Memory RE2 may use for one compiled pattern (program and match cache); bigger patterns are refused."""


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


# ---------------------------------------------------------------- user regexes


class PatternError(ValueError):
    """A user's regex that RE2 cannot run; the message says why."""


class Match(Protocol):
    def group(self, index: int = 0) -> bytes: ...


class UserRegex(Protocol):
    """A compiled RE2 pattern, used on UTF-8 bytes (RE2's own form: no copies, byte offsets)."""

    def search(self, text: bytes, pos: int | None = None, endpos: int | None = None) -> Match | None: ...


# Python re constructs users reach for that RE2 refuses, with what to write instead.
_HINTS = (
    (re.compile(r"\\[1-9]|\(\?P=|\\g<"), "backreferences are not supported"),
    (re.compile(r"\(\?<?[=!]"), "lookahead and lookbehind are not supported"),
    (re.compile(r"[*+?}]\+"), "possessive quantifiers are not supported"),
    (re.compile(r"\(\?>"), "atomic groups are not supported"),
    (re.compile(r"\\Z"), r"use \z for the end of the text"),
)


def user_regex(pattern: str, *, multiline: bool = False) -> UserRegex:
    """Compile a user's regex with RE2 (linear time); raises PatternError.
    `multiline`: ^ and $ also match at line breaks."""
    options = re2.Options()
    options.log_errors = False
    options.max_mem = REGEX_MAX_MEM
    try:
        return re2.compile(f"(?m){pattern}" if multiline else pattern, options)  # type: ignore[no-any-return]
    except re2.error as exc:
        if multiline:
            user_regex(pattern)  # fails the same way, quoting the pattern as the user wrote it
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        hint = next((h for probe, h in _HINTS if probe.search(pattern)), None)
        detail = f"{reason}; {hint}" if hint else reason
        raise PatternError(f"{detail} (patterns use RE2 syntax: https://github.com/google/re2/wiki/Syntax)") from None
