"""The orchestrator's start-up steps wait for a forming cluster (service._while_forming)."""

from __future__ import annotations

import pytest

from bus.errors import BusError
from orchestrator import service


async def test_a_start_up_step_is_tried_again_while_the_bus_says_it_may_pass_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "FORMING_PAUSE_S", 0.0)
    calls: list[int] = []

    async def announce() -> None:
        calls.append(1)
        if len(calls) < 3:  # a stream of a forming cluster: no leader, no responder yet
            raise BusError("no ack for nexus.evt.trust.X.announced: NoStreamResponseError", retryable=True)

    await service._while_forming(announce, "announce")
    assert len(calls) == 3


async def test_a_refusal_or_a_bus_that_stays_away_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "FORMING_PAUSE_S", 0.0)

    async def refused() -> None:
        raise BusError("not allowed", retryable=False)

    with pytest.raises(BusError, match="not allowed"):
        await service._while_forming(refused, "announce")
    monkeypatch.setattr(service, "FORMING_S", 0.0)

    async def away() -> None:
        raise BusError("no ack", retryable=True)

    with pytest.raises(BusError, match="no ack"):
        await service._while_forming(away, "announce")
