"""Publish one attempt's output chunks with several in flight, stored in order, each once.

One acknowledged publish at a time costs a round trip through JetStream per chunk, and bulk
output (`tty: false`) waited on it. Here up to `window` publishes are in flight. A chunk sent
before the one it follows is known to be stored carries that one as its expectation
(`publish_output(after=...)`): the server stores it only right after it, else refuses it
(OutOfTurn) and nothing is stored. So the chunks stored are always 1..m in order, whatever
fails: a publish lost with a dropped connection while the next one goes out after the
reconnect, a refusal by a cluster's old leader, a time-out.

Every chunk is then settled in order: a chunk whose publish failed in any retryable way is
published again once every chunk before it is stored, alone and without an expectation
(it cannot land out of order then; its msg id makes it a duplicate if the first one was
stored after all). A chunk refused as out of turn because another job's output came in
between (the expectation is stream-wide) costs speed only; after one, the next chunks go
one at a time for a while, so jobs writing at once do not refuse each other's chunks.

What `publish` raises that is not retryable (`BusError.retryable` false) comes out of `send`
or `close`; the owner then calls `abandon` for the chunks still in flight (as it does when
it stops early).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bus.errors import BusError, OutOfTurn
from bus.port import OutputStream

# Chunks in flight at once (pipes: 1 MiB each, PTY: 256 KiB): enough to keep the server and
# the agent busy at the same time; the agent's memory holds them until they are stored.
WINDOW = 4
# After a chunk refused because other output came in between: this many go one at a time.
ALONE_AFTER_OUT_OF_TURN = 16

PublishChunk = Callable[[int, bytes, OutputStream, int | None], Awaitable[None]]
Retry = Callable[[Callable[[], Awaitable[None]]], Awaitable[object]]


@dataclass
class _InFlight:
    number: int
    data: bytes
    stream: OutputStream
    publish: asyncio.Future[None]

    def stored(self) -> bool:
        return self.publish.done() and not self.publish.cancelled() and self.publish.exception() is None


class OutputWindow:
    """The chunks of one attempt, numbered 1, 2, ... in the order `send` is called.

    `publish(number, data, stream, after)` is one attempt to store a chunk (`after`: the chunk it
    must follow, or None); `retry(action)` repeats an action until it succeeds (the agent's
    retry-until-stored, which re-raises what is not retryable)."""

    def __init__(self, publish: PublishChunk, retry: Retry, window: int = WINDOW) -> None:
        self._publish = publish
        self._retry = retry
        self._window = window
        self._flight: deque[_InFlight] = deque()
        self._next = 1
        self._alone = 0  # chunks still to send one at a time
        self._lock = asyncio.Lock()  # both streams of a `tty: false` job send at once

    async def send(self, data: bytes, stream: OutputStream = "stdout") -> None:
        """Start storing `data` as the next chunk; returns once fewer than `window` are in flight."""
        async with self._lock:
            limit = 1 if self._alone else self._window
            while len(self._flight) >= limit:
                await self._settle_first()
            self._alone = max(0, self._alone - 1)
            number, self._next = self._next, self._next + 1
            # Stored chunks are always 1..m (see the module docstring): when the previous one
            # is stored, so is every one before it, and this one needs no expectation.
            after = number - 1 if self._flight and not self._flight[-1].stored() else None
            publish = asyncio.ensure_future(self._publish(number, data, stream, after))
            self._flight.append(_InFlight(number, data, stream, publish))

    async def close(self) -> None:
        """Wait until every chunk sent is stored."""
        async with self._lock:
            while self._flight:
                await self._settle_first()

    def abandon(self) -> None:
        """Stop the publishes still in flight: after a failure, or when the job ends without
        waiting for them (the agent stops). A no-op after `close`."""
        while self._flight:
            chunk = self._flight.popleft()
            chunk.publish.cancel()
            # Retrieve a failure nobody will wait for (asyncio would warn about it).
            chunk.publish.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _settle_first(self) -> None:
        chunk = self._flight[0]
        try:
            await chunk.publish
        except BusError as exc:
            if not exc.retryable:
                raise
            if isinstance(exc, OutOfTurn):
                self._alone = ALONE_AFTER_OUT_OF_TURN
            # Every chunk before this one is stored: alone, it cannot land out of order.
            await self._retry(lambda: self._publish(chunk.number, chunk.data, chunk.stream, None))
        self._flight.popleft()
