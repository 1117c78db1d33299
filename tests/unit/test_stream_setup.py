"""bus.nats_setup.ensure_streams: what a forming cluster answers is waited out, the rest is said."""

from __future__ import annotations

import asyncio
from typing import Any

import nats.js.errors
import pytest

from bus import nats_setup
from bus.errors import BusError
from bus.port import DEFAULT_LIMITS


def _failing(times: int, exc: Exception) -> tuple[list[int], Any]:
    calls: list[int] = []

    async def setup(js: Any, limits: Any) -> None:
        calls.append(1)
        if len(calls) <= times:
            raise exc

    return calls, setup


def test_a_stream_not_found_while_the_cluster_forms_is_set_up_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # CI: an update of NEXUS_EVENTS answered "stream not found" while its Raft group was elected.
    not_found = nats.js.errors.NotFoundError(code=404, err_code=nats_setup.STREAM_NOT_FOUND, description="stream not found")
    calls, setup = _failing(2, not_found)
    monkeypatch.setattr(nats_setup, "_ensure_streams", setup)
    asyncio.run(nats_setup.ensure_streams(None, DEFAULT_LIMITS))  # type: ignore[arg-type]
    assert len(calls) == 3


def test_too_few_peers_while_the_cluster_forms_is_waited_out(monkeypatch: pytest.MonkeyPatch) -> None:
    # CI: "no suitable peers for placement, peer offline" while the third member joined.
    why = "no suitable peers for placement, peer offline"
    short = nats.js.errors.BadRequestError(code=400, err_code=nats_setup.NO_PEERS, description=why)
    calls, setup = _failing(1, short)
    monkeypatch.setattr(nats_setup, "_ensure_streams", setup)
    asyncio.run(nats_setup.ensure_streams(None, DEFAULT_LIMITS))  # type: ignore[arg-type]
    assert len(calls) == 2


def test_a_cluster_that_stays_short_is_said_after_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    short = nats.js.errors.BadRequestError(code=400, err_code=nats_setup.NO_PEERS, description="no suitable peers for placement")
    calls, setup = _failing(10**6, short)
    monkeypatch.setattr(nats_setup, "_ensure_streams", setup)
    with pytest.raises(BusError, match="no suitable peers"):
        asyncio.run(nats_setup.ensure_streams(None, DEFAULT_LIMITS, deadline_s=0.3))  # type: ignore[arg-type]
    assert len(calls) >= 2


def test_other_refusals_are_said_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = nats.js.errors.BadRequestError(code=400, err_code=10058, description="stream name already in use")
    calls, setup = _failing(1, refused)
    monkeypatch.setattr(nats_setup, "_ensure_streams", setup)
    with pytest.raises(BusError, match="stream name already in use"):
        asyncio.run(nats_setup.ensure_streams(None, DEFAULT_LIMITS))  # type: ignore[arg-type]
    assert len(calls) == 1
