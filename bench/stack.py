"""A private local stack for the latency benchmarks, and a watcher of the event log.

`local_stack` starts a nats-server (random port, temp store), `nexus orchestrator` and
N `nexus-agent` processes, as a user would, and stops every one of them on exit.
`LogWatch` follows the event log (and, on request, the output stream) from the
benchmark's own connection and keeps, per job, the JetStream server timestamp of
each event kind: the clock every stage is measured on (one machine, one clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bus.nats_bus import NatsBus
from orchestrator.client import NexusClient
from schemas import subjects

BIN = Path(sys.executable).parent
# Put before the orchestrator's command line, e.g. [sys.executable, "-m", "cProfile", "-o", FILE] to profile it.
ORCHESTRATOR_PREFIX: list[str] = []
AGENT_PREFIX: list[str] = []  # the same for each agent ("{node}" in it is replaced by the node id)
TERMINAL = {"succeeded", "failed", "rejected", "timed_out", "cancelled", "lost"}


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def med(values: list[float]) -> float:
    return statistics.median(values)


@dataclass
class Stack:
    url: str
    tmp: Path
    bus: NatsBus
    client: NexusClient
    nodes: list[str]
    orchestrator_log: Path | None
    env: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)  # "nats-server", "orchestrator", node ids

    def cpu_s(self) -> dict[str, float]:
        """CPU time (user + system) each process has used so far, from /proc (Linux)."""
        tick = os.sysconf("SC_CLK_TCK")
        out = {}
        for name, pid in self.pids.items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[name] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        return out


@dataclass
class JobTrace:
    """Server timestamps of one job's events, by kind (the first of each), and of its first output chunk."""

    at: dict[str, datetime] = field(default_factory=dict)
    first_output: datetime | None = None
    status: str | None = None  # the terminal kind, once seen
    done: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    def gap_ms(self, a: str, b: str) -> float | None:
        ta = self.at.get(a) if a != "output" else self.first_output
        tb = self.at.get(b) if b != "output" else self.first_output
        if ta is None or tb is None:
            return None
        return (tb - ta).total_seconds() * 1000


def _ack_time(reply: str) -> datetime:
    """The server's storage time of a JetStream delivery, from its ack subject
    (`$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>`, maybe with domain and hash)."""
    tokens = reply.split(".")
    ns = int(tokens[7] if len(tokens) == 9 else tokens[9])
    return datetime.fromtimestamp(ns / 1e9, UTC)


class LogWatch:
    """Follows NEXUS_EVENTS (and NEXUS_OUTPUT with `output=True`) from the current end."""

    def __init__(self, bus: NatsBus) -> None:
        self.bus = bus
        self.jobs: dict[str, JobTrace] = defaultdict(JobTrace)
        self._subs: list[object] = []

    async def start(self, *, output: bool = False) -> None:
        start = await self.bus.last_seq() + 1
        await self._follow(start)
        if output:
            await self._follow_output()

    async def _follow(self, start: int) -> None:
        # A raw client, as issue 13 measures with: the subject names the job and the kind, the
        # server's ack subject carries the time; no payload is sent (headers only) or decoded.
        # (It shares the bench machine's cores with the stack it measures: the lighter the better.)
        async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
            parts = msg.subject.split(".", 4)  # nexus.evt.job.<id>.<kind>[.<node>]
            if len(parts) < 5:
                return
            kind = parts[4].partition(".")[0]
            trace = self.jobs[parts[3]]
            if kind not in trace.at:
                trace.at[kind] = _ack_time(msg.reply)
            if kind == "exited":
                trace.exited.set()
            if kind in TERMINAL:
                trace.status = kind
                trace.done.set()

        from nats.js import api  # bench only: the adapter's readers decode and judge every record

        cfg = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start, headers_only=True)
        sub = await self.bus.js.subscribe("nexus.evt.job.>", stream=subjects.EVENTS_STREAM, ordered_consumer=True, config=cfg, cb=on_msg)
        self._subs.append(sub)

    async def _follow_output(self) -> None:
        # The bench plays a foreign client here: the first chunk's server time is all it wants.
        async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
            job_id = msg.subject.split(".")[2]
            trace = self.jobs[job_id]
            if trace.first_output is None:
                ts = msg.metadata.timestamp
                trace.first_output = ts if ts.tzinfo else ts.replace(tzinfo=datetime.now().astimezone().tzinfo)

        from nats.js import api  # bench only: the adapter has no "follow all output" reader

        cfg = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.NEW)
        sub = await self.bus.js.subscribe("nexus.out.>", stream=subjects.OUTPUT_STREAM, ordered_consumer=True, config=cfg, cb=on_msg)
        self._subs.append(sub)

    async def wait(self, job_ids: Iterable[str], timeout_s: float = 120.0, *, until: str = "done") -> None:
        async with asyncio.timeout(timeout_s):
            for job_id in job_ids:
                trace = self.jobs[job_id]
                await (trace.exited if until == "exited" else trace.done).wait()

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()  # type: ignore[attr-defined]


async def wait_ready(client: NexusClient, timeout_s: float = 60.0) -> None:
    """Until the orchestrator answers queries (it has started and caught up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await client.query("SELECT 1")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def wait_status(client: NexusClient, job_ids: list[str], timeout_s: float = 300.0) -> None:
    """Until every job in `job_ids` has ended, whatever its outcome."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = await client.query(
            "SELECT count(*) FROM jobs WHERE job_id IN (SELECT unnest(?::VARCHAR[])) AND status IN "
            "('succeeded','failed','rejected','timed_out','cancelled','lost')",
            [job_ids],
        )
        if rows.rows[0][0] == len(job_ids):
            return
        await asyncio.sleep(0.005)
    raise TimeoutError(f"{len(job_ids)} jobs did not all end within {timeout_s:g} s")


async def wait_nodes(client: NexusClient, nodes: list[str], timeout_s: float = 60.0) -> None:
    """Until every node is registered and online (the orchestrator may place jobs on it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await client.query("SELECT count(*) FROM nodes WHERE status = 'online'")
        if rows.rows[0][0] >= len(nodes):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {rows.rows[0][0]} of {len(nodes)} nodes came online")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def local_stack(*, agents: int = 1, max_jobs: int = 8, orchestrator_log: bool = False) -> AsyncIterator[Stack]:
    """nats-server + `nexus orchestrator` + `agents` x `nexus-agent`, ready to take jobs.

    `orchestrator_log`: the orchestrator logs JSON at debug level into a file (its timings, for the trace)."""
    from orchestrator.embedded import EmbeddedNats

    tmp = Path(tempfile.mkdtemp(prefix="nexus-bench-"))
    server = EmbeddedNats(tmp / "js", port=-1)
    url = await server.start()
    env = {**os.environ, "NEXUS_NATS_URL": url}
    procs: list[subprocess.Popen[bytes]] = []
    log_path = tmp / "orchestrator.log" if orchestrator_log else None
    bus: NatsBus | None = None
    try:
        level = ["--log-level", "debug", "--log-json"] if orchestrator_log else ["--log-level", "warning"]
        with open(log_path, "wb") if log_path else contextlib.nullcontext() as sink:  # type: ignore[attr-defined]
            orch = [*ORCHESTRATOR_PREFIX, BIN / "nexus", "orchestrator", "--db", tmp / "nexus.duckdb", *level]
            procs.append(subprocess.Popen(orch, env=env, stderr=sink))
        nodes = [f"bench-{i + 1}" for i in range(agents)]
        for node in nodes:
            prefix = [a.replace("{node}", node) for a in AGENT_PREFIX]
            argv = [*prefix, BIN / "nexus-agent", "--node", node, "--max-jobs", str(max_jobs), "--log-level", "warning",
                    "--state-dir", tmp / "agents" / node]  # fmt: skip
            procs.append(subprocess.Popen(argv, env=env))
        bus = await NatsBus.connect(url, name="bench")
        client = NexusClient(bus)
        await wait_ready(client)
        await wait_nodes(client, nodes)
        pids = {"nats-server": server.proc.pid if server.proc else 0, "orchestrator": procs[0].pid}
        pids.update((node, p.pid) for node, p in zip(nodes, procs[1:], strict=True))
        yield Stack(url=url, tmp=tmp, bus=bus, client=client, nodes=nodes, orchestrator_log=log_path, env=env, pids=pids)
    finally:
        if bus is not None:
            await bus.close()
        stop_processes(procs)
        await server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], timeout_s: float = 15.0) -> None:
    """SIGTERM to all, then wait for each; one that outlives `timeout_s` is killed."""
    procs = list(procs)
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def machine() -> str:
    load = os.getloadavg()[0]
    return f"{os.uname().sysname} {os.uname().machine}, {os.cpu_count()} cores, python {sys.version.split()[0]}, load {load:.1f}"
