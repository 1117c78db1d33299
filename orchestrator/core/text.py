"""The regexes users write against the text view of output (schemas.text).

User regexes (output tests, policy rules) go through `user_regex`: RE2, whose
matching time is linear in the input whatever the pattern, so `(a+)+$` cannot
freeze the orchestrator. RE2 has no backreferences or lookaround; such a
pattern raises `PatternError` with the reason.
"""

from __future__ import annotations

import re
from typing import Protocol

import re2  # type: ignore[import-untyped]

REGEX_MAX_MEM = 2 * 1024 * 1024
"""Memory RE2 may use for one compiled pattern (program and match cache); bigger patterns are refused."""


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
