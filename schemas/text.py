"""The text view of raw output, part of the contract (DESIGN §8): ANSI escapes
stripped, CRLF folded, bad UTF-8 replaced; the raw bytes stay as they were.

One definition for the orchestrator (tests, `nexus logs`) and the agent (test tails).
"""

from __future__ import annotations

import re

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), then any other escape:
# ESC, intermediates (0x20-0x2F, e.g. the "(" of ESC ( B), one final byte.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-~]")
CRLF_RUN = re.compile(r"\r+\n")


def text_view(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return CRLF_RUN.sub("\n", ANSI_ESCAPE.sub("", text))
