"""Poison messages: no byte sequence on any subject can stop a process or poison replay.

Each payload below stopped the orchestrator or the agent for good before issue 9
(and every restart died on it again, since the log refuses deletion).
"""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from orchestrator.projection import Projection
from orchestrator.store import DuckDBStore
from schemas import subjects
from schemas.events import JobRequested
from schemas.limits import MAX_EVENT_BYTES
from schemas.records import Record
from tests.conftest import Stack

DEEP = b'{"command": "echo deep", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
HUGE_INT = b'{"command": "echo big", "priority": 9223372036854775808}'
HUGE_COMMAND = b'{"command": "' + b"x" * 900_000 + b'"}'


async def _publish(url: str, *messages: tuple[str, bytes]) -> None:
    nc = await nats.connect(url)
    try:
        for subject, data in messages:
            await nc.publish(subject, data)
        await nc.flush()
    finally:
        await nc.close()


async def _still_runs(stack: Stack) -> None:
    code, out, _ = await stack.nexus("run", "--", "echo", "still alive")
    assert (code, out) == (0, b"still alive\n")


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        pytest.param(DEEP, "nested 1001 deep", id="deep-nesting"),
        pytest.param(HUGE_INT, "<= 1000000", id="int-above-int64"),
        pytest.param(HUGE_COMMAND, f"over the limit of {MAX_EVENT_BYTES}", id="900KB-command"),
    ],
)
async def test_poison_request_is_rejected_with_its_reason_and_nothing_stops(stack: Stack, payload: bytes, why: str) -> None:
    await _publish(stack.url, (subjects.job("poison", "requested"), payload))
    row = await stack.wait_job("poison")
    assert row["status"] == "rejected"
    assert why in row["reason"]
    await _still_runs(stack)
    # The record is kept with the reason, and a restart (which re-reads nothing
    # before the checkpoint) and a full replay both pass over it.
    rows = await stack.client.query("SELECT error FROM events WHERE subject = ?", [subjects.job("poison", "requested")])
    assert why in rows.rows[0][0]
    await stack.stop_orchestrator()
    await stack.start_orchestrator()
    await _still_runs(stack)
    code, _out, err = await stack.nexus("replay", "--db", str(stack.tmp / "replay.duckdb"), "--json")
    assert code == 0, err


async def test_poison_dispatch_does_not_stop_the_agent(stack: Stack) -> None:
    # The agent's durable consumer would redeliver a message that crashes it, forever.
    await _publish(
        stack.url,
        (subjects.dispatch("p-dispatch", "node-1"), DEEP),
        (subjects.dispatch("p-dispatch2", "node-1"), b'{"attempt": 9223372036854775808, "tool": "bash", "command": "x", "argv": []}'),
        (subjects.cancel("p-cancel", "node-1"), b"\xff\xfe not json"),
    )
    code, out, _ = await stack.nexus("run", "--node", "node-1", "--", "echo", "agent alive")
    assert (code, out) == (0, b"agent alive\n")
    _agent, task, _bus = stack.agents["node-1"]
    assert not task.done()


async def test_poison_heartbeat_is_ignored(stack: Stack) -> None:
    kv = await stack.client.bus.nodes_kv()
    await kv.put("evil", b'{"node": "evil", "ts": "2026-01-01T00:00:00Z", "max_jobs": 9223372036854775808}')
    await kv.put("deep", DEEP)
    await _still_runs(stack)
    assert "evil" not in stack.orchestrator.beats


def test_a_record_that_cannot_be_stored_is_quarantined_and_the_fold_moves_on(tmp_path: Path) -> None:
    """A payload msgspec accepted but DuckDB cannot hold (here: a Struct built without
    validation, as a future schema slip could let through) is kept with its reason."""
    from datetime import UTC, datetime

    store = DuckDBStore(tmp_path / "q.duckdb")
    projection = Projection(store)
    now = datetime(2026, 12, 5, tzinfo=UTC)
    good = JobRequested(command="echo ok")
    bad = JobRequested(command="echo bad", priority=2**70)  # constraints are checked on decode only

    def rec(seq: int, job_id: str, ev: JobRequested) -> Record:
        return Record(seq=seq, subject=subjects.job(job_id, "requested"), stream_ts=now, raw=b"{}", event=ev)

    projection.apply_batch([rec(1, "a", good), rec(2, "b", bad), rec(3, "c", good)])
    assert projection.applied_seq == 3
    assert store.checkpoint() == 3
    assert sorted(store.load_jobs(["a", "b", "c"])) == ["a", "c"]
    assert [r.seq for r in projection.quarantined] == [2]
    rows = store.con.execute("SELECT seq, error FROM events ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [1, 2, 3]
    assert rows[1][1].startswith("cannot be projected")
    store.close()



async def test_the_cli_refuses_what_the_bus_would_refuse_before_publishing(stack: Stack) -> None:
    last = await stack.client.bus.last_seq()
    code, _out, err = await stack.nexus("submit", "--priority", "9223372036854775808", "--", "echo", "x")
    assert code != 0
    assert b"priority" in err and b"Traceback" not in err
    code, _out, err = await stack.nexus("submit", "--", "x" * 70_000)
    assert code != 0
    assert b"65536" in err and b"Traceback" not in err
    assert await stack.client.bus.last_seq() == last  # nothing was published
