"""StoreOrder: a job's records and output chunks, read from two consumers, in the order the server stored them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bus.port import OutputChunk
from orchestrator.app.follow import StoreOrder
from schemas.records import Record

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def record(seq: int, at: float) -> Record:
    return Record(seq=seq, subject=f"nexus.evt.job.j1.k{seq}", stream_ts=T0 + timedelta(seconds=at), raw=b"{}")


def chunk(seq: int, at: float) -> OutputChunk:
    return OutputChunk(seq=seq, attempt=1, number=seq, data=b"x", stream_ts=T0 + timedelta(seconds=at))


def drain(order: StoreOrder) -> list[tuple[str, int]]:
    out = []
    while (item := order.next()) is not None:
        out.append(("chunk" if isinstance(item, OutputChunk) else "record", item.seq))
    return out


def test_a_backlog_of_both_kinds_comes_out_in_store_order() -> None:
    order = StoreOrder(events_end=4, output_end=2)
    for rec in (record(1, 0), record(2, 1), record(3, 5), record(4, 6)):  # all events first, as a replay reads them
        order.add(rec)
    assert drain(order) == []  # the output, not read yet, may hold something earlier
    order.add(chunk(1, 2))
    assert drain(order) == [("record", 1), ("record", 2), ("chunk", 1)]
    order.add(chunk(2, 3))
    assert drain(order) == [("chunk", 2), ("record", 3), ("record", 4)]


def test_a_resumed_follow_waits_only_for_output_after_its_position() -> None:
    order = StoreOrder(events_end=2, output_end=7, output_after=7)
    order.add(record(1, 0))
    assert drain(order) == [("record", 1)]


def test_stored_items_that_never_come_are_not_waited_for() -> None:
    order = StoreOrder(events_end=3, output_end=5)
    order.add(record(1, 0))
    order.add(chunk(2, 1))
    assert drain(order) == [("record", 1)]  # event 2 may be earlier than the chunk
    order.add(record(3, 9))  # event 2 is not the job's (its seq is another subject's)
    assert drain(order) == [("chunk", 2)] and order.waiting  # chunks up to 5 may be earlier than event 3
    order.stop_waiting()  # they expired, say
    assert drain(order) == [("record", 3)] and not order.waiting


def test_live_items_go_as_they_come() -> None:
    order = StoreOrder(events_end=0, output_end=0)
    order.add(chunk(1, 5))
    assert drain(order) == [("chunk", 1)]
    order.add(record(1, 4))
    assert drain(order) == [("record", 1)]


# ---------------------------------------------------------------- JobReaders: held chunks


def assigned(seq: int, attempt: int, node: str) -> Record:
    from schemas.events import JobAssigned

    event = JobAssigned(ts=T0, node=node, attempt=attempt)
    return Record(seq=seq, subject="nexus.evt.job.j1.assigned", event=event, stream_ts=T0, raw=b"{}")


def out(seq: int, attempt: int, node: str = "n1") -> OutputChunk:
    return OutputChunk(seq=seq, attempt=attempt, number=seq, data=b"x", claimed_node=node, stream_ts=T0)


async def test_a_chunk_of_an_unknown_attempt_holds_back_only_its_own_attempt() -> None:
    from bus.memory import MemoryBus
    from orchestrator.app.follow import JobReaders

    readers = JobReaders(MemoryBus(), "j1")
    await readers.record(assigned(1, 1, "n1"))
    for chunk in (out(1, 1), out(2, 7), out(3, 1), out(4, 2), out(5, 7), out(6, 2)):
        await readers.hold(chunk)
    assert [c.seq for c in readers.release()] == [1, 3]  # attempts 2 and 7: their nodes not known yet
    await readers.hold(out(7, 1))
    await readers.record(assigned(8, 2, "n1"))
    assert [c.seq for c in readers.release()] == [4, 6, 7]  # attempt 2's, in the order stored
    assert readers.release(final=True) == []  # attempt 7 never came: refused
    assert readers.release(final=True) == []
