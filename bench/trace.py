"""Where a job's time goes: a per-job trace of the path, stage by stage (issue 13, item 1).

Starts a private stack (bench.stack: nats-server, `nexus orchestrator` logging its
timings as JSON at debug level, one `nexus-agent`), submits `echo hi` jobs one at a
time, and for each takes the JetStream server timestamp of every event of the job
(requested, validated, assigned, dispatch, accepted, started, first output chunk,
exited, succeeded) plus the client's own publish -> ack time. Prints the median and
p99 of each gap, and the orchestrator's own time per batch (fold + DuckDB write, then
decide + publish) and per decision publish, from its debug log.

    .venv/bin/python bench/trace.py --jobs 100 [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools

from bench.stack import LogWatch, local_stack, machine, med, pct
from orchestrator.client import new_job_id
from schemas.events import JobRequested

# The path of one job, in order; "output" is the first chunk on NEXUS_OUTPUT.
STAGES = ["requested", "validated", "assigned", "dispatch", "accepted", "started", "output", "exited", "succeeded"]
TOTALS = [("requested", "exited"), ("requested", "succeeded"), ("requested", "output")]


def orchestrator_timings(path: Path | None) -> dict[str, list[float]]:
    """From the orchestrator's JSON debug log: per batch, fold+write and decide+publish; per decision, its publish."""
    found: dict[str, list[float]] = {"batch: fold + verify + DuckDB write": [], "batch: decide + publish": [],
                                     "decision publish (requested -> validated, assigned, dispatch)": [],
                                     "decision publish (exited -> succeeded)": [],
                                     "store: one DuckDB transaction (wall)": [], "store: one DuckDB transaction (CPU)": [],
                                     "store: rows per transaction": []}  # fmt: skip
    if path is None or not path.exists():
        return found
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "orchestrator.batch" and entry.get("jobs"):
            found["batch: fold + verify + DuckDB write"].append(entry["apply_ms"])
            found["batch: decide + publish"].append(entry["decide_ms"])
        elif entry.get("event") == "store.flushed":
            found["store: one DuckDB transaction (wall)"].append(entry["ms"])
            found["store: one DuckDB transaction (CPU)"].append(entry["cpu_ms"])
            found["store: rows per transaction"].append(entry["rows"])
        elif entry.get("event") == "decision.timing":
            key = "requested -> validated, assigned, dispatch" if entry.get("status") == "requested" else "exited -> succeeded"
            found[f"decision publish ({key})"].append(entry["publish_ms"])
    return found


async def trace(jobs: int, command: str) -> dict[str, list[float]]:
    async with local_stack(agents=1, max_jobs=8, orchestrator_log=True) as stack:
        watch = LogWatch(stack.bus)
        await watch.start(output=True)
        try:
            warm = new_job_id()
            await stack.client.submit(warm, JobRequested(command=command))
            await watch.wait([warm])
            acks: list[float] = []
            ids = []
            cpu_before = stack.cpu_s()
            for _ in range(jobs):
                job_id = new_job_id()
                t0 = time.perf_counter()
                await stack.client.submit(job_id, JobRequested(command=command))
                acks.append((time.perf_counter() - t0) * 1000)
                await watch.wait([job_id])
                ids.append(job_id)
            cpu_after = stack.cpu_s()
            # The last output chunk may land after `succeeded` is seen: give the watcher a moment.
            await asyncio.sleep(0.2)
        finally:
            await watch.stop()
        gaps: dict[str, list[float]] = {"client: publish -> ack (submit)": acks}
        for a, b in itertools.pairwise(STAGES):
            gaps[f"{a} -> {b}"] = [g for j in ids if (g := watch.jobs[j].gap_ms(a, b)) is not None]
        for a, b in TOTALS:
            gaps[f"TOTAL {a} -> {b}"] = [g for j in ids if (g := watch.jobs[j].gap_ms(a, b)) is not None]
        gaps.update(orchestrator_timings(stack.orchestrator_log))
        # CPU per job, by process: less sensitive to a busy machine than any wall time.
        for name, after in cpu_after.items():
            role = "agent" if name in stack.nodes else name
            gaps[f"CPU per job: {role} (ms, one value)"] = [(after - cpu_before.get(name, 0.0)) * 1000 / jobs]
        return gaps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--command", default="echo hi")
    ap.add_argument("--json", action="store_true", help="print one JSON object (bench convention)")
    a = ap.parse_args()
    gaps = asyncio.run(trace(a.jobs, a.command))
    figures = []
    for what, values in gaps.items():
        if values:
            figures.append({"what": f"{what} p50", "value": round(med(values), 3), "unit": "ms", "target": None,
                            "peer": None, "peer_value": None, "ratio": None})  # fmt: skip
            figures.append({"what": f"{what} p99", "value": round(pct(values, 99), 3), "unit": "ms", "target": None,
                            "peer": None, "peer_value": None, "ratio": None})  # fmt: skip
    if a.json:
        print(json.dumps({"bench": "trace", "figures": figures}))
        return
    print(f"machine: {machine()}; {a.jobs} jobs `{a.command}` one at a time, 1 agent; server timestamps")
    print(f"{'stage':<66} {'n':>4} {'p50 ms':>8} {'p99 ms':>8}")
    for what, values in gaps.items():
        if values:
            print(f"{what:<66} {len(values):>4} {med(values):8.2f} {pct(values, 99):8.2f}")
        else:
            print(f"{what:<66} {0:>4} {'-':>8} {'-':>8}")


if __name__ == "__main__":
    main()
