"""`nexus`: the single entry point. Verbs live in one module per group (run.py, jobs.py, state.py, daemons.py, ...)."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

from orchestrator.cli import audit, creds, daemons, jobs, metrics, pipelines, review, run, state
from orchestrator.cli.common import CliError, err


class VerbGroups(TyperGroup):
    """`nexus --help` in plain text, the verbs grouped as their `rich_help_panel` says. Rich's
    help renderer (markdown, panels) costs more than the rest of the start-up together, and
    the verb list is what people and scripts run most (issue 13: `nexus --help` <= 120 ms).
    Each verb's own help (`nexus run --help`) still comes from typer's rich renderer."""

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        self.format_usage(ctx, formatter)
        self.format_help_text(ctx, formatter)
        self.format_options(ctx, formatter)
        self.format_epilog(ctx, formatter)

    def format_commands(self, ctx: typer.Context, formatter: Any) -> None:
        groups: dict[str, list[tuple[str, str]]] = {}
        shown = [(name, cmd) for name in self.list_commands(ctx) if (cmd := self.get_command(ctx, name)) and not cmd.hidden]
        limit = formatter.width - 6 - max(len(name) for name, _ in shown)
        for name, cmd in shown:
            panel = getattr(cmd, "rich_help_panel", None) or "Commands"
            groups.setdefault(panel, []).append((name, cmd.get_short_help_str(limit)))
        for panel, rows in groups.items():
            with formatter.section(panel):
                formatter.write_dl(rows)


app = typer.Typer(
    name="nexus",
    cls=VerbGroups,
    help="Run shell commands across a fleet of machines, with a record you can trust.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command(rich_help_panel="Services")(daemons.up)
app.command(rich_help_panel="Services")(daemons.orchestrator)
app.command(rich_help_panel="Services")(daemons.agent)
app.command(rich_help_panel="Services")(daemons.api)
app.command(rich_help_panel="Jobs")(run.run)
app.command(rich_help_panel="Jobs")(run.submit)
app.command(rich_help_panel="Jobs")(jobs.jobs)
app.command(rich_help_panel="Jobs")(jobs.show)
app.command(rich_help_panel="Jobs")(jobs.logs)
app.command(rich_help_panel="Jobs")(jobs.history)
app.command(rich_help_panel="Jobs")(jobs.cancel)
app.command(rich_help_panel="Jobs")(jobs.test)
app.add_typer(pipelines.app, name="pipeline", rich_help_panel="Deploy")
app.command(rich_help_panel="Analysis")(review.validate)
app.command(rich_help_panel="Analysis")(review.approve)
app.command(rich_help_panel="Analysis")(review.deny)
app.command(rich_help_panel="State")(state.nodes)
app.command(rich_help_panel="State")(state.sql)
app.command(rich_help_panel="State")(state.replay)
app.command(rich_help_panel="State")(state.schema)
app.command(rich_help_panel="State")(metrics.metrics)
app.add_typer(creds.app, name="creds", rich_help_panel="Trust")
app.add_typer(audit.app, name="audit", rich_help_panel="Trust")


def main() -> None:
    """Entry point: Nexus errors become one line on stderr and an exit code, never a traceback."""
    try:
        app()
    except CliError as exc:
        err.print(f"nexus: error: {exc}", markup=False, highlight=False)
        sys.exit(exc.code)
    except Exception as exc:
        from schemas.errors import NexusError  # imported only now: `nexus --help` does without the schemas

        if not isinstance(exc, NexusError):
            raise
        err.print(f"nexus: error: {exc}", markup=False, highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
