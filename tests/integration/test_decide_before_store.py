"""The orchestrator publishes its decisions before it stores the batch they came from
(orchestrator.write_behind). A kill -9 in that window must cost nothing: after a restart
on the same DuckDB file, no command runs twice and no job is left stuck.

Real processes (tests/integration/faults_support.py): nats-server, `nexus orchestrator`,
two `nexus agent`s. Each round submits a burst, kills the orchestrator once dispatches
flow, and reads the log as it was at the kill. The window was hit when some decision of
the orchestrator (validated, assigned, dispatch, succeeded) is in the log while the
record it answered (the job's last event that is not a decision) is past the checkpoint the restarted orchestrator resumes from (it
logs that checkpoint at start). Rounds repeat until the window was hit (at most ROUNDS);
then every job must have run exactly once and succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bus.nats_bus import NatsBus
from schemas.records import Record
from tests.conftest import wait_for
from tests.integration.faults_support import TERMINAL, Marks, ProcessStack, Submitter, processes_under

NODES = ["wb-0", "wb-1"]
JOBS = 60
ROUNDS = 6
DECISIONS = {"validated", "assigned", "dispatch", "succeeded"}
_STARTED_AT = re.compile(r"orchestrator\.started.*?checkpoint=(\d+)")


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[ProcessStack]:
    s = ProcessStack(tmp_path)
    try:
        await s.start_nats()
        await s.start_orchestrator()
        await asyncio.gather(*(s.start_agent(node) for node in NODES))
        yield s
    finally:
        await s.close()
        await wait_for(lambda: not processes_under(tmp_path), 15, what=f"no process left under {tmp_path}")


def resumed_from(stack: ProcessStack) -> int:
    """The checkpoint the last started orchestrator resumed from (its `orchestrator.started` line)."""
    found = _STARTED_AT.findall((stack.logs / "orchestrator.log").read_text(errors="replace"))
    assert found, "no orchestrator.started line in the orchestrator's log"
    return int(found[-1])


def answered_unstored(records: list[Record], stored: int) -> list[str]:
    """Decisions in the log whose trigger is past `stored`. A decision's trigger is the job's
    last event before it that is not itself a decision: `requested` for validated, assigned
    and dispatch (one chain), `exited` for succeeded."""
    trigger: dict[str, int] = {}
    hits = []
    for rec in records:
        ref = rec.ref
        if ref is None or ref.family != "job":
            continue
        if rec.kind not in DECISIONS:
            trigger[ref.id] = rec.seq
        elif (seq := trigger.get(ref.id)) is not None and seq > stored:
            hits.append(f"{ref.id}: {rec.kind} at {rec.seq} answered seq {seq} (stored up to {stored})")
    return hits


async def dispatches_since(bus: NatsBus, start: int, at_least: int) -> bool:
    seen = 0
    async with contextlib.aclosing(bus.read_records(start_seq=start)) as batches:
        async for batch in batches:
            seen += sum(1 for r in batch if r.kind == "dispatch")
    return seen >= at_least


async def settled(stack: ProcessStack, ids: list[str]) -> bool:
    statuses = await stack.statuses(ids)
    return statuses is not None and len(statuses) == len(ids) and all(s in TERMINAL for s in statuses.values())


async def test_a_kill_between_decision_and_store_runs_nothing_twice_and_leaves_nothing_stuck(stack: ProcessStack) -> None:
    assert stack.client is not None and stack.orchestrator is not None
    bus = stack.client.bus
    marks = Marks(stack.root / "marks")
    submitter = await Submitter.connect(stack.url)
    every: list[str] = []
    windows: list[str] = []
    try:
        for n in range(ROUNDS):
            ids = [f"wb{n}-{i:03d}" for i in range(JOBS)]
            every += ids
            start = await bus.last_seq() + 1
            await asyncio.gather(*(submitter.submit(j, marks.command(j, 0.05)) for j in ids))
            await wait_for(functools.partial(dispatches_since, bus, start, JOBS // 4), 60, what="dispatches flowing")
            await stack.kill(stack.orchestrator)
            at_kill: list[Record] = []
            async with contextlib.aclosing(bus.read_records(start_seq=1)) as batches:
                async for batch in batches:
                    at_kill.extend(batch)
            await stack.start_orchestrator()
            windows += answered_unstored(at_kill, resumed_from(stack))
            await wait_for(functools.partial(settled, stack, ids), 90, what=f"round {n}: every job terminal after the restart")
            if windows:
                print(f"round {n}: {len(windows)} decisions answered unstored records, e.g. {windows[0]}")
                break
    finally:
        await submitter.close()

    assert windows, f"in {ROUNDS} rounds no kill fell between a decision's publish and its batch's store"
    statuses = await stack.statuses(every)
    assert statuses is not None and set(statuses.values()) == {"succeeded"}, statuses
    twice = {j: marks.runs(j) for j in every if len(marks.runs(j)) != 1}
    assert not twice, f"jobs that did not run exactly once: {twice}"
    started = await stack.try_query(
        "SELECT job_id, count(*) FROM events WHERE type = 'job.started' AND job_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1", [every]
    )
    assert started is not None and sorted(r[0] for r in started.rows) == sorted(every)
    assert all(r[1] == 1 for r in started.rows)
