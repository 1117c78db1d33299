"""The agent as an operator starts it, with its mistakes: real nats-server, orchestrator and
`nexus agent` processes (tests.integration.faults_support).

- Two agents with one `--node`: the second is refused while the first lives, a stalled first
  one stops once another took its node over, and nothing runs twice (DESIGN §8).
- An agent started under `nohup` (SIGHUP ignored) or with signals blocked gives its jobs the
  default signal state: they end with their terminal, not outlive the agent; a `tty: false` job
  ends by its watchdog.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.integration.faults_support import TERMINAL, Marks, ProcessStack, Submitter, processes_under

pytestmark = pytest.mark.timeout(120)

NODE = "n1"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[ProcessStack]:
    s = ProcessStack(tmp_path)
    try:
        await s.start_nats()
        await s.start_orchestrator()
        yield s
    finally:
        await s.close()
        await wait_for(lambda: not processes_under(tmp_path), 15, what=f"no process left under {tmp_path}")


async def _status(stack: ProcessStack, job_id: str, wanted: tuple[str, ...]) -> str:
    async def reached() -> str | None:
        st = await stack.statuses([job_id])
        return st.get(job_id) if st and st.get(job_id) in wanted else None

    return await wait_for(reached, 60, what=f"job {job_id} to be {' or '.join(wanted)}")


async def _exits(stack: ProcessStack, proc: asyncio.subprocess.Process, name: str) -> tuple[int, str]:
    """Wait for the process to end by itself; its exit code and log."""
    await wait_for(lambda: proc.returncode is not None, 60, what=f"{name} to exit by itself")
    return proc.returncode or 0, (stack.logs / f"{name}.log").read_text(errors="replace")


async def test_a_second_agent_with_the_same_node_id_is_refused_and_nothing_runs_twice(stack: ProcessStack, tmp_path: Path) -> None:
    await stack.start_agent(NODE)
    first = await stack.heartbeat_instance(NODE)
    marks, gate = Marks(tmp_path / "marks"), tmp_path / "gate"
    sub = await Submitter.connect(stack.url)
    try:
        command = f"echo s >> {marks.root / 'dup-1'}; while [ ! -e {gate} ]; do sleep 0.05; done; echo e >> {marks.root / 'dup-1'}"
        await sub.submit("dup-1", command, node=NODE, idempotent=True, retries=3)
    finally:
        await sub.close()
    await _status(stack, "dup-1", ("running",))
    second = await stack.spawn_agent(NODE, "--state-dir", str(tmp_path / "second-state"), name="agent-n1-second")
    code, said = await _exits(stack, second, "agent-n1-second")
    assert code != 0 and f"another agent is running as node {NODE}" in said, said
    assert "agent.started" not in said  # it never took a dispatch
    assert await stack.heartbeat_instance(NODE) == first  # nor wrote the node's heartbeat
    gate.touch()
    assert await _status(stack, "dup-1", TERMINAL) == "succeeded"
    assert marks.runs("dup-1") == ["s", "e"]  # one run, to its end
    rows = await stack.try_query("SELECT attempt FROM jobs WHERE job_id = 'dup-1'")
    assert rows is not None and rows.rows == [[1]]
    assert stack.agents[NODE].returncode is None  # the first agent runs on


async def test_a_stalled_agent_whose_node_was_taken_over_stops_instead_of_both_running(stack: ProcessStack, tmp_path: Path) -> None:
    old = await stack.start_agent(NODE)
    old.send_signal(signal.SIGSTOP)  # silent as if dead: the next agent may take the node over
    try:
        await stack.start_agent(NODE, "--state-dir", str(tmp_path / "new-state"))
    finally:
        old.send_signal(signal.SIGCONT)
    new = stack.agents[NODE]
    code, said = await _exits(stack, old, f"agent-{NODE}")
    assert code != 0 and f"another agent started as node {NODE}" in said, said
    assert new.returncode is None
    marks = Marks(tmp_path / "marks")
    sub = await Submitter.connect(stack.url)
    try:
        await sub.submit("after", marks.command("after", 0), node=NODE)
    finally:
        await sub.close()
    assert await _status(stack, "after", TERMINAL) == "succeeded"
    assert marks.runs("after") == ["after"]


async def test_a_restart_waits_for_a_killed_agent_and_not_for_one_that_stopped_cleanly(stack: ProcessStack) -> None:
    log = stack.logs / f"agent-{NODE}.log"
    await stack.kill(await stack.start_agent(NODE))  # kill -9: its last heartbeat may still be a live agent's
    await stack.start_agent(NODE)
    assert log.read_text().count("agent.node_held") == 1 and "agent.node_taken_over" in log.read_text()
    stopping = stack.agents[NODE]
    stopping.send_signal(signal.SIGTERM)  # a clean stop says so in its last heartbeat
    assert await stopping.wait() == 0
    await stack.start_agent(NODE)
    assert log.read_text().count("agent.node_held") == 1  # the next one started without watching for it


# An agent under nohup, with one more signal ignored and one blocked (as a service manager may start it).
LAUNCHER = (
    sys.executable, "-c",
    "import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); signal.signal(signal.SIGUSR2, signal.SIG_IGN); "
    "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1]); os.execvp(sys.argv[1], sys.argv[1:])",
)  # fmt: skip
# glibc's posix_spawn leaves its two internal signals (32, 33) ignored in every child it starts,
# whatever it is asked; no program may use them (the next glibc program sets its own handlers).
GLIBC_INTERNAL = 1 << 31 | 1 << 32


@pytest.mark.parametrize("how", [{}, {"working_dir": "/"}, {"tty": False}], ids=["pty", "pty-with-cwd", "pipes"])
async def test_jobs_start_with_default_signals_whatever_the_agent_inherited(stack: ProcessStack, how: dict[str, object]) -> None:
    await stack.start_agent(NODE, wrapper=LAUNCHER)
    sub = await Submitter.connect(stack.url)
    try:
        await sub.submit("sigs", "grep -E '^Sig(Ign|Blk)' /proc/$$/status", node=NODE, **how)
    finally:
        await sub.close()
    assert await _status(stack, "sigs", TERMINAL) == "succeeded"
    assert stack.client is not None
    out = b"".join([c.data async for c in stack.client.output("sigs")]).decode()
    masks = {name.rstrip(":"): int(bits, 16) for name, bits in (line.split() for line in out.splitlines())}
    assert masks == {"SigBlk": 0, "SigIgn": masks["SigIgn"] & GLIBC_INTERNAL}, out


@pytest.mark.parametrize("tty", [True, False], ids=["pty", "pipes"])
async def test_a_job_of_an_agent_under_nohup_ends_when_the_agent_is_killed(stack: ProcessStack, tmp_path: Path, tty: bool) -> None:
    """PTY: the kernel hangs the job's terminal up. Pipes: its watchdog kills the job's process
    group (a black-box audit saw a `--no-tty` job outlive its agent and overlap its retry)."""
    agent = await stack.start_agent(NODE, wrapper=LAUNCHER)
    pid_file = tmp_path / "job.pid"
    sub = await Submitter.connect(stack.url)
    try:
        await sub.submit("orphan", f"echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}; sleep 300", node=NODE, tty=tty)
    finally:
        await sub.close()
    await wait_for(pid_file.exists, 30, what="the job to run")
    pid = int(pid_file.read_text())
    assert _group(pid), "the job's shell and its sleep"
    await stack.kill(agent)  # kill -9

    await wait_for(lambda: not _group(pid), 30, what=f"every process of the job's group (pid {pid}) to end with the agent")


def _group(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found
