"""`nexus`: the single entry point. Verbs live in jobs.py, state.py and daemons.py."""

from __future__ import annotations

import typer

from orchestrator.cli import daemons, jobs, review, state

app = typer.Typer(
    name="nexus",
    help="Run shell commands across a fleet of machines, with a record you can trust.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command(rich_help_panel="Services")(daemons.up)
app.command(rich_help_panel="Services")(daemons.orchestrator)
app.command(rich_help_panel="Services")(daemons.agent)
app.command(rich_help_panel="Jobs")(jobs.run)
app.command(rich_help_panel="Jobs")(jobs.submit)
app.command(rich_help_panel="Jobs")(jobs.jobs)
app.command(rich_help_panel="Jobs")(jobs.show)
app.command(rich_help_panel="Jobs")(jobs.logs)
app.command(rich_help_panel="Jobs")(jobs.history)
app.command(rich_help_panel="Jobs")(jobs.cancel)
app.command(rich_help_panel="Analysis")(review.validate)
app.command(rich_help_panel="Analysis")(review.approve)
app.command(rich_help_panel="Analysis")(review.deny)
app.command(rich_help_panel="State")(state.nodes)
app.command(rich_help_panel="State")(state.sql)
app.command(rich_help_panel="State")(state.replay)
app.command(rich_help_panel="State")(state.schema)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
