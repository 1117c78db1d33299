"""End-to-end latency and throughput on a local stack (issue 13's acceptance figures).

Starts private stacks (bench.stack: nats-server on a random port with a temp store,
`nexus orchestrator` and `nexus-agent` processes) and measures, on the JetStream
server timestamps of the events (one clock: all on one machine):
  1. wall time of `nexus run -- true` (a new CLI process each time), N runs
  2. `requested` -> `exited` (and -> `succeeded`) of `true` jobs submitted one at a time
  3. the first output byte of `echo hi` after `requested`, one at a time
  4. a burst of `true` jobs submitted at once on 4 agents: jobs/s until all succeeded
  5. `echo hi` on 20 agents at once (one job per node): wall until all exited
Prints the figures; record them in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import BIN, LogWatch, Stack, local_stack, machine, med, pct
from orchestrator.client import new_job_id
from schemas.events import JobRequested

Figure = dict[str, Any]


def figure(what: str, value: float, unit: str, target: str | None = None, **peer: Any) -> Figure:
    return {"what": what, "value": round(value, 3), "unit": unit, "target": target,
            "peer": peer.get("peer"), "peer_value": peer.get("peer_value"), "ratio": peer.get("ratio")}  # fmt: skip


async def cli_wall(stack: Stack, runs: int) -> list[Figure]:
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(BIN / "nexus", "run", "-q", "--", "true", env=stack.env)
        assert await proc.wait() == 0
        walls.append((time.perf_counter() - t0) * 1000)
    return [figure("`nexus run -- true` wall time (new CLI process), p50", med(walls), "ms")]


async def one_at_a_time(stack: Stack, watch: LogWatch, n: int, command: str) -> list[str]:
    ids = []
    for _ in range(n):
        job_id = new_job_id()
        await stack.client.submit(job_id, JobRequested(command=command))
        await watch.wait([job_id])
        ids.append(job_id)
    return ids


async def sequential(stack: Stack, watch: LogWatch, n: int) -> list[Figure]:
    ids = await one_at_a_time(stack, watch, n, "true")
    exited = [g for j in ids if (g := watch.jobs[j].gap_ms("requested", "exited")) is not None]
    done = [g for j in ids if (g := watch.jobs[j].gap_ms("requested", "succeeded")) is not None]
    return [
        figure(f"`true` one at a time ({n}): requested -> exited, p50", med(exited), "ms", "<= 15"),
        figure(f"`true` one at a time ({n}): requested -> exited, p99", pct(exited, 99), "ms", "<= 40"),
        figure(f"`true` one at a time ({n}): requested -> succeeded, p50", med(done), "ms"),
    ]


async def first_byte(stack: Stack, watch: LogWatch, n: int) -> list[Figure]:
    ids = await one_at_a_time(stack, watch, n, "echo hi")
    await asyncio.sleep(0.2)  # a chunk may be seen after `succeeded` (two streams)
    gaps = [g for j in ids if (g := watch.jobs[j].gap_ms("requested", "output")) is not None]
    if len(gaps) < len(ids):
        raise RuntimeError(f"first output chunk seen for {len(gaps)} of {len(ids)} jobs")
    return [
        figure(f"`echo hi` one at a time ({n}): requested -> first output byte, p50", med(gaps), "ms", "<= 20"),
        figure(f"`echo hi` one at a time ({n}): requested -> first output byte, p99", pct(gaps, 99), "ms"),
    ]


async def burst(stack: Stack, watch: LogWatch, n: int) -> list[Figure]:
    ids = [new_job_id() for _ in range(n)]
    cpu_before, own_before = stack.cpu_s(), time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(stack.client.submit(j, JobRequested(command="true")) for j in ids))
    await watch.wait(ids, timeout_s=300)
    wall = time.perf_counter() - t0
    cpu = {name: (s - cpu_before.get(name, 0.0)) * 1000 / n for name, s in stack.cpu_s().items()}
    own = (time.process_time() - own_before) * 1000 / n  # this bench's client: it shares the 2 cores
    statuses = {watch.jobs[j].status for j in ids}
    if statuses != {"succeeded"}:
        raise RuntimeError(f"burst: not every job succeeded: {statuses}")
    agents = len(stack.nodes)
    # CPU per job by process: on 2 cores, 300 jobs/s leaves 6.7 ms of CPU per job for everything.
    by_role = {"orchestrator": cpu.get("orchestrator", 0.0), "agents": sum(v for k, v in cpu.items() if k in stack.nodes),
               "nats-server": cpu.get("nats-server", 0.0), "the bench's client (submits and watches)": own}  # fmt: skip
    return [
        figure(f"burst of {n} `true` at once on {agents} agents: until all succeeded", n / wall, "jobs/s", ">= 300"),
        *(figure(f"burst: CPU per job, {role}", round(ms, 3), "ms") for role, ms in by_role.items()),
    ]


async def fan_out(stack: Stack, watch: LogWatch) -> list[Figure]:
    ids = {node: new_job_id() for node in stack.nodes}
    t0 = time.perf_counter()
    await asyncio.gather(*(stack.client.submit(j, JobRequested(command="echo hi", node=node)) for node, j in ids.items()))
    await watch.wait(ids.values(), until="exited")
    wall = (time.perf_counter() - t0) * 1000
    await watch.wait(ids.values())
    bad = {watch.jobs[j].status for j in ids.values()} - {"succeeded"}
    if bad:
        raise RuntimeError(f"fan-out: not every job succeeded: {bad}")
    peer = ansible_peer(len(stack.nodes))
    extra: dict[str, Any] = {"peer": "ansible ad-hoc (not installed: make bench installs ansible-core)"}
    if peer is not None:
        extra = {"peer": "ansible ad-hoc", "peer_value": peer, "ratio": peer / wall}
    return [figure(f"`echo hi` on {len(stack.nodes)} agents at once: wall until all exited", wall, "ms", "<= 100", **extra)]


def ansible_peer(targets: int) -> float | None:
    """Ansible ad-hoc `echo hi` on `targets` local hosts, in ms (bench/ansible_peer.py); None without ansible."""
    from bench import ansible_peer

    if not ansible_peer.ansible_available():
        return None
    return ansible_peer.ansible_adhoc(targets, forks=targets) * 1000


async def main(a: argparse.Namespace) -> list[Figure]:
    figures: list[Figure] = []
    async with local_stack(agents=4, max_jobs=a.max_jobs) as stack:
        watch = LogWatch(stack.bus)
        await watch.start(output=True)
        try:
            warm = new_job_id()
            await stack.client.submit(warm, JobRequested(command="true"))
            await watch.wait([warm])
            if a.runs:
                figures += await cli_wall(stack, a.runs)
            if a.sequential:
                figures += await sequential(stack, watch, a.sequential)
            if a.first_byte:
                figures += await first_byte(stack, watch, a.first_byte)
            if a.burst:
                figures += await burst(stack, watch, a.burst)
        finally:
            await watch.stop()
    if a.fan_out:
        async with local_stack(agents=a.fan_out, max_jobs=a.max_jobs) as stack:
            watch = LogWatch(stack.bus)
            await watch.start()
            try:
                await fan_out(stack, watch)  # warm: the first job on each agent
                figures += await fan_out(stack, watch)
            finally:
                await watch.stop()
    return figures


def report(figures: list[Figure], out: Any = sys.stdout) -> None:
    print(f"machine: {machine()}", file=out)
    for f in figures:
        target = f" (target {f['target']})" if f["target"] else ""
        peer = ""
        if f["peer"]:
            peer = f"; peer {f['peer']}" + (f" {f['peer_value']:.0f} {f['unit']}, ratio {f['ratio']:.1f}x" if f["peer_value"] else "")
        print(f"{f['what']:<78} {f['value']:9.1f} {f['unit']}{target}{peer}", file=out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10, help="`nexus run` processes (0: skip)")
    ap.add_argument("--sequential", type=int, default=200)
    ap.add_argument("--first-byte", type=int, default=50)
    ap.add_argument("--burst", type=int, default=200, help="jobs in the burst (0: skip, as for the other counts)")
    ap.add_argument("--fan-out", type=int, default=20, help="agents for the `echo hi` fan-out (0: skip)")
    ap.add_argument("--max-jobs", type=int, default=8)
    ap.add_argument("--json", action="store_true", help="print one JSON object (the human figures go to stderr)")
    args = ap.parse_args()
    figures = asyncio.run(main(args))
    report(figures, sys.stderr if args.json else sys.stdout)
    if args.json:
        import json

        print(json.dumps({"bench": "run_latency", "figures": figures}))
