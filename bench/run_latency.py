"""End-to-end latency and throughput on a local stack.

Starts a private nats-server (random port, temp store), `nexus orchestrator`
and `nexus agent` as separate processes, then measures:
  1. wall time of `nexus run -- true` (a new CLI process each time), N runs
  2. requested -> succeeded of jobs submitted one at a time from one client
  3. a burst of jobs submitted at once: time until all succeeded
Prints the figures; record them in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bus.nats_bus import NatsBus
from orchestrator.client import NexusClient, new_job_id
from orchestrator.embedded import EmbeddedNats
from schemas.events import JobRequested

BIN = Path(sys.executable).parent


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


FIGURES: list[dict[str, object]] = []  # for --json (COMMON.md's convention), filled as the figures are printed


def figure(what: str, value: float, unit: str, target: str | None = None) -> None:
    FIGURES.append({"what": what, "value": round(value, 4), "unit": unit, "target": target,
                    "peer": None, "peer_value": None, "ratio": None})  # fmt: skip


def summary(name: str, values: list[float]) -> None:
    figure(f"{name}, median", statistics.median(values) * 1000, "ms")
    figure(f"{name}, p95", pct(values, 95) * 1000, "ms")
    print(f"{name:<44} n={len(values):<4} median={statistics.median(values) * 1000:7.1f} ms  "
          f"p95={pct(values, 95) * 1000:7.1f} ms  min={min(values) * 1000:7.1f} ms")  # fmt: skip


async def wait_status(client: NexusClient, job_ids: list[str], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    placeholders = ",".join("?" for _ in job_ids)
    while time.monotonic() < deadline:
        rows = await client.query(
            f"SELECT count(*) FROM jobs WHERE job_id IN ({placeholders}) AND status IN "
            "('succeeded','failed','rejected','timed_out','cancelled','lost')",
            job_ids,
        )
        if rows.rows[0][0] == len(job_ids):
            return
        await asyncio.sleep(0.005)
    raise TimeoutError("jobs did not finish")


async def wait_ready(client: NexusClient, timeout: float = 60.0) -> None:
    """Until the orchestrator answers queries (it has started and caught up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.query("SELECT 1")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def main(runs: int, sequential: int, burst: int, max_jobs: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="nexus-bench-"))
    server = EmbeddedNats(tmp / "js", port=-1)
    url = await server.start()
    env = {**os.environ, "NEXUS_NATS_URL": url}
    procs = [
        subprocess.Popen([BIN / "nexus", "orchestrator", "--db", tmp / "nexus.duckdb", "--log-level", "warning"], env=env),
        subprocess.Popen([BIN / "nexus", "agent", "--node", "bench-1", "--max-jobs", str(max_jobs), "--log-level", "warning"], env=env),
    ]
    bus = await NatsBus.connect(url, name="bench")
    client = NexusClient(bus)
    try:
        # Ready when a job goes through.
        warm = new_job_id()
        await wait_ready(client)
        await client.submit(warm, JobRequested(command="true"))
        await wait_status(client, [warm])

        print(f"machine: {os.uname().sysname} {os.uname().machine}, {os.cpu_count()} cores, python {sys.version.split()[0]}")
        walls = []
        for _ in range(runs):
            t0 = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(BIN / "nexus", "run", "-q", "--", "true", env=env)
            assert await proc.wait() == 0
            walls.append(time.perf_counter() - t0)
        summary("`nexus run -- true` wall time (new process)", walls)

        inner = []
        for _ in range(sequential):
            job_id = new_job_id()
            t0 = time.perf_counter()
            await client.submit(job_id, JobRequested(command="true"))
            await wait_status(client, [job_id])
            inner.append(time.perf_counter() - t0)
        summary("submit -> succeeded (one at a time)", inner)

        ids = [new_job_id() for _ in range(burst)]
        t0 = time.perf_counter()
        for job_id in ids:
            await client.submit(job_id, JobRequested(command="true"))
        await wait_status(client, ids)
        took = time.perf_counter() - t0
        print(f"burst of {burst} `true` jobs, agent max {max_jobs}: all succeeded in {took:.2f} s ({burst / took:.1f} jobs/s)")
        figure(f"burst of {burst} `true` jobs on one agent (max {max_jobs})", burst / took, "jobs/s")
        rows = await client.query("SELECT count(*) FROM events")
        print(f"events in the log: {rows.rows[0][0]}")
    finally:
        await bus.close()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=15)
        await server.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--sequential", type=int, default=50)
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--max-jobs", type=int, default=8)
    ap.add_argument("--json", action="store_true", help="print one JSON object (the human figures go to stderr)")
    a = ap.parse_args()
    if a.json:
        import contextlib
        import json

        with contextlib.redirect_stdout(sys.stderr):
            asyncio.run(main(a.runs, a.sequential, a.burst, a.max_jobs))
        print(json.dumps({"bench": "run_latency", "figures": FIGURES}))
    else:
        asyncio.run(main(a.runs, a.sequential, a.burst, a.max_jobs))
