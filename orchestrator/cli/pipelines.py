"""Pipeline verbs: nexus pipeline run FILE, show ID, list."""

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli.common import (
    DEFAULT_NATS,
    CredsOpt,
    DbOpt,
    JsonOpt,
    NatsOpt,
    connect,
    default_user,
    err,
    fail,
    fmt,
    out,
    parse_pairs,
    print_json,
    print_table,
    query,
    run_async,
)

if TYPE_CHECKING:  # imported where used, so that `nexus --help` stays fast
    from rich.table import Table

    from orchestrator.app import pipelines as pipelines_app
    from orchestrator.client import NexusClient
    from orchestrator.core.pipeline_views import PipelineView, StepJobState
    from schemas.records import Record

app = typer.Typer(
    help="Pipelines from YAML templates (deploy phase).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

STATUS_STYLE = {
    "succeeded": "green", "failed": "bold red", "rejected": "bold red", "running": "yellow", "skipped": "dim", "waiting_approval": "magenta"
}  # fmt: skip


@app.command("run")
def run(
    file: Annotated[Path, typer.Argument(help="Pipeline template (YAML).", show_default=False)],
    var: Annotated[list[str] | None, typer.Option("--var", help="Template variable KEY=VALUE; repeatable.")] = None,
    pipeline_id: Annotated[
        str | None,
        typer.Option(
            "--id",
            help="Pipeline id (idempotency key: the same request again follows that pipeline, a different one is refused); "
            "default: a new one.",
        ),
    ] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Submit and print the id; do not follow.")] = False,
    output: Annotated[bool, typer.Option("--output", "-o", help="Stream each step job's output, prefixed with step and node.")] = False,
    as_json: JsonOpt = False,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """Check a template, submit it, and follow it step by step. Exits 1 if the pipeline failed.

    The template is refused before anything runs when it has a syntax error,
    an unknown key, a missing field, an unknown step in `needs` or a cycle, or when a
    step could only fail (its command is not valid bash, or empty): exit 2, nothing stored.
    """
    from orchestrator.app import pipelines as pipelines_app
    from orchestrator.app.pipelines import RunPipeline
    from orchestrator.templates import TemplateError, load_template

    variables = parse_pairs(var, "--var")
    try:
        spec = load_template(file, variables)
    except TemplateError as exc:  # refused before anything is stored, as the help says
        fail(str(exc), 2)
    cmd = RunPipeline(spec=spec, variables=variables, pipeline_id=pipeline_id, requested_by=default_user(), source=str(file))
    ok = _run(pipelines_app.pipeline_id_of(cmd), cmd, detach, output, as_json, nats_url)
    raise typer.Exit(0 if ok else 1)


@run_async
async def _run(pid: str, cmd: "pipelines_app.RunPipeline", detach: bool, output: bool, as_json: bool, nats_url: str) -> bool:
    from orchestrator.app import pipelines as pipelines_app
    from orchestrator.app.refusals import refuse_unrunnable_steps

    refuse_unrunnable_steps(cmd.spec)  # as POST /api/v1/pipelines: a step that can only fail stores nothing
    async with connect(nats_url) as client:
        await pipelines_app.submit(client, pid, await pipelines_app.request_for(client, cmd))
        if detach:
            print_json({"pipeline_id": pid}) if as_json else print(pid)
            return True
        view = await _follow(client, pid, live=not as_json and sys.stdout.isatty(), lines=not as_json, output=output and not as_json)
    if as_json:
        print_json(_summary(view))
    return view.status == "succeeded"


async def _follow(client: "NexusClient", pid: str, *, live: bool, lines: bool, output: bool = False) -> "PipelineView":
    """Fold the pipeline's events as they come, showing a step list until it ends, and what a
    running step waits for (a job held for approval, with the command that answers it; a queued one)."""
    import asyncio

    from rich.live import Live
    from rich.markup import escape

    from orchestrator.app import pipelines as pipelines_app
    from orchestrator.app.narrate import narrate
    from orchestrator.core.pipeline_views import PIPELINE_TERMINAL, evolve_pipeline
    from orchestrator.errors import NexusError
    from schemas.pipelines import PipelineEvent

    view: PipelineView | None = None
    waits = _Waits()
    display = Live(console=out.get(), auto_refresh=False) if live else contextlib.nullcontext()
    tails: dict[str, asyncio.Task[None]] = {}
    try:
        async with contextlib.aclosing(pipelines_app.followed(client, pid)) as followed:
            with display as screen:
                async for rec in followed:
                    ts = (rec.event.ts if rec.event is not None else None) or rec.stream_ts
                    if isinstance(rec.event, PipelineEvent.__args__):
                        view = evolve_pipeline(view, pid, rec.event, ts, rec.seq) or view
                        if view is not None:
                            waits.planned(view)
                        if output:
                            role = _ROLES.get(type(rec.event).__name__, "")
                            for job in getattr(rec.event, "jobs", []):
                                if job.job_id not in tails:
                                    name = f"{getattr(rec.event, 'step', '?')}{role}"
                                    tails[job.job_id] = asyncio.create_task(_tail(client, job.job_id, name, job.node))
                        if lines and not isinstance(screen, Live) and view is not None:
                            err.print(f"{fmt(ts)}  {escape(fmt(narrate(rec).message, one_line=True))}", highlight=False)
                    elif not waits.learn(rec):
                        continue
                    if view is None:
                        continue
                    if isinstance(screen, Live):
                        screen.update(_table(waits.shown(view)), refresh=True)
                    elif lines:
                        for step, note in waits.news():
                            err.print(f"{fmt(ts)}  step {escape(fmt(step))}: {escape(fmt(note, one_line=True))}", highlight=False)
                    if view.status in PIPELINE_TERMINAL:
                        break
        if tails:  # let the last step's output finish printing
            await asyncio.wait(tails.values(), timeout=10)
    finally:
        for task in tails.values():
            task.cancel()
    assert view is not None
    try:  # as `nexus pipeline show` has it once the orchestrator stored the end
        view = await pipelines_app.pipeline_view(client.query, pid) or waits.shown(view)
    except NexusError:  # no orchestrator to ask any more: as folded here
        view = waits.shown(view)
    if lines:
        style = STATUS_STYLE.get(view.status, "")
        reason = f": {escape(fmt(view.reason, one_line=True))}" if view.reason else ""
        out.print(f"pipeline {pid} [{style}]{view.status}[/{style}]{reason}", highlight=False)
    return view


class _Waits:
    """What the step jobs wait for, as `nexus pipeline run` learns it from their records
    (app.pipelines.followed): each job's last state, and the waits not printed yet."""

    def __init__(self) -> None:
        self.states: dict[str, StepJobState] = {}
        self.requested: set[str] = set()  # step jobs seen requested (a planned job may never be)
        self._step_of: dict[str, str] = {}  # job id -> its step, once the view plans it
        self._untold: set[str] = set()
        self._noted: set[str] = set()  # jobs whose state is a wait (core.pipeline_views.waiting_note)

    def planned(self, view: "PipelineView") -> None:
        self._step_of = {j.job_id: s.step_id for s in view.steps for j in (*s.jobs, *s.health_checks, *s.rollbacks)}

    def shown(self, view: "PipelineView") -> "PipelineView":
        """The view as `nexus pipeline show` has it, from what the records said so far: the step
        jobs requested (a job with a wait was requested too), where they ran, what they wait for."""
        from orchestrator.core.pipeline_views import requested_only, shown

        return shown(requested_only(view, self.requested | self.states.keys()), self.states)

    def learn(self, rec: "Record") -> bool:
        """Take a job's record; whether what the views show changed (a job requested, a wait began or ended)."""
        from orchestrator.core.pipeline_views import StepJobState, waiting_note
        from schemas import subjects
        from schemas.events import JobApprovalRequired, JobAssigned, JobQueued, JobRequested

        ev = rec.event
        if isinstance(ev, JobRequested):
            job_id = subjects.parse(rec.subject).id
            new = job_id not in self.requested
            self.requested.add(job_id)
            return new
        if not isinstance(ev, JobApprovalRequired | JobQueued | JobAssigned):
            return False
        ref = subjects.parse(rec.subject)
        self.states[ref.id] = StepJobState(status=ref.kind, reason=ev.reason or None, node=ev.node if isinstance(ev, JobAssigned) else None)
        was = ref.id in self._noted
        if waiting_note(ref.id, self.states[ref.id]) is None:
            self._noted.discard(ref.id)
            return was
        self._noted.add(ref.id)
        self._untold.add(ref.id)
        return True

    def news(self) -> list[tuple[str, str]]:
        """(step, wait) of the waits not printed yet whose job the view plans; printed once each."""
        from orchestrator.core.pipeline_views import waiting_note

        found = []
        for job_id in sorted(j for j in self._untold if j in self._step_of):
            self._untold.discard(job_id)
            note = waiting_note(job_id, self.states[job_id])
            if note is not None:
                found.append((self._step_of[job_id], note))
        return found


_ROLES = {"PipelineHealthCheckStarted": " health check", "PipelineStepRollbackStarted": " rollback"}
"""How `nexus pipeline run -o` names a step's jobs that are not its run jobs."""


async def _tail(client: "NexusClient", job_id: str, name: str, node: str | None) -> None:
    """Print one step job's output as it comes, line by line, prefixed with the step (and what the
    job is to it) and the node: one named by the step, else the one it was assigned to."""
    from schemas.events import JobAssigned
    from schemas.text import text_view

    pending = ""
    async for item in client.follow(job_id):
        if item.record is not None and isinstance(item.record.event, JobAssigned):
            node = item.record.event.node
        if item.output is None:
            continue
        pending += text_view(item.output)
        *complete, pending = pending.split("\n")
        for line in complete:
            out.print(f"{name}@{node or 'any'} | {line}", highlight=False, markup=False)
    if pending:
        out.print(f"{name}@{node or 'any'} | {pending}", highlight=False, markup=False)


def _table(view: "PipelineView") -> "Table":
    from orchestrator.cli.tables import fit_table

    rows = [  # (fmt: text from the log, control characters shown as escapes)
        [fmt(s.step_id), s.status, str(s.batch) if s.batch >= 0 else "", fmt(", ".join(s.nodes)), str(len(s.jobs)), fmt(s.reason or "")]
        for s in view.steps
    ]
    title = fmt(f"{view.name} ({view.pipeline_id}): {view.status}", one_line=True)
    columns = ["step", "status", "batch", "nodes", "jobs", "reason"]
    return fit_table(columns, rows, out.width, title=title, drop=("batch", "nodes"), styles={"status": STATUS_STYLE})


def _summary(view: "PipelineView") -> dict[str, Any]:
    return {
        "pipeline_id": view.pipeline_id,
        "name": view.name,
        "status": view.status,
        "reason": view.reason,
        "steps": [
            {"step": s.step_id, "status": s.status, "reason": s.reason, "jobs": [j.job_id for j in s.jobs], "rollback": s.rollback_status}
            for s in view.steps
        ],
    }


@app.command("show")
def show(
    pipeline_id: Annotated[str, typer.Argument(help="Pipeline id.", show_default=False)],
    as_json: JsonOpt = False,
    db: DbOpt = None,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """A pipeline's state and its steps."""
    _show(pipeline_id, as_json, db, nats_url)


@run_async
async def _show(pipeline_id: str, as_json: bool, db: Path | None, nats_url: str) -> None:
    import msgspec
    from rich.markup import escape

    from orchestrator.app import pipelines as pipelines_app
    from orchestrator.client import Rows
    from schemas import subjects

    subjects.check_id(pipeline_id, "pipeline id")  # no pipeline could have it: a usage error, before any connection
    if db is not None:
        view = await pipelines_app.pipeline_view(lambda sql, params: query(nats_url, db, sql, params), pipeline_id)
    else:
        async with connect(nats_url) as client:
            view = await pipelines_app.pipeline_view(client.query, pipeline_id)
    if view is None:
        fail(f"no pipeline {pipeline_id!r}")
    whole = msgspec.to_builtins(view)
    head = {k: whole[k] for k in ("pipeline_id", "name", "status", "reason", "requested_by", "source", "requested_at", "finished_at")}
    columns = ("step_id", "status", "batch", "nodes", "jobs", "reason", "rollback_status", "started_at", "finished_at")
    steps = [{k: s.get(k) for k in columns} | {"batch": s["batch"] if s["batch"] >= 0 else None} for s in whole["steps"]]
    if as_json:
        print_json({**head, "steps": steps})
        return
    for key, value in head.items():
        if value is not None:
            out.print(f"[bold]{key:<13}[/bold] {escape(fmt(value, one_line=True))}", highlight=False)
    shown = [{**s, "nodes": ", ".join(s["nodes"]), "jobs": ", ".join(j["job_id"] for j in s["jobs"])} for s in steps]
    print_table(
        Rows(list(columns), [list(s.values()) for s in shown]), drop=("rollback_status", "finished_at", "started_at", "batch", "nodes")
    )


@app.command("list")
def list_(
    limit: Annotated[int, typer.Option("--limit", help="At most this many, newest first.", min=1)] = 20,
    as_json: JsonOpt = False,
    db: DbOpt = None,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """Pipelines, newest first."""
    _list(limit, as_json, db, nats_url)


@run_async
async def _list(limit: int, as_json: bool, db: Path | None, nats_url: str) -> None:
    sql = "SELECT pipeline_id, name, status, requested_at, finished_at, reason FROM pipelines ORDER BY first_seq DESC LIMIT ?"
    rows = await query(nats_url, db, sql, [limit])
    if as_json:
        print_json(rows.dicts())
    elif not rows.rows:
        err.print("no pipelines yet", highlight=False)
    else:
        print_table(rows, drop=("finished_at", "requested_at"))
