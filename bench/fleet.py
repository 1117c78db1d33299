"""One orchestrator and a simulated fleet of N nodes (issue 13, item 3).

For each N (default 100 and 1000; `--nodes 100,1000,5000`) it starts, on this machine:
  - a private nats-server with NATS decentralized auth (a fresh keyring, random port, temp store),
  - one real `nexus orchestrator` process (admin credentials),
  - bench/fleet_sim.py: N real agents (agent.service.Agent) in one process, each on its own
    connection with its own agent credentials and node key; only the job processes are simulated,
and measures:
  register   wall time until all N nodes are `online` in the orchestrator's view
  idle       orchestrator CPU (% of one core) and RSS with N nodes heartbeating every 2 s,
             from /proc/<pid>/stat and /proc/<pid>/status over a 10 s window (nats-server and
             the simulator beside it, for scale)
  first      `echo hi` to every node at once, each node's first job: the agents announce
             their identities on the log and learn the orchestrator's (once per agent process)
  fan-out    the same again, as on a fleet whose agents have run jobs before (N jobs, one per
             node): wall until all N `exited` facts were seen, then until all `succeeded`
             (target: 1,000 nodes in 3 s)
  dispatch   a steady rate of `echo hi` jobs to random nodes under that load: requested ->
             exited p50/p99 as a client sees it (the `exited` fact arriving on its subscription)
Prints the figures, or with --json one object (the convention of bench/all.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fleet_sim import node_name
from stack import pct, wait_ready

from bus.errors import BusError
from bus.nats_bus import NatsBus
from orchestrator.client import NexusClient, new_job_id
from orchestrator.embedded import EmbeddedNats
from orchestrator.trust.keyring import Keyring
from schemas import subjects
from schemas.events import JobRequested

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")
FANOUT_TARGET_S = 3.0  # 1,000 nodes all `exited` (issue 13)
IDLE_CPU_TARGET = 20.0  # % of one core at 1,000 nodes with 2 s heartbeats (issue 13)


def die_with_parent() -> None:
    """In a child, before exec: SIGTERM when this bench dies (Linux), so a bench stopped by a
    timeout leaves no orchestrator or simulator behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_of(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


async def cpu_percent(pids: dict[str, list[int]], window_s: float) -> dict[str, float]:
    before = {k: cpu_of(p) for k, p in pids.items()}
    t0 = time.monotonic()
    await asyncio.sleep(window_s)
    took = time.monotonic() - t0
    return {k: (cpu_of(p) - before[k]) / took * 100 for k, p in pids.items()}


def progress(what: str) -> None:
    print(what, file=sys.stderr, flush=True)


@dataclass
class Result:
    nodes: int
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Exits:
    """The `exited` facts as they arrive on a plain subscription: job id -> monotonic time."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def on_msg(self, msg: object) -> None:
        job_id = msg.subject.split(".")[3]  # type: ignore[attr-defined]  # nexus.evt.job.<id>.exited
        self.seen.setdefault(job_id, time.monotonic())
        self.changed.set()

    async def wait_all(self, job_ids: list[str], timeout_s: float) -> float | None:
        deadline = time.monotonic() + timeout_s
        while not all(j in self.seen for j in job_ids):
            self.changed.clear()
            if time.monotonic() > deadline:
                return None
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self.changed.wait()
            except TimeoutError:
                return None
        return max(self.seen[j] for j in job_ids)


async def count(client: NexusClient, sql: str, params: list[object] | None = None) -> int:
    rows = await client.query(sql, params or [], timeout_s=30.0)
    return int(rows.rows[0][0])


async def wait_count(client: NexusClient, sql: str, want: int, timeout_s: float, params: list[object] | None = None) -> float | None:
    """Monotonic time when `sql` first counted `want`, None on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if await count(client, sql, params) >= want:
                return time.monotonic()
        except Exception:  # a query refused while the orchestrator is busy: ask again
            pass
        await asyncio.sleep(0.05)
    return None


async def submit(client: NexusClient, job_id: str, req: JobRequested) -> None:
    """Submit, again on a lost ack (the job id is the msg id: a retry never makes a second job)."""
    for attempt in range(5):
        try:
            await client.submit(job_id, req)
            return
        except BusError as exc:
            if not exc.retryable or attempt == 4:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))


async def submit_all(client: NexusClient, jobs: list[tuple[str, str]], at_once: int = 64) -> None:
    gate = asyncio.Semaphore(at_once)

    async def one(job_id: str, node: str) -> None:
        async with gate:
            await submit(client, job_id, JobRequested(command="echo hi", node=node, requested_by="bench"))

    await asyncio.gather(*(one(j, n) for j, n in jobs))


async def fan_out(client: NexusClient, exits: Exits, pids: dict[str, list[int]], res: Result, n: int, name: str, *, wave: int) -> None:
    """`echo hi` on every node at once, the `wave`-th time: figures `<name>_exited_s`,
    `<name>_cpu_<process>`, `<name>_succeeded_s`."""
    jobs = [(new_job_id(), node_name(i)) for i in range(n)]
    ids = [j for j, _ in jobs]
    busy = {k: cpu_of(p) for k, p in pids.items()}
    progress(f"fleet {n}: fan-out of `echo hi` to {n} nodes ({name})")
    t0 = time.monotonic()
    await submit_all(client, jobs)
    res.figures[f"{name}_submit_s"] = time.monotonic() - t0
    last = await exits.wait_all(ids, timeout_s=max(60.0, n * 0.06))
    if last is None:
        res.notes.append(f"{name}: only {sum(j in exits.seen for j in ids)} of {n} exited in time")
        return
    res.figures[f"{name}_exited_s"] = last - t0
    # CPU seconds each process spent until then: the simulator does the work of N
    # agents in one process, so when it nears the wall time, it is what was measured.
    for k, p in pids.items():
        res.figures[f"{name}_cpu_{k}"] = cpu_of(p) - busy[k]
    sql = "SELECT count(*) FROM jobs WHERE status = 'succeeded' AND requested_by = 'bench' AND command = 'echo hi'"
    done = await wait_count(client, sql, n * wave, timeout_s=60.0)
    if done is not None:
        res.figures[f"{name}_succeeded_s"] = done - t0


async def measure(
    n: int, *, heartbeat_s: float, idle_window_s: float, rate: float, steady_s: float, keep: bool, log_level: str = "warning",
    procs: int = 1,
) -> Result:
    res = Result(n)
    tmp = Path(tempfile.mkdtemp(prefix=f"nexus-fleet-{n}-"))
    ring = Keyring(tmp / "creds")
    ring.ensure()
    orch_creds = ring.issue("admin", "orchestrator", service=True).path
    bench_creds = ring.issue("admin", "bench").path
    sim_dir = tmp / "sim-creds"
    for i in range(n):
        ring.issue("agent", node_name(i), node=node_name(i), out=sim_dir / f"{node_name(i)}.creds")
    server = EmbeddedNats(tmp / "js", port=-1, auth=ring.server_config(), log_file=tmp / "nats-server.log")
    url = await server.start()
    env = {**os.environ, "NEXUS_NATS_URL": url}
    logs = {name: open(tmp / f"{name}.log", "wb") for name in ("orchestrator", "simulator")}  # noqa: SIM115 - closed below
    # FLEET_PROFILE=1: the orchestrator runs under cProfile (orchestrator.prof in the temp directory).
    profile = [sys.executable, "-m", "cProfile", "-o", tmp / "orchestrator.prof"] if os.environ.get("FLEET_PROFILE") else []
    orch = await asyncio.create_subprocess_exec(
        *profile, BIN / "nexus", "orchestrator", "--db", tmp / "nexus.duckdb", "--log-level", log_level,
        env={**env, "NEXUS_NATS_CREDS": str(orch_creds)}, stderr=logs["orchestrator"], preexec_fn=die_with_parent,
    )  # fmt: skip
    sims: list[asyncio.subprocess.Process] = []
    bus = await NatsBus.connect(url, name="bench-fleet", creds=bench_creds)
    client = NexusClient(bus)
    try:
        await wait_ready(client)
        t0 = time.monotonic()
        share = -(-n // procs)  # nodes per simulator process
        # In waves, one simulator process at a time, each waited for (all its agents bound to
        # their dispatch consumers): 5,000 agents connecting and announcing at once starved
        # every process on 2 cores, the simulators first (their beats late past the TTL).
        for first in range(0, n, share):
            sim = await asyncio.create_subprocess_exec(
                sys.executable, HERE / "fleet_sim.py", "--url", url, "--creds-dir", sim_dir, "--nodes", str(min(share, n - first)),
                "--first", str(first), "--heartbeat-s", str(heartbeat_s), "--log-level", log_level,
                stdout=asyncio.subprocess.PIPE, stderr=logs["simulator"], env=env, preexec_fn=die_with_parent,
            )  # fmt: skip
            sims.append(sim)
            assert sim.stdout is not None
            try:
                async with asyncio.timeout(max(60.0, share * 0.2)):
                    line = (await sim.stdout.readline()).decode().split()
            except TimeoutError:
                line = ["timed out"]
            online = await count(client, "SELECT count(*) FROM nodes WHERE status = 'online'")
            progress(f"fleet {n}: wave {len(sims)}: {first + min(share, n - first)} agents started, {online} nodes online, "
                     f"{time.monotonic() - t0:.1f} s")  # fmt: skip
            if line[:1] != ["ready"]:
                res.notes.append(f"the simulator of nodes {first}.. did not start: {' '.join(line)}")
                return res
        res.figures["sim_ready_s"] = time.monotonic() - t0
        online = await wait_count(client, "SELECT count(*) FROM nodes WHERE status = 'online'", n, timeout_s=max(60.0, n * 0.02))
        if online is None:
            got = await count(client, "SELECT count(*) FROM nodes WHERE status = 'online'")
            res.notes.append(f"only {got} of {n} nodes came online")
            return res
        res.figures["register_s"] = online - t0

        # Idle: every node heartbeating, no jobs. Settle one TTL first (the registration burst).
        await asyncio.sleep(max(2.0, heartbeat_s * 2))
        assert server.proc is not None
        pids = {"orchestrator": [orch.pid], "nats-server": [server.proc.pid], "simulator": [s.pid for s in sims]}
        cpu = await cpu_percent(pids, idle_window_s)
        for name, value in cpu.items():
            res.figures[f"idle_cpu_{name}"] = value
            res.figures[f"rss_{name}_mib"] = sum(rss_mib(p) for p in pids[name])

        exits = Exits()
        sub = await bus.nc.subscribe(subjects.job_kind_all("exited"), cb=exits.on_msg)
        try:
            # Fan-out: `echo hi` on every node at once; first as each node's first job (the agents
            # announce their identities on the log and learn the orchestrator's), then again, as a
            # fleet that has run jobs before does: that one is measured against the target.
            await fan_out(client, exits, pids, res, n, "first", wave=1)
            await fan_out(client, exits, pids, res, n, "fanout", wave=2)

            # Dispatch latency under load: a steady rate of jobs to random nodes.
            lat: list[float] = []
            sent: dict[str, float] = {}
            total = int(rate * steady_s)
            start = time.monotonic()
            tasks = []
            for k in range(total):
                await asyncio.sleep(max(0.0, start + k / rate - time.monotonic()))
                job_id = new_job_id()
                sent[job_id] = time.monotonic()
                req = JobRequested(command="echo hi", node=node_name(random.randrange(n)), requested_by="bench-steady")
                tasks.append(asyncio.create_task(submit(client, job_id, req)))
            await asyncio.gather(*tasks)
            if await exits.wait_all(list(sent), timeout_s=60.0) is None:
                res.notes.append(f"steady: only {sum(j in exits.seen for j in sent)} of {total} exited in time")
            lat = [exits.seen[j] - t for j, t in sent.items() if j in exits.seen]
            if lat:
                res.figures["dispatch_p50_s"] = pct(lat, 50)
                res.figures["dispatch_p99_s"] = pct(lat, 99)
                res.figures["dispatch_rate"] = rate
        finally:
            await sub.unsubscribe()
        return res
    finally:
        await bus.close()
        for proc in (*sims, orch):
            if proc.returncode is None:
                proc.terminate()
        for proc in (*sims, orch):
            if proc is not None:
                try:
                    async with asyncio.timeout(30):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        await server.stop()
        for fh in logs.values():
            fh.close()
        if keep:
            print(f"kept {tmp} (orchestrator.log, simulator.log, nexus.duckdb)", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def figures(results: list[Result]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []

    def add(what: str, value: float, unit: str, target: str | None = None) -> None:
        fig = {"what": what, "value": round(value, 4), "unit": unit, "target": target, "peer": None, "peer_value": None, "ratio": None}
        out.append(fig)

    base = next((r for r in results if "idle_cpu_orchestrator" in r.figures), None)
    for r in results:
        f, n = r.figures, r.nodes
        if "register_s" in f:
            add(f"fleet {n}: all nodes online after start", f["register_s"], "s")
        if "idle_cpu_orchestrator" in f:
            cpu_target = f"< {IDLE_CPU_TARGET * n / 1000:g}" if n >= 1000 else None
            add(f"fleet {n}: orchestrator idle CPU (2 s beats)", f["idle_cpu_orchestrator"], "% core", cpu_target)
            add(f"fleet {n}: orchestrator RSS", f["rss_orchestrator_mib"], "MiB")
            add(f"fleet {n}: nats-server idle CPU", f["idle_cpu_nats-server"], "% core")
            add(f"fleet {n}: simulators' idle CPU ({n} agents)", f["idle_cpu_simulator"], "% core")
            if base is not None and r is not base and base.figures["idle_cpu_orchestrator"] > 0:
                growth = f["idle_cpu_orchestrator"] / base.figures["idle_cpu_orchestrator"]
                add(f"fleet {n}: orchestrator idle CPU growth vs {base.nodes} nodes (x{n / base.nodes:g} nodes)", growth, "x")
        if "first_exited_s" in f:
            add(f"fleet {n}: first jobs after start (cold: identities announced and learnt), all exited", f["first_exited_s"], "s")
        if "fanout_exited_s" in f:
            target = f"< {FANOUT_TARGET_S:g}" if n == 1000 else None
            add(f"fleet {n}: fan-out `echo hi` (every node has run a job), all exited", f["fanout_exited_s"], "s", target)
        if "fanout_cpu_simulator" in f:
            for k in ("orchestrator", "nats-server", "simulator"):
                add(f"fleet {n}: fan-out, {k} CPU until all exited", f[f"fanout_cpu_{k}"], "s")
        if "fanout_succeeded_s" in f:
            add(f"fleet {n}: fan-out `echo hi`, all succeeded", f["fanout_succeeded_s"], "s")
        if "dispatch_p50_s" in f:
            add(f"fleet {n}: dispatch p50 at {f['dispatch_rate']:g} jobs/s", f["dispatch_p50_s"] * 1000, "ms")
            add(f"fleet {n}: dispatch p99 at {f['dispatch_rate']:g} jobs/s", f["dispatch_p99_s"] * 1000, "ms")
    return out


def check_target(value: float, target: str | None) -> bool | None:
    if not target:
        return None
    op, _, bound = target.partition(" ")
    return value < float(bound) if op == "<" else value > float(bound)


async def main(a: argparse.Namespace) -> None:
    results = []
    for n in a.nodes:
        if not a.json:
            print(f"-- {n} simulated nodes", file=sys.stderr, flush=True)
        one = measure(
            n, heartbeat_s=a.heartbeat_s, idle_window_s=a.idle_window, rate=a.rate, steady_s=a.steady, keep=a.keep, log_level=a.log_level,
            procs=a.procs or max(1, n // 500),
        )
        try:
            results.append(await one)
        except (BusError, TimeoutError) as exc:  # a fleet too large for this machine must not lose the others' figures
            results.append(Result(n, notes=[f"stopped: {exc}"]))
        progress(f"fleet {n}: {json.dumps({k: round(v, 4) for k, v in results[-1].figures.items()})} {results[-1].notes}")
    figs = figures(results)
    notes = [f"{r.nodes}: {note}" for r in results for note in r.notes]
    if a.json:
        print(json.dumps({"bench": "fleet", "figures": figs, "notes": notes}))
        return
    print(f"machine: {os.uname().sysname} {os.uname().machine}, {os.cpu_count()} cores, python {sys.version.split()[0]}")
    for fig in figs:
        ok = check_target(float(fig["value"]), fig["target"])  # type: ignore[arg-type]
        verdict = "" if ok is None else ("  PASS" if ok else "  FAIL")
        target = f"  (target {fig['target']})" if fig["target"] else ""
        print(f"{fig['what']:<66} {fig['value']:>10.2f} {fig['unit']}{target}{verdict}")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000])
    ap.add_argument("--heartbeat-s", type=float, default=2.0)
    ap.add_argument("--idle-window", type=float, default=10.0, help="seconds of idle CPU measurement")
    ap.add_argument("--rate", type=float, default=20.0, help="jobs/s of the steady dispatch load")
    ap.add_argument("--steady", type=float, default=10.0, help="seconds of steady dispatch load")
    ap.add_argument("--procs", type=int, default=0, help="simulator processes (default: one per 500 nodes)")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory (logs, DuckDB file)")
    ap.add_argument("--log-level", default="warning", help="of the orchestrator and the simulator (their logs go to the temp directory)")
    ap.add_argument("--json", action="store_true")
    asyncio.run(main(ap.parse_args()))
