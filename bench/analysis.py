"""Risk analysis benchmark: recall, false alarms and speed by domain, on the labelled corpus.

    .venv/bin/python bench/analysis.py [--rounds N] [--json] [--tldr DIR]

For each part of the corpus (tuned, held-out) and each domain it prints the number of commands,
the recall on destructive commands (labelled `critical`) at the holding severity, the false
alarms (other commands rated `critical`), the share rated exactly as labelled, and commands
per second; then the median and p99 milliseconds per command over the whole corpus.

`--tldr DIR` also reads the example commands of a tldr-pages checkout (pages/common and
pages/linux; placeholders such as `{{path/to/file}}` are filled with a plain word) and prints
how many the analysis would hold, and for which programs: documentation examples are mostly
benign commands that look dangerous, so this is a look at false alarms on text nobody labelled.
The pages are read at run time and never stored in this repository.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.core.analysis import analyze
from tests.unit.analysis_corpus import HELDOUT, TUNED, Case

_HOLDS = "critical"


def _timed(cases: list[Case], rounds: int) -> dict[Case, tuple[str | None, float]]:
    out: dict[Case, tuple[str | None, float]] = {}
    for case in cases:
        best = float("inf")
        severity = None
        for _ in range(rounds):
            start = time.perf_counter()
            severity = analyze(case.command, case.tool).severity
            best = min(best, time.perf_counter() - start)
        out[case] = (severity, best)
    return out


def _row(name: str, cases: list[Case], results: dict[Case, tuple[str | None, float]]) -> dict[str, object]:
    destructive = [c for c in cases if c.expected == _HOLDS]
    others = [c for c in cases if c.expected != _HOLDS]
    held = sum(results[c][0] == _HOLDS for c in destructive)
    alarms = sum(results[c][0] == _HOLDS for c in others)
    seconds = sum(results[c][1] for c in cases)
    return {
        "domain": name,
        "commands": len(cases),
        "destructive": len(destructive),
        "recall": held / len(destructive) if destructive else None,
        "false_alarms": alarms / len(others) if others else None,
        "exact": sum(results[c][0] == c.expected for c in cases) / len(cases),
        "commands_per_s": len(cases) / seconds if seconds else None,
    }


def _fmt(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print_table(part: str, rows: list[dict[str, object]]) -> None:
    print(f"\n{part}")
    print(f"  {'domain':<12} {'commands':>8} {'destr.':>7} {'recall':>7} {'f.alarm':>8} {'exact':>6} {'cmd/s':>8}")
    for r in rows:
        print(
            f"  {r['domain']!s:<12} {r['commands']!s:>8} {r['destructive']!s:>7} {_fmt(r['recall'], '.3f'):>7} "
            f"{_fmt(r['false_alarms'], '.3f'):>8} {_fmt(r['exact'], '.3f'):>6} {_fmt(r['commands_per_s'], ',.0f'):>8}"
        )


_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")


def _fill(example: str) -> str:
    """`{{[-f|--force]}}` -> `-f`, `{{path/to/file}}` -> `file`, `{{name}}` -> `name`."""

    def one(m: re.Match[str]) -> str:
        inner = m.group(1)
        if inner.startswith("[") and inner.endswith("]"):
            return inner[1:-1].split("|")[0]
        inner = inner.replace("path/to/", "").replace(" ...", "").replace("...", "")
        return inner.split()[0] if inner.split() else "x"

    return _PLACEHOLDER.sub(one, example)


def _tldr(root: Path) -> dict[str, object]:
    examples = [
        _fill(m.group(1))
        for page in sorted([*root.glob("pages/common/*.md"), *root.glob("pages/linux/*.md")])
        for m in re.finditer(r"^`(.+)`\s*$", page.read_text(encoding="utf-8", errors="replace"), re.M)
    ]
    held = [e for e in examples if analyze(e).severity == _HOLDS]
    programs = Counter(e.split()[0] for e in held if e.split())
    return {"examples": len(examples), "held": len(held), "share": len(held) / max(1, len(examples)), "top": programs.most_common(25)}


def _figures(report: dict[str, object]) -> list[dict[str, object]]:
    def fig(what: str, value: object, unit: str) -> dict[str, object]:
        v = round(float(value), 4) if isinstance(value, int | float) else None
        return {"what": what, "value": v, "unit": unit, "target": None, "peer": None, "peer_value": None, "ratio": None}

    out = []
    for part in ("tuned", "heldout"):
        rows = report[part]
        assert isinstance(rows, list)
        everything = rows[-1]  # the ALL row
        out.append(fig(f"analysis {part}: recall on destructive commands", everything["recall"], "share"))
        out.append(fig(f"analysis {part}: false alarms", everything["false_alarms"], "share"))
    latency = report["latency"]
    assert isinstance(latency, dict)
    out.append(fig("analysis: median per command", latency["median_ms"], "ms"))
    out.append(fig("analysis: p99 per command", latency["p99_ms"], "ms"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="time each command this many times, keep the best")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--tldr", type=Path, help="a tldr-pages checkout to scan for commands the analysis would hold")
    args = parser.parse_args()
    report: dict[str, object] = {}
    all_times: list[float] = []
    for part, cases in (("tuned", TUNED), ("heldout", HELDOUT)):
        results = _timed(cases, args.rounds)
        all_times.extend(t for _, t in results.values())
        domains = sorted({c.domain for c in cases})
        rows = [_row(d, [c for c in cases if c.domain == d], results) for d in domains] + [_row("ALL", cases, results)]
        report[part] = rows
        if not args.json:
            _print_table(part, rows)
    all_times.sort()
    latency = {
        "median_ms": statistics.median(all_times) * 1000,
        "p99_ms": all_times[int(len(all_times) * 0.99)] * 1000,
        "max_ms": all_times[-1] * 1000,
    }
    report["latency"] = latency
    if args.tldr:
        report["tldr"] = _tldr(args.tldr)
    if args.json:  # the convention of bench/all.py: "figures", plus the whole report
        print(json.dumps({"bench": "analysis", "figures": _figures(report), "report": report}))
        return
    print(f"\nlatency per command: median {latency['median_ms']:.3f} ms, p99 {latency['p99_ms']:.3f} ms, max {latency['max_ms']:.3f} ms")
    if args.tldr:
        t = report["tldr"]
        assert isinstance(t, dict)
        print(f"\ntldr-pages examples: {t['examples']}, held as critical: {t['held']} ({t['share']:.2%}); by program: {t['top']}")


if __name__ == "__main__":
    main()
