"""The text view of raw PTY output (ANSI escapes stripped, CRLF folded, bad UTF-8 replaced), for test tails.

The same view as `orchestrator.core.text.text_view`, kept here so that the agent imports
nothing of the orchestrator; both should import one copy from `schemas` (issue 10).
"""

from __future__ import annotations

import re

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), then any other escape:
# ESC, intermediates (0x20-0x2F, e.g. the "(" of ESC ( B), one final byte.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-~]")
_CRLF = re.compile(r"\r+\n")


def text_view(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return _CRLF.sub("\n", _ANSI.sub("", text))
