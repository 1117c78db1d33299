"""The output side of a PTY run: read the master on the event loop with a bounded
buffer (pausing the reader applies backpressure to the command), deliver coalesced
chunks (first byte at once, then by size or time), and drain what is left after exit."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable

from agent.masking import OutputMasker

READ_SIZE = 64 * 1024
# After the command exited, output still arriving within this window is
# collected; after that, processes still holding the pty are killed.
DRAIN_QUIET_S = 0.2
# A background process that keeps printing after the command exited would
# never let the output go quiet; give up on it after this long.
DRAIN_MAX_S = 2.0

OutputCallback = Callable[[bytes], Awaitable[None]]


class OutputBudget:
    """How much of one run's output is kept: its first `limit` bytes, whatever the streams (None:
    all of it). What comes after is still read, so the command never blocks on a full terminal,
    and counted in `dropped`; what is kept is a byte-exact prefix of the output."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.kept = 0
        self.dropped = 0

    def keep(self, chunk: bytes) -> bytes:
        """The part of `chunk` that is kept (all of it, a prefix, or nothing)."""
        if self.limit is None:
            return chunk
        room = max(self.limit - self.kept, 0)
        if len(chunk) > room:
            self.dropped += len(chunk) - room
            chunk = chunk[:room]
        self.kept += len(chunk)
        return chunk


class PtyReader:
    """Reads the pty master (or a pipe) into a bounded buffer.

    When the buffer holds ``cap`` bytes the fd is unregistered, so the kernel's
    pty buffer fills up and the command blocks on write (back-pressure) until
    ``take`` makes room again.

    The buffer is a list of the pieces read, each read ending at the next multiple
    of ``chunk`` bytes: ``take(chunk)`` then joins whole pieces (one copy; none when one
    read filled the chunk) instead of appending every read to one bytearray and
    copying the chunk out of it again.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, cap: int, chunk: int, read_size: int = READ_SIZE) -> None:
        self._loop = loop
        self._fd = fd
        self._cap = cap
        self._chunk = chunk
        self._read_size = read_size
        self._pieces: deque[bytes] = deque()
        self._size = 0
        self._registered = False
        self.eof = False
        self.error: OSError | None = None
        self.changed = asyncio.Event()  # data arrived, room was made or eof
        self.first_unflushed_at: float | None = None
        self.last_activity_at = time.monotonic()
        self.delivered_bytes = 0
        self.delivered_chunks = 0

    @property
    def buffered(self) -> int:
        return self._size

    @property
    def paused(self) -> bool:
        return not self.eof and not self._registered

    def start(self) -> None:
        os.set_blocking(self._fd, False)
        self._resume()

    def stop(self) -> None:
        """End of output: no more reads; what is buffered is still delivered."""
        self._pause()
        if not self.eof:
            self.eof = True
            self.changed.set()

    def take(self, n: int) -> bytes:
        """The first ``n`` buffered bytes (all of them if fewer)."""
        parts: list[bytes] = []
        need = min(n, self._size)
        while need:
            piece = self._pieces.popleft()
            if len(piece) > need:  # only when a read was not aligned to the chunk size
                self._pieces.appendleft(piece[need:])
                piece = piece[:need]
            parts.append(piece)
            need -= len(piece)
        chunk = parts[0] if len(parts) == 1 else b"".join(parts)
        self._size -= len(chunk)
        # Remaining bytes count as fresh so a full-chunk flush is not
        # followed by a tiny one straight away.
        self.first_unflushed_at = time.monotonic() if self._size else None
        if not self.eof and self._size < self._cap:
            self._resume()
        return chunk

    def _resume(self) -> None:
        if not self._registered and not self.eof:
            self._loop.add_reader(self._fd, self._on_readable)
            self._registered = True
            self.last_activity_at = time.monotonic()
            self.changed.set()

    def _pause(self) -> None:
        if self._registered:
            self._loop.remove_reader(self._fd)
            self._registered = False

    def _on_readable(self) -> None:
        got = False
        while self._size < self._cap:
            # Up to the next chunk boundary, so that no piece straddles two chunks.
            want = min(self._read_size, self._cap - self._size, self._chunk - self._size % self._chunk)
            try:
                data = os.read(self._fd, want)
            except BlockingIOError:
                break
            except OSError as e:
                # Linux reports "all slave fds closed" as EIO on the master.
                if e.errno != errno.EIO:
                    self.error = e
                self.stop()
                return
            if not data:
                self.stop()
                return
            if not self._size:
                self.first_unflushed_at = time.monotonic()
            self._pieces.append(data)
            self._size += len(data)
            got = True
        if self._size >= self._cap:
            self._pause()
        if got:
            self.last_activity_at = time.monotonic()
            self.changed.set()


async def deliver(
    reader: PtyReader,
    on_output: OutputCallback,
    chunk_max: int,
    interval_s: float,
    masker: OutputMasker | None = None,
    budget: OutputBudget | None = None,
) -> None:
    """Hand buffered bytes to ``on_output`` in order, coalesced into chunks; with a
    ``masker``, the job's secrets replaced by the mask first (a secret split across two
    chunks included: the bytes that may start one wait for the next chunk); with a
    ``budget``, only what it keeps (what is past it is read and dropped)."""

    async def publish(chunk: bytes) -> None:
        if budget is not None:
            chunk = budget.keep(chunk)
        if chunk:
            await on_output(chunk)
            reader.delivered_bytes += len(chunk)
            reader.delivered_chunks += 1

    async def emit(n: int) -> None:
        chunk = reader.take(n)
        await publish(masker.feed(chunk) if masker is not None else chunk)

    async def flush() -> None:
        if masker is not None and masker.pending:
            await publish(masker.flush())

    try:
        try:
            await _deliver_until_eof(reader, emit, chunk_max, interval_s)
        except OSError as exc:
            if exc is reader.error:  # the end of output, if a broken one: publish what was held back
                await flush()
            raise
        await flush()
    except BaseException:
        # Nobody will take bytes any more: stop reading so that waiting for
        # the end of output cannot hang on a full buffer.
        reader.stop()
        raise


async def _deliver_until_eof(
    reader: PtyReader,
    emit: Callable[[int], Awaitable[None]],
    chunk_max: int,
    interval_s: float,
) -> None:
    while True:
        reader.changed.clear()
        if reader.buffered >= chunk_max:
            await emit(chunk_max)
        elif reader.eof:
            while reader.buffered:
                await emit(chunk_max)
            if reader.error is not None:
                raise reader.error
            return
        elif reader.buffered:
            assert reader.first_unflushed_at is not None
            due = reader.first_unflushed_at + interval_s - time.monotonic()
            # The first bytes go at once (someone may be watching for a prompt or a
            # progress line); after that, coalescing by size or time keeps chunks few.
            if due <= 0 or reader.delivered_chunks == 0:
                await emit(reader.buffered)
            else:
                await _wait_event(reader.changed, due)
        else:
            await reader.changed.wait()


async def drain(reader: PtyReader) -> bool:
    """Read until EOF or quiet; True if EOF was reached.

    Time spent paused on a slow ``on_output`` does not count as quiet.
    """
    began = time.monotonic()
    hard_deadline = began + DRAIN_MAX_S
    while not reader.eof:
        reader.changed.clear()
        if reader.paused:
            await reader.changed.wait()
            continue
        now = time.monotonic()
        quiet_until = max(reader.last_activity_at, began) + DRAIN_QUIET_S
        if now >= quiet_until or now >= hard_deadline:
            return False
        await _wait_event(reader.changed, min(quiet_until, hard_deadline) - now)
    return True


async def _wait_event(event: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
