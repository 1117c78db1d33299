"""Issue 15, the NATS adapter's cluster details that need no server: a comma-separated
server list, and how a cluster's publish errors are read (a lost race, not a refusal)."""

from __future__ import annotations

import nats.js.errors
import pytest

from bus.errors import BusError, BusUnavailable, StaleDecision
from bus.nats_bus import servers
from bus.nats_translate import map_publish_errors


def test_a_comma_separated_list_is_several_servers() -> None:
    assert servers("tls://a:4222, tls://b:4222,tls://c:4222") == ["tls://a:4222", "tls://b:4222", "tls://c:4222"]
    assert servers("nats://127.0.0.1:4222") == ["nats://127.0.0.1:4222"]
    with pytest.raises(BusUnavailable):
        servers(" , ")


def _raise(code: int, err_code: int, description: str, expected: int | None) -> None:
    with map_publish_errors("nexus.evt.job.j1.validated", expected):
        raise nats.js.errors.APIError(code=code, err_code=err_code, description=description)


def test_a_duplicate_in_process_is_a_lost_race() -> None:
    with pytest.raises(StaleDecision):
        _raise(409, 10158, "duplicate message id is in process", expected=7)
    # Without an expected sequence (a fact, a request): retry, and get the duplicate ack.
    with pytest.raises(BusError) as caught:
        _raise(409, 10158, "duplicate message id is in process", expected=None)
    assert caught.value.retryable and not isinstance(caught.value, StaleDecision)


def test_wrong_last_sequence_with_or_without_the_number_is_stale() -> None:
    with pytest.raises(StaleDecision):
        _raise(400, 10071, "wrong last sequence: 12", expected=11)
    with pytest.raises(StaleDecision):
        _raise(400, 10164, "wrong last sequence", expected=11)


def test_other_refusals_stay_refusals() -> None:
    with pytest.raises(BusError) as caught:
        _raise(400, 10054, "maximum messages exceeded", expected=3)
    assert not caught.value.retryable and not isinstance(caught.value, StaleDecision)
