"""Masking a job's secret values in what the agent publishes: its output stream, its error text, its test results.

The output is masked as a stream: a secret split across two reads of the terminal is
still found, because bytes that could be the start of a secret are held back until the
next bytes show whether they are (or until the end of output). Everything else passes
byte-exact; only the secret's exact bytes are replaced, by schemas.secrets.MASK (a value
of several lines: also each of its lines). Values (lines) shorter than MIN_MASKED_BYTES are
not masked (they would garble the output and hide nothing).
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.secrets import MASK, MIN_MASKED_BYTES

MASK_BYTES = MASK.encode()


def maskable(values: Iterable[str]) -> tuple[bytes, ...]:
    """The byte strings to mask for these clear secret values, longest first. A value of several
    lines (a private key, a certificate, a connection file) is masked whole and line by line:
    `grep`, `head` or a tool's error message prints one line of it."""
    found: set[bytes] = set()
    for value in values:
        whole = value.encode("utf-8", errors="surrogatepass")
        found.add(whole)
        if b"\n" in whole:
            found.update(line.strip() for line in whole.splitlines())
    return tuple(sorted((b for b in found if len(b) >= MIN_MASKED_BYTES), key=lambda b: (-len(b), b)))


def mask_text(text: str, secrets: Iterable[bytes]) -> str:
    """`text` with every secret replaced by the mask (for error messages and test results)."""
    for secret in secrets:
        text = text.replace(secret.decode("utf-8", errors="surrogatepass"), MASK)
    return text


class OutputMasker:
    """Masks secrets in a byte stream fed in pieces: `feed` returns what may be published
    now, `flush` the rest at the end of the output."""

    def __init__(self, secrets: Iterable[bytes]) -> None:
        self._secrets = tuple(s for s in secrets if s)
        self._longest = max((len(s) for s in self._secrets), default=0)
        self._firsts = frozenset(s[0] for s in self._secrets)
        self._pending = b""

    @property
    def pending(self) -> int:
        """Bytes held back: they may be the start of a secret."""
        return len(self._pending)

    def feed(self, data: bytes) -> bytes:
        if not self._secrets:
            return data
        buf = self._pending + data
        out, self._pending = self._scan(buf, final=False)
        return out

    def flush(self) -> bytes:
        buf, self._pending = self._pending, b""
        out, _ = self._scan(buf, final=True)
        return out

    def _scan(self, buf: bytes, *, final: bool) -> tuple[bytes, bytes]:
        out = bytearray()
        pos = 0
        while True:
            hit = self._next_match(buf, pos)
            if hit is None:
                break
            start, length = hit
            if not final and self._may_grow(buf, start, length):
                # A longer secret may start here and go on in the next bytes: decide then.
                out += buf[pos:start]
                return bytes(out), buf[start:]
            out += buf[pos:start] + MASK_BYTES
            pos = start + length
        keep = len(buf) if final else self._partial_start(buf, pos)
        out += buf[pos:keep]
        return bytes(out), buf[keep:]

    def _next_match(self, buf: bytes, pos: int) -> tuple[int, int] | None:
        """The leftmost complete secret at or after `pos` (the longest at that place)."""
        best: tuple[int, int] | None = None
        for secret in self._secrets:  # longest first: at one place the first found wins
            at = buf.find(secret, pos)
            if at >= 0 and (best is None or at < best[0]):
                best = (at, len(secret))
        return best

    def _may_grow(self, buf: bytes, start: int, length: int) -> bool:
        tail = buf[start:]
        return any(len(s) > length and len(s) > len(tail) and s.startswith(tail) for s in self._secrets)

    def _partial_start(self, buf: bytes, pos: int) -> int:
        """Where the bytes begin that could be the start of a secret cut off by the end of `buf`."""
        for i in range(max(pos, len(buf) - self._longest + 1), len(buf)):
            if buf[i] in self._firsts:
                tail = buf[i:]
                if any(s.startswith(tail) for s in self._secrets):
                    return i
        return len(buf)
