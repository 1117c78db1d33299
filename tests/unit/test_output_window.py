"""OutputWindow: several output chunks in flight, stored in order and once, whatever fails.

The bus is the in-memory twin (the same contract as JetStream: a chunk `after` another is
refused unless that one is the last stored; a chunk sent again is a duplicate). A gate per
publish lets a test decide when each one reaches the "server", and how it ends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from agent.output_window import ALONE_AFTER_OUT_OF_TURN, OutputWindow
from bus.errors import BusError
from bus.memory import MemoryBus
from bus.port import OutputStream
from tests.conftest import wait_for


@dataclass
class GatedServer:
    """Each publish waits at its gate (opened by the test, or at once when `open`), then
    either reaches the bus, is lost on the way (a retryable error, nothing stored), or is
    stored but its ack is lost (a retryable error after storing)."""

    bus: MemoryBus = field(default_factory=MemoryBus)
    open: bool = True
    lost: set[int] = field(default_factory=set)  # first publish of these chunks never arrives
    ack_lost: set[int] = field(default_factory=set)  # first publish stored, its ack never comes
    refuse: dict[int, BusError] = field(default_factory=dict)  # every publish of these fails so
    gates: dict[int, asyncio.Event] = field(default_factory=dict)
    calls: list[tuple[int, int | None]] = field(default_factory=list)  # (number, after) per publish
    finished: list[int] = field(default_factory=list)  # chunk numbers, as their publishes end
    in_flight: int = 0
    most_in_flight: int = 0

    def gate(self, number: int) -> asyncio.Event:
        return self.gates.setdefault(number, asyncio.Event())

    async def publish(self, number: int, data: bytes, stream: OutputStream, after: int | None) -> None:
        first = all(n != number for n, _ in self.calls)
        self.calls.append((number, after))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if first and not self.open:
                await self.gate(number).wait()
            if number in self.refuse:
                raise self.refuse[number]
            if first and number in self.lost:
                raise BusError(f"no ack for chunk {number}", retryable=True)
            await self.bus.publish_output("j1", 1, number, data, "n1", stream, after=after)
            if first and number in self.ack_lost:
                raise BusError(f"no ack for chunk {number}", retryable=True)
        finally:
            self.in_flight -= 1
            self.finished.append(number)

    async def let_through(self, *numbers: int) -> None:
        """Open these chunks' gates one after the other, each once the one before has ended."""
        for n in numbers:
            self.gate(n).set()
            await wait_for(lambda n=n: n in self.finished, what=f"the publish of chunk {n} ends")  # type: ignore[misc]

    async def stored(self) -> list[tuple[int, bytes]]:
        return [(c.number, c.data) async for c in self.bus.output_chunks("j1")]


async def retry(action: Callable[[], Awaitable[None]]) -> None:
    for _ in range(10):  # the agent's retry waits between tries; a test must not spin forever
        try:
            return await action()
        except BusError as exc:
            if not exc.retryable:
                raise
    raise AssertionError("a publish failed ten times in a row")


async def gated(**kwargs: Any) -> GatedServer:
    server = GatedServer(**kwargs)
    await server.bus.ensure_streams()
    return server


def chunk(n: int) -> bytes:
    return f"chunk {n}\n".encode()


async def send_all(window: OutputWindow, numbers: range) -> None:
    for n in numbers:
        await window.send(chunk(n))


async def test_chunks_are_stored_in_order_and_at_most_window_at_once() -> None:
    server = await gated()
    window = OutputWindow(server.publish, retry, window=3)
    await send_all(window, range(1, 11))
    await window.close()
    assert await server.stored() == [(n, chunk(n)) for n in range(1, 11)]
    assert server.most_in_flight <= 3
    assert len(server.calls) == 10  # nothing refused, nothing sent twice


async def test_a_chunk_lost_while_the_next_one_arrives_is_stored_before_it() -> None:
    # Chunk 3 is lost on the way (a dropped connection) while 4 and 5, sent after it, reach
    # the server first: they must not be stored ahead of it.
    server = await gated(open=False, lost={3})
    window = OutputWindow(server.publish, retry, window=4)
    await send_all(window, range(1, 3))
    await server.let_through(1, 2)
    await send_all(window, range(3, 6))
    await server.let_through(4, 5, 3)
    server.open = True
    await send_all(window, range(6, 9))
    await window.close()
    assert await server.stored() == [(n, chunk(n)) for n in range(1, 9)]
    # 4 was sent expecting 3 (refused, nothing stored), then again alone once 3 was stored.
    assert (4, 3) in server.calls and (4, None) in server.calls and (3, None) in server.calls


async def test_a_chunk_whose_ack_was_lost_is_stored_once() -> None:
    server = await gated(ack_lost={2, 5})
    window = OutputWindow(server.publish, retry, window=4)
    await send_all(window, range(1, 8))
    await window.close()
    assert await server.stored() == [(n, chunk(n)) for n in range(1, 8)]


async def test_other_output_in_between_costs_a_resend_and_then_chunks_go_alone_for_a_while() -> None:
    server = await gated(open=False)
    window = OutputWindow(server.publish, retry, window=4)
    await send_all(window, range(1, 3))
    await server.let_through(1)
    await server.bus.publish_output("another-job", 1, 1, b"theirs", "n2")  # lands between 1 and 2
    await server.let_through(2)
    server.open = True
    await window.close()
    assert server.calls == [(1, None), (2, 1), (2, None)]  # refused, then sent again alone
    last_alone = 2 + ALONE_AFTER_OUT_OF_TURN
    await send_all(window, range(3, last_alone + 3))
    await window.close()
    assert await server.stored() == [(n, chunk(n)) for n in range(1, last_alone + 3)]
    # Each of the next chunks waited for the one before it (no expectation, so other jobs'
    # output cannot refuse them); then they overlap again.
    pipelined_again = [(last_alone + 1, last_alone), (last_alone + 2, last_alone + 1)]
    assert server.calls[3:] == [(n, None) for n in range(3, last_alone + 1)] + pipelined_again


async def test_both_streams_share_one_numbering_in_order() -> None:
    server = await gated()
    window = OutputWindow(server.publish, retry, window=3)

    async def stream(name: OutputStream) -> None:
        for i in range(20):
            await window.send(f"{name} {i}\n".encode(), name)

    await asyncio.gather(stream("stdout"), stream("stderr"))
    await window.close()
    stored = [c async for c in server.bus.output_chunks("j1")]
    assert [c.number for c in stored] == list(range(1, 41))
    for name in ("stdout", "stderr"):
        assert [c.data for c in stored if c.stream == name] == [f"{name} {i}\n".encode() for i in range(20)]


async def test_a_refusal_that_cannot_pass_stops_the_output_and_nothing_after_it_is_stored() -> None:
    server = await gated(open=False, refuse={3: BusError("over the server's max payload")})
    window = OutputWindow(server.publish, retry, window=4)
    await send_all(window, range(1, 5))
    await server.let_through(1, 2, 4, 3)
    with pytest.raises(BusError, match="max payload"):
        await window.close()
    window.abandon()
    assert await server.stored() == [(1, chunk(1)), (2, chunk(2))]


async def test_abandon_stops_what_is_in_flight() -> None:
    server = await gated(open=False)
    window = OutputWindow(server.publish, retry, window=4)
    await send_all(window, range(1, 4))
    await wait_for(lambda: server.in_flight == 3, what="three publishes on their way")
    window.abandon()
    for n in (1, 2, 3):
        server.gate(n).set()
    await wait_for(lambda: server.in_flight == 0, what="the publishes stopped")
    await window.close()  # nothing left to wait for
    assert await server.stored() == []
