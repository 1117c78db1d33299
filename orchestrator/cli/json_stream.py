"""One `--json` object whose output text is written as it is read (`nexus logs --json`,
`nexus run --json`), so that the verb's memory does not grow with the job's output.

`nexus logs --json` held the whole text view, joined it and encoded it at once: 1.27 GB for
254 MB of output. Here the stdout text goes out as it comes, escaped piece by piece inside one
JSON string; the stderr text waits in a temporary file until that string is closed; the fields
known only at the end (`bytes`, a run's status and exit code) close the object. Key order is
not part of JSON: readers see the same object as when it was encoded in one go.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from typing import Any

import msgspec

from orchestrator.cli import process
from schemas.text import TextViews


class StreamedJson:
    """`{**head, text_key: "<stdout text>", "stderr": "<stderr text>", **tail}` on stdout, the
    text views (schemas.text) of the raw chunks fed, each stream of each attempt read across its
    chunks (a character cut between two is read whole).

    Nothing is written before the first `feed` or `finish`, so a verb that fails before the
    job's output starts prints no half object; `finish` closes it (also after an error, with
    the error in `tail`) and may be called once. When stdout is gone (a closed pipe, as with
    `| head`), `on_gone` is called once and the rest is dropped (`nexus run` then cancels the
    job, as it does without --json); without `on_gone` the error is raised."""

    def __init__(self, head: dict[str, Any], text_key: str, on_gone: Callable[[], None] | None = None) -> None:
        self._head = head
        self._text_key = text_key
        self._on_gone = on_gone
        self._out = sys.stdout.buffer
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by finish()
        self._views = TextViews()
        self._opened = False
        self.gone = False
        self.bytes = 0

    def feed(self, attempt: int, stream: str, raw: bytes) -> None:
        """Add a chunk of raw output of `attempt` to the stream it came from."""
        self.bytes += len(raw)
        self._add(stream, self._views.feed(attempt, stream, raw))

    def _add(self, stream: str, text: str) -> None:
        if not text:
            return
        escaped = msgspec.json.encode(text)[1:-1]  # the string's JSON form without its quotes
        if stream == "stderr":
            self._stderr.write(escaped)
            return
        self._open()
        self._write(escaped, flush=True)  # a followed job's text is read as it comes

    def finish(self, tail: dict[str, Any]) -> None:
        """Close the object: what the text views still held, then the fields of `tail`."""
        for stream, rest in self._views.finish().items():
            self._add(stream, rest)
        self._open()
        self._write(b'","stderr":"')
        self._stderr.seek(0)
        while piece := self._stderr.read(1 << 20):
            self._write(piece)
        self._stderr.close()
        fields = b"".join(b"," + msgspec.json.encode(key) + b":" + msgspec.json.encode(value) for key, value in tail.items())
        self._write(b'"' + fields + b"}\n", flush=True)

    def _open(self) -> None:
        if not self._opened:
            self._opened = True
            head = b"".join(msgspec.json.encode(k) + b":" + msgspec.json.encode(v) + b"," for k, v in self._head.items())
            self._write(b"{" + head + msgspec.json.encode(self._text_key) + b':"')

    def _write(self, data: bytes, *, flush: bool = False) -> None:
        if self.gone:
            return
        try:
            self._out.write(data)
            if flush:
                self._out.flush()
        except OSError:
            if self._on_gone is None:
                raise
            self.gone = True
            process.drop_stdout()
            self._on_gone()
