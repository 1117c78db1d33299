"""Job verbs: run, submit, jobs, show, logs, history, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from orchestrator.cli.common import (
    DEFAULT_NATS,
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
from orchestrator.client import JOB_COLUMNS, Rows, new_job_id
from orchestrator.config import load_tests
from orchestrator.core.text import text_view
from orchestrator.core.views import Record
from schemas import subjects
from schemas.codec import event_type
from schemas.events import (
    ExitCodeTest,
    FileExistsTest,
    JobAssigned,
    JobCancelled,
    JobExited,
    JobFailed,
    JobLost,
    JobQueued,
    JobRejected,
    JobRequested,
    JobStarted,
    JobSucceeded,
    JobTest,
    JobTimedOut,
    OutputContainsTest,
    ends_job,
)

# Exit codes of `nexus run` besides the command's own (documented in docs/cli.md).
EXIT_NEXUS = 125  # rejected, lost, or could not start
EXIT_TIMEOUT = 124
EXIT_CANCELLED = 130
EXIT_TESTS_FAILED = 1  # the command exited 0 but its tests failed

NodeOpt = Annotated[str | None, typer.Option("--node", "-n", help="Run on this node (default: the orchestrator picks one).")]
LabelOpt = Annotated[list[str] | None, typer.Option("--label", "-l", help="Node selector KEY=VALUE; repeatable.")]
PreferOpt = Annotated[list[str] | None, typer.Option("--prefer", help="Preferred node labels KEY=VALUE (e.g. region=eu); repeatable.")]
ToolOpt = Annotated[str, typer.Option("--tool", help="Tool the node must have; bash/sh/zsh also interpret the command.")]
CwdOpt = Annotated[str | None, typer.Option("--cwd", help="Working directory on the node.")]
EnvOpt = Annotated[list[str] | None, typer.Option("--env", "-e", help="Environment variable KEY=VALUE; repeatable.")]
TimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", help="Kill the command (and its children) after this many seconds.", min=0.001)
]
PriorityOpt = Annotated[int, typer.Option("--priority", help="Higher runs first when nodes are busy.")]
IdOpt = Annotated[str | None, typer.Option("--id", help="Job id (idempotency key); default: a new one.")]
MetaOpt = Annotated[list[str] | None, typer.Option("--meta", help="Metadata KEY=VALUE stored with the job; repeatable.")]
ParentOpt = Annotated[str | None, typer.Option("--parent", help="Link this job to a parent job.")]
AfterOpt = Annotated[list[str] | None, typer.Option("--after", help="Start only after this job succeeded; repeatable.")]
RetriesOpt = Annotated[int, typer.Option("--retries", help="Re-run on a lost node up to N times (needs --idempotent).", min=0, max=10)]
IdempotentOpt = Annotated[bool, typer.Option("--idempotent", help="Declare the command safe to run again.")]
TestsOpt = Annotated[Path | None, typer.Option("--tests", "--file", "-f", help="YAML/JSON list of tests (see docs).")]
ExpectExitOpt = Annotated[int | None, typer.Option("--expect-exit", help="Test: the exit code must be this.")]
ExpectOutputOpt = Annotated[list[str] | None, typer.Option("--expect-output", help="Test: this regex must match the output; repeatable.")]
ExpectFileOpt = Annotated[list[str] | None, typer.Option("--expect-file", help="Test: this path must exist on the node; repeatable.")]
CommandArg = Annotated[
    list[str],
    typer.Argument(help="The command, after `--`. One argument is a shell line; several are quoted as argv.", show_default=False),
]


def _request(command: list[str], opts: dict[str, Any]) -> JobRequested:
    """Build the `requested` event from the shared run/submit options."""
    if not command:
        fail("no command given: nexus run -- CMD ...", 2)
    line = command[0] if len(command) == 1 else shlex.join(command)
    if opts["node"] is not None:
        subjects.check_id(opts["node"], "node id")
    if opts["retries"] and not opts["idempotent"]:
        fail("--retries needs --idempotent: Nexus never re-runs a command that is not declared safe to repeat", 2)
    return JobRequested(
        command=line,
        tool=opts["tool"],
        node=opts["node"],
        labels=parse_pairs(opts["label"], "--label"),
        prefer=parse_pairs(opts["prefer"], "--prefer"),
        working_dir=opts["cwd"],
        env=parse_pairs(opts["env"], "--env"),
        timeout_s=opts["timeout"],
        priority=opts["priority"],
        metadata=dict(parse_pairs(opts["meta"], "--meta")),
        parent=opts["parent"],
        requested_by=default_user(),
        after=[subjects.check_id(a, "job id") for a in opts["after"] or []],
        retries=opts["retries"],
        idempotent=opts["idempotent"],
        tests=_tests(opts),
    )


def _tests(opts: dict[str, Any]) -> list[JobTest]:
    tests: list[JobTest] = load_tests(opts["tests"]) if opts["tests"] else []
    if opts["expect_exit"] is not None:
        tests.append(ExitCodeTest(expected=opts["expect_exit"]))
    tests += [OutputContainsTest(pattern=p) for p in opts["expect_output"] or []]
    tests += [FileExistsTest(path=p) for p in opts["expect_file"] or []]
    return tests


def run(
    command: CommandArg,
    node: NodeOpt = None,
    label: LabelOpt = None,
    prefer: PreferOpt = None,
    tool: ToolOpt = "bash",
    cwd: CwdOpt = None,
    env: EnvOpt = None,
    timeout: TimeoutOpt = None,
    priority: PriorityOpt = 0,
    job_id: IdOpt = None,
    meta: MetaOpt = None,
    parent: ParentOpt = None,
    after: AfterOpt = None,
    retries: RetriesOpt = 0,
    idempotent: IdempotentOpt = False,
    tests: TestsOpt = None,
    expect_exit: ExpectExitOpt = None,
    expect_output: ExpectOutputOpt = None,
    expect_file: ExpectFileOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No status lines on stderr.")] = False,
    as_json: JsonOpt = False,
    nats_url: NatsOpt = DEFAULT_NATS,
) -> None:
    """Submit a command, stream its output live, and exit with its exit code.

    Exit codes: the command's own; 1 if it exited 0 but its tests failed; 124 timed
    out; 130 cancelled; 128+N killed by signal N; 125 rejected, lost or could not start.
    """
    req = _request(command, locals())
    code = _run(req, job_id, quiet, as_json, nats_url)
    raise typer.Exit(code)


@run_async
async def _run(req: JobRequested, job_id: str | None, quiet: bool, as_json: bool, nats_url: str) -> int:
    job_id = subjects.check_id(job_id or new_job_id(), "job id")
    status = (lambda msg: None) if quiet or as_json else (lambda msg: err.print(f"[dim]nexus:[/dim] {msg}", highlight=False))
    async with connect(nats_url) as client:
        await client.submit(job_id, req)
        status(f"job {job_id} submitted")
        final: Record | None = None
        exited: JobExited | None = None
        output = bytearray()
        interrupted = 0

        def on_sigint() -> None:
            nonlocal interrupted
            interrupted += 1
            if interrupted == 1:
                status("cancelling (Ctrl-C again to stop following; the job goes on)")
                asyncio.get_running_loop().create_task(client.cancel(job_id, by=default_user(), reason="Ctrl-C in nexus run"))
            else:
                raise KeyboardInterrupt

        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            async for item in client.follow(job_id):
                if item.output is not None:
                    if as_json:
                        output.extend(item.output)
                    else:
                        sys.stdout.buffer.write(item.output)
                        sys.stdout.buffer.flush()
                    continue
                rec = item.record
                assert rec is not None
                ev = rec.event
                if isinstance(ev, JobAssigned):
                    status(f"assigned to node {ev.node} ({ev.reason})")
                elif isinstance(ev, JobQueued):
                    status(f"queued: {ev.reason}")
                elif isinstance(ev, JobStarted):
                    status(f"started on {ev.node}, pid {ev.pid}")
                elif isinstance(ev, JobExited):
                    exited = ev
                elif isinstance(ev, JobRejected | JobSucceeded | JobFailed | JobTimedOut | JobCancelled | JobLost):
                    final = rec
        finally:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signal.SIGINT)
    assert final is not None and final.event is not None
    code = _exit_code(final, exited)
    ev = final.event
    if not isinstance(ev, JobSucceeded):
        if isinstance(ev, JobTimedOut):
            reason = f"after {ev.timeout_s:g}s" if ev.timeout_s else "no timeout recorded"
        else:
            reason = getattr(ev, "reason", "")
        status(f"job {job_id} {event_type(ev).split('.', 1)[1]}: {reason}")
    if as_json:
        print_json(
            {
                "jobId": job_id,
                "status": event_type(ev).split(".", 1)[1],
                "exitCode": exited.exit_code if exited else None,
                "exit": code,
                "output": text_view(bytes(output)),
            }
        )
    return code


def _exit_code(final: Record, exited: JobExited | None) -> int:
    ev = final.event
    if isinstance(ev, JobSucceeded):
        return ev.exit_code
    if isinstance(ev, JobTimedOut):
        return EXIT_TIMEOUT
    if isinstance(ev, JobCancelled):
        return EXIT_CANCELLED
    if isinstance(ev, JobFailed) and exited is not None:
        if exited.exit_code is not None:
            # A command that exited 0 but failed its tests still fails the run.
            return exited.exit_code or EXIT_TESTS_FAILED
        if exited.signal:
            return 128 + exited.signal
    return EXIT_NEXUS


def submit(
    command: CommandArg,
    node: NodeOpt = None,
    label: LabelOpt = None,
    prefer: PreferOpt = None,
    tool: ToolOpt = "bash",
    cwd: CwdOpt = None,
    env: EnvOpt = None,
    timeout: TimeoutOpt = None,
    priority: PriorityOpt = 0,
    job_id: IdOpt = None,
    meta: MetaOpt = None,
    parent: ParentOpt = None,
    after: AfterOpt = None,
    retries: RetriesOpt = 0,
    idempotent: IdempotentOpt = False,
    tests: TestsOpt = None,
    expect_exit: ExpectExitOpt = None,
    expect_output: ExpectOutputOpt = None,
    expect_file: ExpectFileOpt = None,
    as_json: JsonOpt = False,
    nats_url: NatsOpt = DEFAULT_NATS,
) -> None:
    """Submit a command and print its job id, without waiting."""
    req = _request(command, locals())
    _submit(req, job_id, as_json, nats_url)


@run_async
async def _submit(req: JobRequested, job_id: str | None, as_json: bool, nats_url: str) -> None:
    job_id = subjects.check_id(job_id or new_job_id(), "job id")
    async with connect(nats_url) as client:
        seq = await client.submit(job_id, req)
    if as_json:
        print_json({"jobId": job_id, "seq": seq})
    else:
        print(job_id)


def jobs(
    status: Annotated[str | None, typer.Option("--status", help="Only jobs in this status.")] = None,
    node: Annotated[str | None, typer.Option("--node", help="Only jobs on this node.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, newest first.", min=1)] = 20,
    as_json: JsonOpt = False,
    db: DbOpt = None,
    nats_url: NatsOpt = DEFAULT_NATS,
) -> None:
    """List jobs, newest first."""
    _jobs(status, node, limit, as_json, db, nats_url)


@run_async
async def _jobs(status: str | None, node: str | None, limit: int, as_json: bool, db: Any, nats_url: str) -> None:
    where, params = [], []
    if status:
        where.append("status = ?")
        params.append(status)
    if node:
        where.append("node = ?")
        params.append(node)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    sql = (
        "SELECT job_id, status, node, exit_code, duration_ms, requested_at, command "
        f"FROM jobs {clause} ORDER BY first_seq DESC LIMIT {int(limit)}"
    )
    rows = await query(nats_url, db, sql, params)
    if as_json:
        print_json(rows.dicts())
    elif not rows.rows:
        err.print("no jobs yet", highlight=False)
    else:
        print_table(rows)


async def _job_row(nats_url: str, db: Any, job_id: str) -> dict[str, Any]:
    rows = await query(nats_url, db, f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ?", [job_id])
    if not rows.rows:
        fail(f"no job {job_id!r}")
    row = rows.dicts()[0]
    for key in ("labels", "metadata"):
        if isinstance(row.get(key), str):
            row[key] = msgspec.json.decode(row[key])
    return row


def show(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    as_json: JsonOpt = False,
    db: DbOpt = None,
    nats_url: NatsOpt = DEFAULT_NATS,
) -> None:
    """Show one job's state."""
    _show(job_id, as_json, db, nats_url)


@run_async
async def _show(job_id: str, as_json: bool, db: Any, nats_url: str) -> None:
    row = await _job_row(nats_url, db, job_id)
    if as_json:
        print_json(row)
        return
    width = max(len(k) for k in row)
    for key, value in row.items():
        if value in (None, {}, []):
            continue
        out.print(f"[bold]{key:<{width}}[/bold]  {fmt(value)}", highlight=False)


def logs(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="Write the raw PTY bytes (ANSI escapes and all).")] = False,
    as_json: JsonOpt = False,
    nats_url: NatsOpt = DEFAULT_NATS,
) -> None:
    """Print a job's output (text view: ANSI stripped, invalid UTF-8 replaced)."""
    _logs(job_id, follow, raw, as_json, nats_url)


@run_async
async def _logs(job_id: str, follow: bool, raw: bool, as_json: bool, nats_url: str) -> None:
    subjects.check_id(job_id, "job id")
    async with connect(nats_url) as client:
        if await client.bus.last_seq(subject=subjects.job_all(job_id)) == 0:
            fail(f"no job {job_id!r}")
        data = bytearray()
        if follow:
            stream = (i.output async for i in client.follow(job_id) if i.output is not None)
        else:
            stream = (c.data async for c in client.bus.output_chunks(job_id))
        async for chunk in stream:
            if as_json:
                data.extend(chunk)
            elif raw:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
            else:
                sys.stdout.write(text_view(chunk))
                sys.stdout.flush()
    if as_json:
        print_json({"jobId": job_id, "bytes": len(data), "text": text_view(bytes(data))})


def history(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    as_json: JsonOpt = False,
    nats_url: NatsOpt = DEFAULT_NATS,
) -> None:
    """A job's full event history from the log, for audits."""
    _history(job_id, as_json, nats_url)


@run_async
async def _history(job_id: str, as_json: bool, nats_url: str) -> None:
    subjects.check_id(job_id, "job id")
    async with connect(nats_url) as client:
        records = await client.history(job_id)
    if not records:
        fail(f"no job {job_id!r}")
    if as_json:
        print_json([_record_json(r) for r in records])
        return
    rows = Rows(["seq", "ts", "type", "details"], [])
    for r in records:
        ts = r.event.ts if r.event is not None and r.event.ts else r.stream_ts
        kind = event_type(r.event) if r.event is not None else "invalid"
        rows.rows.append([r.seq, ts, kind, r.error or _summary(r)])
    print_table(rows)


def _record_json(r: Record) -> dict[str, Any]:
    payload: Any
    try:
        payload = msgspec.json.decode(r.raw)
    except msgspec.DecodeError:
        payload = r.raw.decode("utf-8", errors="replace")
    return {"seq": r.seq, "subject": r.subject, "stream_ts": r.stream_ts, "payload": payload, "error": r.error}


def _summary(r: Record) -> str:
    if r.event is None:
        return ""
    data = msgspec.to_builtins(r.event)
    skip = {"type", "v", "ts", "env", "tests", "labels", "metadata", "argv", "candidates"}
    return ", ".join(f"{k}={v}" for k, v in data.items() if k not in skip and v not in (None, "", [], {}))


def cancel(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the record.")] = None,
    nats_url: NatsOpt = DEFAULT_NATS,
) -> None:
    """Cancel a job: drop it if queued, kill its process tree if running."""
    _cancel(job_id, reason, nats_url)


@run_async
async def _cancel(job_id: str, reason: str | None, nats_url: str) -> None:
    subjects.check_id(job_id, "job id")
    async with connect(nats_url) as client:
        if await client.bus.last_seq(subject=subjects.job_all(job_id)) == 0:
            fail(f"no job {job_id!r}")
        await client.cancel(job_id, by=default_user(), reason=reason)
    err.print(f"cancel requested for {job_id}", highlight=False)


def test(
    job_id: Annotated[str, typer.Argument(help="A finished job.", show_default=False)],
    tests: TestsOpt = None,
    expect_exit: ExpectExitOpt = None,
    expect_output: ExpectOutputOpt = None,
    expect_file: ExpectFileOpt = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Give up waiting for the results after this many seconds.")] = 120.0,
    as_json: JsonOpt = False,
    nats_url: NatsOpt = DEFAULT_NATS,
) -> None:
    """Run tests on a finished job (node-side checks run on its node). Exit 0 if all pass, 1 if not."""
    chosen = _tests({"tests": tests, "expect_exit": expect_exit, "expect_output": expect_output, "expect_file": expect_file})
    if not chosen:
        fail("no tests given: use --tests FILE or --expect-exit/--expect-output/--expect-file", 2)
    passed = _test(job_id, chosen, timeout, as_json, nats_url)
    raise typer.Exit(0 if passed else 1)


@run_async
async def _test(job_id: str, tests: list[JobTest], timeout: float, as_json: bool, nats_url: str) -> bool:
    subjects.check_id(job_id, "job id")
    async with connect(nats_url) as client:
        history = await client.history(job_id)
        if not history:
            fail(f"no job {job_id!r}")
        if not any(ends_job(r.event) for r in history):
            fail(f"job {job_id!r} has not finished; tests run on finished jobs")
        seq = await client.request_tests(job_id, tests, by=default_user())
        try:
            result = await client.wait_tested(job_id, seq, timeout)
        except TimeoutError:
            fail(f"no test results within {timeout:g}s (is the orchestrator running?)")
    assert result is not None
    if as_json:
        print_json({"jobId": job_id, "passed": result.passed, "results": msgspec.to_builtins(result.results)})
    else:
        for r in result.results:
            mark = "[green]pass[/green]" if r.passed else "[bold red]FAIL[/bold red]"
            out.print(f"{mark}  {r.type}: expected {r.expected}, got {r.actual}", highlight=False)
    return result.passed
