"""How the contract tests make each adapter and play a foreign publisher on it."""

from __future__ import annotations

from bus.memory import MemoryBus
from bus.nats_bus import NatsBus
from bus.port import EventBus


async def inject(bus: EventBus, subject: str, data: bytes, msg_id: str | None = None) -> int:
    """Store raw bytes on the event log as any NATS client may (no checks); returns the sequence."""
    if isinstance(bus, MemoryBus):
        return bus.inject(subject, data, msg_id)
    assert isinstance(bus, NatsBus)
    headers = {"Nats-Msg-Id": msg_id} if msg_id is not None else None
    return int((await bus.js.publish(subject, data, headers=headers)).seq)


def _both_are_event_buses(nats_bus: NatsBus, memory_bus: MemoryBus) -> list[EventBus]:
    """Never called: mypy checks here that both adapters implement the port."""
    return [nats_bus, memory_bus]
