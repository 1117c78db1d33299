"""Every benchmark, one table (issue 13; `make bench`).

Runs each script of SCRIPTS that exists with `--json` (the convention of every bench/ script: one JSON object
`{"bench", "figures": [{"what", "value", "unit", "target", "peer", "peer_value", "ratio"}]}`),
one after the other so they do not share the CPU, and prints one table: what, value, unit,
target, peer, ratio, and PASS/FAIL where a target is set. A script that is not there is
named as missing; one that fails or prints no JSON is named with its exit status and the end of
its stderr, and the others still run. Exit status 1 when a figure misses its target or a
script failed, else 0.

    .venv/bin/python bench/all.py [--only fleet,ansible_peer] [--json] [--timeout 300]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (script, extra arguments). A script not there is named as missing, not an error.
SCRIPTS: list[tuple[str, list[str]]] = [
    ("run_latency.py", []),
    ("analysis.py", ["--rounds", "1"]),
    ("trust_cost.py", []),
    ("fleet.py", []),
    ("ansible_peer.py", []),
    ("replay.py", []),
    ("output_throughput.py", []),
    ("cli_startup.py", []),
    ("cluster_failover.py", []),
    ("trace.py", []),
]


def verdict(value: float | None, target: str | None) -> str:
    """PASS/FAIL against a target written as `< X`, `<= X`, `> X` or `>= X` (else nothing)."""
    if value is None or not target:
        return ""
    m = re.fullmatch(r"\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*\S*\s*", target)
    if m is None:
        return ""
    op, bound = m.group(1), float(m.group(2))
    ok = {"<": value < bound, "<=": value <= bound, ">": value > bound, ">=": value >= bound}[op]
    return "PASS" if ok else "FAIL"


def run_one(script: str, args: list[str], timeout_s: float) -> dict[str, object]:
    path = HERE / script
    name = script.removesuffix(".py")
    if not path.exists():
        return {"bench": name, "missing": True, "figures": []}
    t0 = time.monotonic()
    try:
        done = subprocess.run([sys.executable, str(path), "--json", *args], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"bench": name, "error": f"did not finish in {timeout_s:g} s", "figures": []}
    took = time.monotonic() - t0
    try:
        # One JSON object on stdout; anything before it (a stray print) is not ours to parse.
        last = [line for line in done.stdout.splitlines() if line.startswith("{")][-1]
        report = json.loads(last)
    except (IndexError, json.JSONDecodeError):
        tail = done.stderr.strip().splitlines()[-3:]
        return {"bench": name, "error": f"exit {done.returncode}, no JSON: {' | '.join(tail)}", "figures": [], "seconds": took}
    if done.returncode != 0:
        report["error"] = f"exit {done.returncode}"
    report["seconds"] = took
    return report


def cross_ratios(reports: list[dict[str, object]]) -> list[dict[str, object]]:
    """Ratios between benches measured in the same run: the fleet's 1,000-node fan-out against
    Ansible over 1,000 local hosts (measured or extrapolated, as ansible_peer labels it)."""
    figs = [f for r in reports for f in r.get("figures", []) if isinstance(f, dict)]  # type: ignore[attr-defined]
    fanout = next((f for f in figs if str(f["what"]).startswith("fleet 1000: fan-out") and "exited" in str(f["what"])), None)
    ansible = next((f for f in figs if str(f["what"]).startswith("ansible ad-hoc") and "1000 local hosts" in str(f["what"])), None)
    if fanout is None or ansible is None or not ansible["value"]:
        return []
    return [{
        "what": "fleet 1000: fan-out `echo hi` vs ansible on 1000 local hosts",
        "value": fanout["value"], "unit": "s", "target": None,
        "peer": str(ansible["what"]).removeprefix("ansible ad-hoc `echo hi`, "), "peer_value": ansible["value"],
        "ratio": round(float(fanout["value"]) / float(ansible["value"]), 4),  # type: ignore[arg-type]
    }]  # fmt: skip


def table(reports: list[dict[str, object]]) -> tuple[list[str], bool]:
    rows = [("bench", "what", "value", "unit", "target", "peer", "ratio", "")]
    failed = False
    for r in reports:
        for f in r.get("figures", []):  # type: ignore[attr-defined]
            value = f.get("value")
            v = verdict(value, f.get("target"))
            failed |= v == "FAIL"
            ratio = f.get("ratio")
            peer = f.get("peer") or ""
            if peer and f.get("peer_value") is not None:
                peer = f"{peer} ({f['peer_value']:g})"
            rows.append((
                str(r["bench"]), str(f.get("what")), "-" if value is None else f"{value:.4g}", str(f.get("unit") or ""),
                str(f.get("target") or ""), peer, "" if ratio is None else f"x{ratio:.3g}", v,
            ))  # fmt: skip
    widths = [min(max(len(row[i]) for row in rows), 70) for i in range(len(rows[0]))]
    lines = ["  ".join(cell[:70].ljust(w) if i != 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in reports:
        if r.get("missing"):
            lines.append(f"missing: bench/{r['bench']}.py (not in this tree yet)")
        elif r.get("error"):
            failed = True
            lines.append(f"failed: bench/{r['bench']}.py: {r['error']}")
        for note in r.get("notes", []) or []:  # type: ignore[attr-defined]
            lines.append(f"note: {r['bench']}: {note}")
    return lines, failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", type=lambda s: set(s.split(",")), help="these benches only (names without .py)")
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds per script before it is stopped")
    ap.add_argument("--json", action="store_true", help="print every report as one JSON object instead of the table")
    a = ap.parse_args()
    reports = []
    for script, args in SCRIPTS:
        if a.only and script.removesuffix(".py") not in a.only:
            continue
        # The previous script's files (stores of hundreds of MB) are written back to disk
        # first, so that writeback does not share the CPU and the disk with the next one.
        os.sync()
        print(f"running bench/{script} ...", file=sys.stderr, flush=True)
        reports.append(run_one(script, args, a.timeout))
    extra = cross_ratios(reports)
    if extra:
        reports.append({"bench": "all", "figures": extra})
    lines, failed = table(reports)
    if a.json:
        print(json.dumps({"bench": "all", "reports": reports}))
    else:
        print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
