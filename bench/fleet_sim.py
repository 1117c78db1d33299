"""N simulated agents in one asyncio process, speaking the real protocol (issue 13).

Each simulated node is the real `agent.service.Agent` (heartbeats to the `nexus-nodes`
bucket, its durable dispatch consumer, dispatch verification, `accepted` with optimistic
concurrency, the ledger) on its own NATS connection with its own agent credentials: it
signs its facts, heartbeats and output with its own node key, so the orchestrator's
verification does real work, and the server's per-node permissions hold it to its own
subjects. Only the process is simulated: `SimRunner` answers a dispatch without spawning
anything (`echo X` prints "X\\n" and exits 0, `true` 0, `false` 1, anything else 127).

    python bench/fleet_sim.py --url nats://... --creds-dir DIR --nodes 1000

reads `DIR/sim-<i>.creds` (an agent identity for node `sim-<i>`, issued by bench/fleet.py)
and prints `ready <n>` on stdout once every agent has bound its dispatch consumer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.pty_runner import RunResult, RunSpec
from agent.service import Agent
from bus.nats_bus import NatsBus

# The tools a simulated node reports (the real agent looks them up on PATH once per agent).
SIM_TOOLS = ["bash", "sh"]


def node_name(i: int) -> str:
    return f"sim-{i}"


def simulate(argv: list[str]) -> tuple[bytes, int]:
    """What the command would print, and its exit code, without running it."""
    command = argv[-1] if argv else ""
    try:
        words = shlex.split(command)
    except ValueError:
        words = []
    if words[:1] == ["echo"]:
        return (" ".join(words[1:]) + "\n").encode(), 0
    if words == ["true"]:
        return b"", 0
    if words == ["false"]:
        return b"", 1
    return f"fleet_sim: {command!r} is not simulated\n".encode(), 127


class SimRunner:
    """Stands in for agent.pty_runner.PtyRunner: the same callbacks, in the same order."""

    async def run(
        self,
        spec: RunSpec,
        on_output: Callable[[bytes], Awaitable[None]],
        cancel: asyncio.Event,
        on_started: Callable[[int], Awaitable[None]],
    ) -> RunResult:
        t0 = time.monotonic()
        await on_started(os.getpid())
        data, code = simulate(spec.argv)
        if data:
            await on_output(data)
        took = round((time.monotonic() - t0) * 1000)
        return RunResult(exit_code=code, signal=None, duration_ms=took, output_bytes=len(data), chunks=1 if data else 0, killed_by=None)


class SimAgent(Agent):
    def __init__(self, bus: NatsBus, node_id: str, *, heartbeat_s: float, max_jobs: int) -> None:
        super().__init__(bus, node_id, heartbeat_s=heartbeat_s, max_jobs=max_jobs, labels={"sim": "1"})
        self.runner = SimRunner()  # type: ignore[assignment]
        self.tools = list(SIM_TOOLS)
        self.last_beat: float | None = None
        self.max_gap = 0.0  # the longest time between two heartbeats stored: is the simulator keeping up?

    async def _put_heartbeat(self) -> None:
        await super()._put_heartbeat()
        now = time.monotonic()
        if self.last_beat is not None:
            self.max_gap = max(self.max_gap, now - self.last_beat)
        self.last_beat = now


class Fleet:
    """N simulated agents on N connections; `start` returns once all are bound."""

    def __init__(self, url: str, creds_dir: Path, nodes: int, *, first: int = 0, heartbeat_s: float = 2.0, max_jobs: int = 4) -> None:
        self.url, self.creds_dir, self.count, self.first = url, creds_dir, nodes, first
        self.heartbeat_s, self.max_jobs = heartbeat_s, max_jobs
        self.agents: list[SimAgent] = []
        self.buses: list[NatsBus] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, *, connect_at_once: int = 8) -> None:
        # Few CONNECTs in flight: a starved simulator with 50 at once answered the server's
        # nonce after its auth timeout (2 s), and the server dropped those connections.
        gate = asyncio.Semaphore(connect_at_once)

        async def one(i: int) -> None:
            node = node_name(i)
            async with gate:
                bus = await NatsBus.connect(self.url, name=f"fleet-sim-{node}", daemon=True, creds=self.creds_dir / f"{node}.creds")
            self.buses.append(bus)
            agent = SimAgent(bus, node, heartbeat_s=self.heartbeat_s, max_jobs=self.max_jobs)
            self.agents.append(agent)
            # Spread the heartbeats over one interval, as independent machines would.
            await asyncio.sleep(self.heartbeat_s * (i % 97) / 97)
            self._tasks.append(asyncio.create_task(agent.run(), name=node))

        await asyncio.gather(*(one(i) for i in range(self.first, self.first + self.count)))
        while not all(a.ready.is_set() for a in self.agents):
            if failed := [t for t in self._tasks if t.done()]:
                raise RuntimeError(f"{len(failed)} simulated agents stopped: {failed[0].exception()!r}")
            await asyncio.sleep(0.1)

    def beat_gaps(self) -> tuple[float, int]:
        """The longest gap between two heartbeats of one agent, and how many agents had one over
        5 intervals (the orchestrator's default TTL): then the simulator, not the orchestrator, fell behind."""
        late = sum(1 for a in self.agents if a.max_gap > 5 * self.heartbeat_s)
        return max((a.max_gap for a in self.agents), default=0.0), late

    async def stop(self) -> None:
        gap, late = self.beat_gaps()
        quiet = 5 * self.heartbeat_s
        print(f"heartbeats: longest gap {gap:.1f} s (interval {self.heartbeat_s:g} s); {late} agents went quiet over {quiet:g} s",
              file=sys.stderr, flush=True)  # fmt: skip
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(b.close(timeout_s=2.0) for b in self.buses), return_exceptions=True)


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def main(url: str, creds_dir: Path, nodes: int, first: int, heartbeat_s: float) -> None:
    raise_fd_limit()
    fleet = Fleet(url, creds_dir, nodes, first=first, heartbeat_s=heartbeat_s)
    t0 = time.monotonic()
    try:
        await fleet.start()
        print(f"ready {nodes} {time.monotonic() - t0:.2f}", flush=True)
        await asyncio.Event().wait()  # until terminated
    finally:
        await fleet.stop()


if __name__ == "__main__":
    import signal

    from agent.logs import configure

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--creds-dir", type=Path, required=True)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--first", type=int, default=0, help="the first node's number (several simulators share a fleet)")
    ap.add_argument("--heartbeat-s", type=float, default=2.0)
    ap.add_argument("--log-level", default="warning")
    a = ap.parse_args()
    configure(a.log_level)

    async def run() -> None:
        task = asyncio.create_task(main(a.url, a.creds_dir, a.nodes, a.first, a.heartbeat_s))
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())
