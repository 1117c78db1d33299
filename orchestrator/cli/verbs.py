"""The verbs of `nexus` as one click group, built by typer from one module per group of verbs
(run.py, jobs.py, state.py, daemons.py, ...); `main` runs it."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup


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


# (help panel, module of orchestrator.cli, function): a verb's own run imports its module alone.
VERBS = (
    ("Services", "daemons", "up"),
    ("Services", "daemons", "orchestrator"),
    ("Services", "daemons", "agent"),
    ("Services", "daemons", "api"),
    ("Jobs", "run", "run"),
    ("Jobs", "run", "submit"),
    ("Jobs", "jobs", "jobs"),
    ("Jobs", "jobs", "show"),
    ("Jobs", "jobs", "logs"),
    ("Jobs", "jobs", "history"),
    ("Jobs", "jobs", "cancel"),
    ("Jobs", "jobs", "test"),
    ("Jobs", "jobs", "rollback"),
    ("Analysis", "review", "validate"),
    ("Analysis", "review", "approve"),
    ("Analysis", "review", "deny"),
    ("State", "state", "nodes"),
    ("State", "state", "sql"),
    ("State", "state", "replay"),
    ("State", "state", "schema"),
    ("State", "metrics", "metrics"),
)
# (help panel, module of orchestrator.cli, verb): groups of verbs, each module's `app`.
GROUPS = (
    ("Deploy", "pipelines", "pipeline"),
    ("Trust", "creds", "creds"),
    ("Trust", "audit", "audit"),
)


def command(args: Sequence[str]) -> TyperGroup:
    """`nexus` as a click group, given its arguments. Typer turns every verb it is given into a
    click command on each start (~10 ms for all of them, and their modules take as long to
    import), so a verb's own run (`nexus run ...`) gets that verb alone; the verb list, a
    group's help and an unknown verb get them all."""
    names = {typer.main.get_command_name(fn) for _, _, fn in VERBS} | {verb for _, _, verb in GROUPS}
    wanted = args[0] if args and args[0] in names else None
    app = typer.Typer(
        name="nexus",
        cls=VerbGroups,
        help="Run shell commands across a fleet of machines, with a record you can trust.",
        no_args_is_help=True,
        rich_markup_mode="markdown",
        pretty_exceptions_enable=False,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    for panel, module, fn in VERBS:
        if wanted in (None, typer.main.get_command_name(fn)):
            app.command(rich_help_panel=panel)(getattr(_verbs(module), fn))
    for panel, module, verb in GROUPS:
        if wanted in (None, verb):
            app.add_typer(_verbs(module).app, name=verb, rich_help_panel=panel)
    return typer.main.get_group(app)  # a group even with one verb in it, as `app()` makes of all of them


def _verbs(module: str) -> Any:
    return importlib.import_module(f"orchestrator.cli.{module}")
