"""CLI start-up: whole-process wall time of `nexus --help` and `nexus run -- true`.

In the same run it measures Python's own floor (`python -c pass`), the framework's
(`python -c "import typer"`) and that of every library `nexus run` cannot do without
(typer, nats-py, msgspec, asyncio: importing them alone), so the figures can be read as
ratios on any machine.
`nexus run -- true` runs against a private stack (nats-server, `nexus orchestrator`,
`nexus agent`, separate processes), so it includes submitting, scheduling, running
`true` in a PTY on the agent and following the job to its end.

Targets (issue 13): `nexus --help` <= 120 ms, `nexus run -- true` <= 150 ms, whole process.
`--json` prints one JSON object (bench/ convention).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import stop_processes

BIN = Path(sys.executable).parent
NEXUS = str(BIN / "nexus")
# As installed: an installed package has its bytecode; a checkout run with PYTHONDONTWRITEBYTECODE
# (set in some shells and CI images) would compile every project module on every start instead.
# What `nexus run` imports of other people's code and cannot do without: its floor.
LIBRARIES = "import typer, nats, msgspec, asyncio"
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(argv: list[str], runs: int, env: dict[str, str] = CHILD_ENV) -> tuple[float, float]:
    """Median wall ms and median CPU ms (user + system of the child) over `runs` runs, after one warm-up."""
    walls, cpus = [], []
    for i in range(runs + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"{argv} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-500:]}")
        if i:  # the first run warms the page cache and the .pyc files
            walls.append(wall * 1000)
            cpus.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
    return statistics.median(walls), statistics.median(cpus)


async def with_stack(runs: int) -> tuple[float, float]:
    from orchestrator.embedded import EmbeddedNats

    tmp = Path(tempfile.mkdtemp(prefix="nexus-bench-cli-"))
    server = EmbeddedNats(tmp / "js", port=-1)
    url = await server.start()
    env = {**CHILD_ENV, "NEXUS_NATS_URL": url}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen([NEXUS, "orchestrator", "--db", str(tmp / "nexus.duckdb"), "--log-level", "warning"], env=env, **quiet),
        subprocess.Popen([NEXUS, "agent", "--node", "bench-cli", "--log-level", "warning", "--state-dir", str(tmp / "agent")],
                         env=env, cwd=tmp, **quiet),
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([NEXUS, "run", "-q", "--", "true"], env=env, cwd=tmp, **quiet).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("the stack did not run a job within 60 s")
            await asyncio.sleep(0.2)
        return await asyncio.to_thread(timed, [NEXUS, "run", "-q", "--", "true"], runs, env)
    finally:
        stop_processes(procs)
        await server.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # the streams hold what the jobs wrote


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    floor = timed([sys.executable, "-c", "pass"], args.runs)
    typer_floor = timed([sys.executable, "-c", "import typer"], args.runs)
    libraries = timed([sys.executable, "-c", LIBRARIES], args.runs)
    helped = timed([NEXUS, "--help"], args.runs)
    ran = asyncio.run(with_stack(args.runs))
    rows = [
        ("python -c pass (floor)", floor, None, None, None),
        ('python -c "import typer"', typer_floor, None, "python -c pass", floor),
        (f'python -c "{LIBRARIES}"', libraries, None, 'python -c "import typer"', typer_floor),
        ("nexus --help, whole process", helped, "<= 120 ms", 'python -c "import typer"', typer_floor),
        ("nexus run -- true, whole process (private stack)", ran, "<= 150 ms", 'python -c "import typer"', typer_floor),
    ]
    figures = []
    for what, (wall, cpu), target, peer, peer_v in rows:
        figures.append({"what": what + " wall", "value": round(wall, 1), "unit": "ms", "target": target, "peer": peer,
                        "peer_value": None if peer_v is None else round(peer_v[0], 1),
                        "ratio": None if peer_v is None else round(wall / peer_v[0], 2)})  # fmt: skip
        figures.append({"what": what + " CPU", "value": round(cpu, 1), "unit": "ms", "target": None, "peer": peer,
                        "peer_value": None if peer_v is None else round(peer_v[1], 1),
                        "ratio": None if peer_v is None else round(cpu / peer_v[1], 2)})  # fmt: skip
    if args.json:
        print(json.dumps({"bench": "cli_startup", "figures": figures}))
        return
    machine = f"{os.uname().sysname} {os.uname().machine}, {os.cpu_count()} cores"
    print(f"machine: {machine}, python {sys.version.split()[0]}, median of {args.runs} runs after a warm-up (bytecode cached)")
    for f in figures:
        ratio = f"  ({f['ratio']:.2f}x {f['peer']})" if f["ratio"] is not None else ""
        target = f"  target {f['target']}" if f["target"] else ""
        print(f"{f['what']:<58} {f['value']:8.1f} {f['unit']}{ratio}{target}")


if __name__ == "__main__":
    main()
