"""One `--json` object whose output text is written as it is read (`nexus logs --json`,
`nexus run --json`), so that the verb's memory does not grow with the job's output.

`nexus logs --json` held the whole text view, joined it and encoded it at once: 1.27 GB for
254 MB of output. Here the stdout text goes out as it comes, escaped piece by piece inside one
JSON string; the stderr text waits in a temporary file until that string is closed; the fields
known only at the end (`bytes`, a run's status and exit code) close the object. Key order is
not part of JSON: readers see the same object as when it was encoded in one go.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from typing import Any

import msgspec


class StreamedJson:
    """`{**head, text_key: "<stdout text>", "stderr": "<stderr text>", **tail}` on stdout.

    Nothing is written before the first `feed` or `finish`, so a verb that fails before the
    job's output starts prints no half object; `finish` closes it (also after an error, with
    the error in `tail`) and may be called once."""

    def __init__(self, head: dict[str, Any], text_key: str) -> None:
        self._head = head
        self._text_key = text_key
        self._out = sys.stdout.buffer
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by finish()
        self._opened = False
        self.bytes = 0

    def feed(self, stream: str, text: str, size: int) -> None:
        """Add `text` (the text view of `size` raw bytes) to the stream it came from."""
        self.bytes += size
        if not text:
            return
        escaped = msgspec.json.encode(text)[1:-1]  # the string's JSON form without its quotes
        if stream == "stderr":
            self._stderr.write(escaped)
            return
        self._open()
        self._out.write(escaped)
        self._out.flush()  # a followed job's text is read as it comes

    def finish(self, tail: dict[str, Any]) -> None:
        self._open()
        self._out.write(b'","stderr":"')
        self._stderr.seek(0)
        shutil.copyfileobj(self._stderr, self._out)
        self._stderr.close()
        self._out.write(b'"')
        for key, value in tail.items():
            self._out.write(b"," + msgspec.json.encode(key) + b":" + msgspec.json.encode(value))
        self._out.write(b"}\n")
        self._out.flush()

    def _open(self) -> None:
        if not self._opened:
            self._opened = True
            self._out.write(b"{" + b"".join(msgspec.json.encode(k) + b":" + msgspec.json.encode(v) + b"," for k, v in self._head.items()))
            self._out.write(msgspec.json.encode(self._text_key) + b':"')
