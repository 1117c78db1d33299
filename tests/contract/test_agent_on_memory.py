"""The agent needs nothing but the port: a real agent (real PTY) on the in-memory twin."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.service import Agent
from bus.errors import BusError
from bus.memory import MemoryBus
from bus.port import Published
from schemas import msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import JobAccepted, JobCancel, JobDispatch, JobExited, JobStarted
from schemas.records import Record
from tests.conftest import wait_for


@pytest.fixture
async def running() -> AsyncIterator[tuple[MemoryBus, Agent]]:
    bus = MemoryBus()
    agent = Agent(bus, "n1", heartbeat_s=0.2, kill_grace_s=0.5)
    task = asyncio.create_task(agent.run())
    await bus.ensure_streams()  # after the agent started waiting for them
    await asyncio.wait_for(agent.ready.wait(), 10)
    try:
        yield bus, agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _dispatch(job_id: str, script: str) -> Outgoing:
    ev = JobDispatch(attempt=1, tool="bash", command=script, argv=["bash", "-c", script])
    return Outgoing(subjects.dispatch(job_id, "n1"), ev, msgids.job(job_id, "dispatch", 1))


async def _history(bus: MemoryBus, job_id: str) -> list[Record]:
    return [r async for batch in bus.read_records(subjects.job_all(job_id)) for r in batch]


async def _exited(bus: MemoryBus, job_id: str) -> JobExited | None:
    return next((r.event for r in await _history(bus, job_id) if isinstance(r.event, JobExited)), None)


async def test_the_agent_runs_a_dispatch_on_the_twin(running: tuple[MemoryBus, Agent]) -> None:
    bus, _agent = running
    assert "n1" in await bus.heartbeats()
    await bus.publish(_dispatch("j1", "echo hello from the twin"))
    exited = await wait_for(lambda: _exited(bus, "j1"), what="the job to exit")
    assert exited.exit_code == 0
    kinds = [type(r.event) for r in await _history(bus, "j1")]
    assert kinds == [JobDispatch, JobAccepted, JobStarted, JobExited]
    output = b"".join([c.data async for c in bus.output_chunks("j1")])
    assert b"hello from the twin" in output


async def test_a_redelivered_dispatch_is_not_run_twice(running: tuple[MemoryBus, Agent]) -> None:
    bus, _agent = running
    dispatched = await bus.publish(_dispatch("j1", "true"))
    await wait_for(lambda: _exited(bus, "j1"), what="the job to exit")
    # The same dispatch again, as a redelivery would bring it: `accepted` is refused as stale.
    bus.inject(subjects.dispatch("j1", "n1"), (await _history(bus, "j1"))[0].raw)
    await wait_for(lambda: bus.settled("n1"), what="the agent to settle the redelivery")
    assert [r.seq for r in await _history(bus, "j1") if isinstance(r.event, JobAccepted)] == [dispatched.seq + 1]


async def test_a_dispatch_whose_accepted_was_stored_but_never_acked_still_runs(running: tuple[MemoryBus, Agent]) -> None:
    # Seen under a broker restart: the agent's `accepted` was stored but its ack was lost
    # (a timeout), so the dispatch was nak'ed and redelivered; then `accepted` was refused
    # (stale, or a duplicate id) and the job waited forever at `accepted`.
    bus, _agent = running
    publish = bus.publish
    lost = []

    async def ack_lost_once(out: Outgoing, *, expected_seq: int | None = None) -> Published:
        stored = await publish(out, expected_seq=expected_seq)
        if isinstance(out.event, JobAccepted) and not lost:
            lost.append(stored)
            raise BusError("no ack for accepted: TimeoutError", retryable=True)
        return stored

    bus.publish = ack_lost_once  # type: ignore[method-assign]
    await publish(_dispatch("j2", "echo ran once"))
    exited = await wait_for(lambda: _exited(bus, "j2"), what="the job to run")
    assert lost and exited.exit_code == 0
    kinds = [type(r.event) for r in await _history(bus, "j2")]
    assert kinds == [JobDispatch, JobAccepted, JobStarted, JobExited]


async def test_a_harmless_event_the_agent_may_not_read_does_not_stop_its_dispatch(running: tuple[MemoryBus, Agent]) -> None:
    # A duplicate request stored between the dispatch and `accepted` makes `accepted` stale. The
    # agent may not read requests (subjects.node_view_filters): it finds nothing that stops the
    # dispatch and expects the job's last sequence as the refusal gave it.
    bus, _agent = running
    publish = bus.publish

    async def request_in_between(out: Outgoing, *, expected_seq: int | None = None) -> Published:
        if isinstance(out.event, JobAccepted) and not await _requests(bus, "j5"):
            bus.inject(subjects.job("j5", "requested"), b'{"command": "echo again"}')
        return await publish(out, expected_seq=expected_seq)

    bus.publish = request_in_between  # type: ignore[method-assign]
    await publish(_dispatch("j5", "echo ran"))
    exited = await wait_for(lambda: _exited(bus, "j5"), what="the job to run")
    assert exited.exit_code == 0
    assert [r.kind for r in await _history(bus, "j5")] == ["dispatch", "requested", "accepted", "started", "exited"]
    assert not any(r.kind == "requested" for r in await bus.node_history("j5", "n1"))


async def _requests(bus: MemoryBus, job_id: str) -> list[Record]:
    return [r for r in await _history(bus, job_id) if r.kind == "requested"]


async def test_a_dispatch_accepted_by_another_agent_process_never_runs(running: tuple[MemoryBus, Agent]) -> None:
    bus, _agent = running
    dispatch = await bus.publish(_dispatch("j3", "echo must not run"))
    theirs = JobAccepted(node="n1", attempt=1, instance="an-earlier-process")
    await bus.publish(Outgoing(subjects.job("j3", "accepted"), theirs, msgids.job("j3", "accepted", 1)), expected_seq=dispatch.seq)
    bus.inject(subjects.dispatch("j3", "n1"), (await _history(bus, "j3"))[0].raw)
    await wait_for(lambda: bus.settled("n1"), what="the agent to settle the dispatch")
    assert not any(isinstance(r.event, JobStarted) for r in await _history(bus, "j3"))


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"command": "echo \x00 nul"}, "argument 2 of the command line holds a NUL byte"),
        ({"command": "true", "env": {"A=B": "1"}}, "env name 'A=B' holds '='"),
        ({"command": "true", "env": {"": "2"}}, "an env entry has an empty name"),
        ({"command": "true", "env": {"A": "\x00"}}, "the value of env 'A' holds a NUL byte"),
        ({"command": "true", "working_dir": "/tmp\x00"}, "the working directory holds a NUL byte"),
        ({"command": "echo \x00", "tty": False}, "argument 2 of the command line holds a NUL byte"),
    ],
)
async def test_a_dispatch_no_process_can_take_ends_with_a_clear_reason(
    running: tuple[MemoryBus, Agent], fields: dict[str, object], said: str
) -> None:
    """What the analysis now rejects, as an older orchestrator could still dispatch it: `could not
    start` with the reason, not `agent error: ValueError: embedded null byte` and a traceback."""
    bus, _agent = running
    command = str(fields.pop("command"))
    ev = JobDispatch(attempt=1, tool="bash", command=command, argv=["bash", "-c", command], **fields)  # type: ignore[arg-type]
    await bus.publish(Outgoing(subjects.dispatch("j1", "n1"), ev, msgids.job("j1", "dispatch", 1)))
    exited = await wait_for(lambda: _exited(bus, "j1"), what="the job to exit")
    assert exited.error is not None and exited.error.startswith(f"could not start: {said}"), exited.error


async def test_a_newer_attempt_on_the_same_node_starts_only_once_the_older_is_killed(
    running: tuple[MemoryBus, Agent], tmp_path: Path
) -> None:
    """Paused past its heartbeats' TTL, the agent finds its running attempt declared lost and the
    retry dispatched to itself: the two ran side by side (an idempotent job is not one that may
    run twice at once). The older one is killed first; the newer one then runs."""
    bus, agent = running
    marks = tmp_path / "marks"
    script = f'echo start-$NEXUS_ATTEMPT >> {marks}; [ "$NEXUS_ATTEMPT" = 2 ] || sleep 30; echo end-$NEXUS_ATTEMPT >> {marks}'
    for attempt in (1, 2):
        ev = JobDispatch(attempt=attempt, tool="bash", command=script, argv=["bash", "-c", script])
        await bus.publish(Outgoing(subjects.dispatch("j1", "n1"), ev, msgids.job("j1", "dispatch", attempt)))
        await wait_for(lambda a=attempt: marks.exists() and f"start-{a}" in marks.read_text(), what=f"attempt {attempt} to start")
    await wait_for(lambda: marks.read_text().endswith("end-2\n"), what="attempt 2 to end")
    assert marks.read_text().splitlines() == ["start-1", "start-2", "end-2"]

    async def both_exited() -> bool:
        return sum(isinstance(r.event, JobExited) for r in await _history(bus, "j1")) == 2

    await wait_for(both_exited, what="both attempts' exited")  # the file is written before the process ends
    events = [(type(r.event).__name__, getattr(r.event, "attempt", None), r.seq) for r in await _history(bus, "j1")]
    exited_1 = next(seq for kind, attempt, seq in events if (kind, attempt) == ("JobExited", 1))
    started_2 = next(seq for kind, attempt, seq in events if (kind, attempt) == ("JobStarted", 2))
    assert exited_1 < started_2, events  # the older one reported gone before the newer one started
    assert [e.killed_by for r in await _history(bus, "j1") if isinstance(e := r.event, JobExited)] == ["cancel", None]
    await wait_for(lambda: not agent.running, what="the agent to hold no job")


async def test_a_kill_for_an_older_attempt_leaves_the_newer_one_running(running: tuple[MemoryBus, Agent], tmp_path: Path) -> None:
    """The orchestrator sends a kill after it declares an attempt lost (for an agent that was only
    paused); one that comes once the retry runs on this same node must not end the retry."""
    bus, agent = running
    marks = tmp_path / "marks"
    script = f"echo start >> {marks}; sleep 30"
    ev = JobDispatch(attempt=2, tool="bash", command=script, argv=["bash", "-c", script])
    await bus.publish(Outgoing(subjects.dispatch("j1", "n1"), ev, msgids.job("j1", "dispatch", 2)))
    await wait_for(lambda: marks.exists(), what="attempt 2 to start")
    await bus.publish(Outgoing(subjects.cancel("j1", "n1"), JobCancel(attempt=1), msgids.job("j1", "cancel", 1)))
    await wait_for(lambda: bus.settled("n1"), what="the agent to take the old attempt's kill")
    assert not agent.running["j1"].cancel.is_set() and await _exited(bus, "j1") is None  # the kill was taken, not obeyed
    await bus.publish(Outgoing(subjects.cancel("j1", "n1"), JobCancel(attempt=2), msgids.job("j1", "cancel", 2)))
    exited = await wait_for(lambda: _exited(bus, "j1"), what="attempt 2 killed by its own cancel")
    assert (exited.attempt, exited.killed_by) == (2, "cancel")
