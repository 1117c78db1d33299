"""`nexus metrics`: per-phase metrics from the event log, as tables or the API's JSON."""

import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import typer

from orchestrator.cli.common import DEFAULT_NATS, CredsOpt, JsonOpt, NatsOpt, connect, fail, fmt, out, parse_duration, run_async


def metrics(
    by: Annotated[Literal["tool", "node", "user"] | None, typer.Option("--by", help="Break execution down by tool, node or user.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only what happened since: an ISO time or an age like 30m, 2h, 7d.")] = None,
    as_json: JsonOpt = False,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """Per-phase metrics (analysis, coordination, execution, test, deploy) and job step latencies.

    `--json` prints exactly what GET /api/v1/metrics/pipeline serves (its camelCase names). The same
    numbers are DuckDB views (`nexus sql "SELECT * FROM metrics_step_latency"`).
    """
    _metrics(by, parse_since(since) if since else None, as_json, nats_url)


def parse_since(value: str) -> datetime:
    if value[-1:] in "smhd" and value[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(seconds=parse_duration(value, "--since"))
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--since takes an ISO time or an age like 30m, 2h, 7d; got {value!r}", 2)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@run_async
async def _metrics(by: str | None, since: datetime | None, as_json: bool, nats_url: str) -> None:
    import msgspec
    from rich.table import Table
    from rich.text import Text

    from orchestrator.app.metrics import pipeline_metrics

    async with connect(nats_url) as client:
        m = await pipeline_metrics(client, since)
    if as_json:  # the API's response model, encoded as the API encodes it
        sys.stdout.write(msgspec.json.encode(m).decode() + "\n")
        return
    data: dict[str, Any] = msgspec.to_builtins(m)
    for phase in ("analysis", "coordination", "execution", "test", "deploy"):
        values = data[phase]
        table = Table(title=phase.capitalize(), title_justify="left", box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        for key, value in values.items():
            if isinstance(value, list):
                continue
            table.add_row(key, _fmt(key, value))
        out.print(table)
        for key, value in values.items():
            if isinstance(value, list) and value and key not in ("byTool", "byNode", "byUser"):
                out.print(f"  {key}: " + ", ".join(f"{v['type']} ({v['count']})" for v in value), highlight=False)
    if by is not None:
        groups = data["execution"]["by" + by.capitalize()]
        table = Table(title=f"Execution by {by}", title_justify="left", box=None, header_style="bold")
        for col in (by, "jobs", "succeeded", "failed", "timed out", "avg ms"):
            table.add_column(col, justify="left" if col == by else "right")
        for g in groups:
            counts = (g["totalJobs"], g["successfulJobs"], g["failedJobs"], g["timedOutJobs"])
            table.add_row(Text(fmt(g["name"])), *(str(c) for c in counts), f"{g['avgDuration']:.0f}")  # a user or tool as requested
        out.print(table)
    steps = Table(title="Job step latency (ms)", title_justify="left", box=None, header_style="bold")
    for col in ("step", "jobs", "mean", "p50", "p95", "p99"):
        steps.add_column(col, justify="left" if col == "step" else "right")
    for s in data["latency"]:
        steps.add_row(s["step"], str(s["count"]), *(f"{s[k]:.1f}" for k in ("mean", "p50", "p95", "p99")))
    out.print(steps)


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, float):
        if "rate" in key.lower():
            return f"{value:.1%}"
        return f"{value:.1f}"
    return str(value)
