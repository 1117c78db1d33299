"""Job verbs: jobs, show, logs, history, cancel, test (run and submit: run.py)."""

import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

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
    print_json,
    print_table,
    query,
    run_async,
)
from orchestrator.cli.job_options import ExpectExitOpt, ExpectFileOpt, ExpectOutputOpt, JobTestFlags, TestsOpt, tests_from

# The values of orchestrator.core.views.JobStatus, spelled out so that listing the verbs does not
# import the read model (msgspec and the schemas); tests/unit/test_cli_choices.py keeps them equal.
JobStatusName = Literal[
    "requested", "validated", "approval_required", "approved", "denied", "rejected", "queued", "assigned", "dispatched",
    "accepted", "running", "exited", "succeeded", "failed", "timed_out", "cancelled", "lost",
]  # fmt: skip

if TYPE_CHECKING:  # the rest is imported where used: `nexus --help` stays fast
    from collections.abc import AsyncIterator

    from orchestrator.client import NexusClient
    from schemas.records import Record
    from schemas.values import JobTest


def jobs(
    status: Annotated[JobStatusName | None, typer.Option("--status", help="Only jobs in this status.", show_choices=True)] = None,
    node: Annotated[str | None, typer.Option("--node", help="Only jobs on this node.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, newest first.", min=1)] = 20,
    as_json: JsonOpt = False,
    db: DbOpt = None,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
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
        err.print("no jobs match" if status or node else "no jobs yet", highlight=False)
    else:
        print_table(rows, drop=("duration_ms", "requested_at"))


async def _job_row(nats_url: str, db: Any, job_id: str) -> dict[str, Any]:
    from orchestrator.app.rows import JOB_SHOWN, decoded
    from schemas import subjects

    subjects.check_id(job_id, "job id")  # as logs and history say it: no job could have this id
    rows = await query(nats_url, db, f"SELECT {', '.join(JOB_SHOWN)} FROM jobs WHERE job_id = ?", [job_id])
    if not rows.rows:
        fail(f"no job {job_id!r}")
    return decoded(rows.dicts()[0])


def show(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    as_json: JsonOpt = False,
    db: DbOpt = None,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """Show one job's state."""
    _show(job_id, as_json, db, nats_url)


@run_async
async def _show(job_id: str, as_json: bool, db: Any, nats_url: str) -> None:
    from rich.markup import escape

    row = await _job_row(nats_url, db, job_id)
    if as_json:
        print_json(row)
        return
    tests, results = row.pop("tests"), row.pop("test_results")
    width = max(len(k) for k in row)
    for key, value in row.items():
        if value in (None, {}, []):
            continue
        out.print(f"[bold]{key:<{width}}[/bold]  {escape(fmt(value, one_line=True))}", highlight=False)
    if tests:
        out.print("[bold]tests[/bold]", highlight=False)
        for test in tests:
            fields = ", ".join(f"{k}={fmt(v, one_line=True)}" for k, v in test.items() if k != "type")
            out.print(f"  {escape(test['type'])}  {escape(fields)}", highlight=False)
    if results:
        out.print("[bold]test results[/bold]" + ("" if row["tests_passed"] else " (failed)"), highlight=False)
        for r in results:
            mark = "[green]pass[/green]" if r["passed"] else "[bold red]FAIL[/bold red]"
            out.print(f"  {mark}  {escape(r['type'])}: expected {escape(fmt(r['expected'], one_line=True))}, "
                      f"got {escape(fmt(r['actual'], one_line=True))}", highlight=False)  # fmt: skip


def logs(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="Write the raw PTY bytes (ANSI escapes and all).")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help='One JSON object: {"job_id", "text", "stderr", "bytes"}, written as the output is read.')
    ] = False,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """Print a job's output (text view: ANSI stripped, invalid UTF-8 replaced)."""
    _logs(job_id, follow, raw, as_json, nats_url)


@run_async
async def _logs(job_id: str, follow: bool, raw: bool, as_json: bool, nats_url: str) -> None:
    from orchestrator.cli.json_stream import StreamedJson
    from schemas import subjects
    from schemas.text import TextViews

    subjects.check_id(job_id, "job id")
    views = TextViews()  # a character may be cut between two chunks
    async with connect(nats_url, follows=follow) as client:
        if await client.bus.last_seq(subject=subjects.job_all(job_id)) == 0:
            fail(f"no job {job_id!r}")
        writer = StreamedJson({"job_id": job_id}, "text") if as_json else None
        stored = ((c.data, c.attempt, c.stream) async for c in client.output(job_id))
        stream = _followed(client, job_id) if follow else stored
        got = 0
        try:
            async for chunk, attempt, which in stream:
                got += len(chunk)
                # A `tty: false` job's stderr goes to stderr, its stdout to stdout (a PTY job has stdout only).
                if writer is not None:
                    writer.feed(attempt, which, chunk)
                elif raw:
                    out_file = sys.stderr if which == "stderr" else sys.stdout
                    out_file.buffer.write(chunk)
                    out_file.buffer.flush()
                else:
                    _write_text(which, views.feed(attempt, which, chunk))
        except BaseException as e:
            if writer is not None:  # the object stays whole: what was read, and why it stops there
                writer.finish({"bytes": writer.bytes, "error": str(e) or type(e).__name__})
            raise
        dropped = 0 if follow else await _note_what_is_missing(client, job_id, writer is None and not got)
    if writer is not None:
        writer.finish({"bytes": writer.bytes} | ({"output_dropped": dropped} if dropped else {}))
    else:
        for which, rest in views.finish().items():
            _write_text(which, rest)


async def _note_what_is_missing(client: "NexusClient", job_id: str, none_printed: bool) -> int:
    """Say on stderr what the printed output lacks: all of it (where the job stands: rejected, held,
    queued...), or what its node dropped past its limit; returns the bytes dropped."""
    from orchestrator.cli.follow import dropped_note
    from orchestrator.errors import NexusError

    try:
        rows = await client.query("SELECT status, reason, output_bytes, output_dropped FROM jobs WHERE job_id = ?", [job_id])
    except NexusError:  # no orchestrator to ask: the silence stands
        return 0
    if not rows.rows:
        return 0
    status, reason, kept, dropped = rows.rows[0]
    if none_printed and status != "succeeded":
        err.print(f"note: {job_id} has no output: it is {status}" + (f" ({reason})" if reason else ""), highlight=False, markup=False)
    if dropped:
        err.print(f"note: {dropped_note(job_id, kept or 0, dropped)}", highlight=False, markup=False)
    return int(dropped or 0)


async def _followed(client: "NexusClient", job_id: str) -> "AsyncIterator[tuple[bytes, int, str]]":
    """The job's output as it comes; on stderr, notices (the connection lost, or back) and why no
    output comes yet or ever (held for approval, queued, rejected or denied), as `nexus run` says."""
    from orchestrator.cli.follow import Say, dropped_note
    from schemas.events import JobApprovalRequired, JobDenied, JobExited, JobQueued, JobRejected

    say = Say()
    told: dict[type, str] = {JobApprovalRequired: "waiting for approval", JobQueued: "queued", JobRejected: "rejected", JobDenied: "denied"}
    async for item in client.follow(job_id):
        if item.output is not None:
            yield item.output, item.attempt, item.stream
        elif item.notice is not None:
            say(item.notice)
        elif item.record is not None and isinstance(ev := item.record.event, JobExited) and ev.output_dropped:
            say.tell(dropped_note(job_id, ev.output_bytes, ev.output_dropped))
        elif item.record is not None and (ev := item.record.event) is not None and (what := told.get(type(ev))) is not None:
            why = f"by {ev.by}" + (f": {ev.reason}" if ev.reason else "") if isinstance(ev, JobDenied) else getattr(ev, "reason", None)
            say(f"job {job_id} {what}" + (f": {why}" if why else ""))


def _write_text(stream: str, text: str) -> None:
    if text:
        out_file = sys.stderr if stream == "stderr" else sys.stdout
        out_file.write(text)
        out_file.flush()


def history(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    as_json: JsonOpt = False,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """A job's full event history from the log, for audits: the server's time of each event,
    who made it (the identity its signature proves), and events the orchestrator refused
    (forged or not theirs to make) marked so, with the reason."""
    _history(job_id, as_json, nats_url)


@run_async
async def _history(job_id: str, as_json: bool, nats_url: str) -> None:
    from orchestrator.app.narrate import narrate
    from orchestrator.client import Rows
    from schemas import subjects
    from schemas.codec import event_type

    subjects.check_id(job_id, "job id")
    async with connect(nats_url) as client:
        records = await client.history(job_id)
    if not records:
        fail(f"no job {job_id!r}")
    if as_json:
        print_json([_record_json(r) for r in records])
        return
    rows = Rows(["seq", "ts", "type", "by", "details"], [])
    for r in records:
        kind = event_type(r.event) if r.event is not None else f"{r.subject.split('.')[2]}.{r.kind} (not counted)"
        by = r.author.name if r.author is not None else ""
        rows.rows.append([r.seq, r.stream_ts, kind, by, r.error or narrate(r).message])
    print_table(rows)


def _record_json(r: "Record") -> dict[str, Any]:
    import msgspec

    from schemas.secrets import shown_env

    payload: Any
    try:
        payload = msgspec.json.decode(r.raw)
    except msgspec.DecodeError:
        payload = r.raw.decode("utf-8", errors="replace")
    if isinstance(payload, dict) and isinstance(payload.get("env"), dict):
        given = payload.get("secrets")
        payload["env"] = shown_env(payload["env"], given if isinstance(given, list) else ())  # secrets as the mask
    author = None if r.author is None else {"name": r.author.name, "role": r.author.role, "node": r.author.node, "key": r.author.key}
    return {"seq": r.seq, "subject": r.subject, "stream_ts": r.stream_ts, "author": author, "payload": payload, "error": r.error}


def cancel(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the record.")] = None,
    as_json: JsonOpt = False,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """Cancel a job: drop it if queued or held, kill its process tree if running.

    A job that already ended is left alone (nothing is recorded) and the exit code is 1.
    """
    _cancel(job_id, reason, as_json, nats_url)


@run_async
async def _cancel(job_id: str, reason: str | None, as_json: bool, nats_url: str) -> None:
    from orchestrator.app import jobs as jobs_app
    from orchestrator.app.jobs import CancelJob

    async with connect(nats_url) as client:
        seq = await jobs_app.cancel(client, CancelJob(job_id=job_id, by=default_user(), reason=reason))
    if as_json:
        print_json({"job_id": job_id, "cancel_requested": True, "seq": seq})
    else:
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
    creds: CredsOpt = None,
) -> None:
    """Run tests on a finished job (node-side checks run on its node). Exit 0 if all pass, 1 if not."""
    chosen = tests_from(JobTestFlags(tests=tests, expect_exit=expect_exit, expect_output=expect_output, expect_file=expect_file))
    if not chosen:
        fail("no tests given: use --tests FILE or --expect-exit/--expect-output/--expect-file", 2)
    passed = _test(job_id, chosen, timeout, as_json, nats_url)
    raise typer.Exit(0 if passed else 1)


@run_async
async def _test(job_id: str, tests: "list[JobTest]", timeout: float, as_json: bool, nats_url: str) -> bool:
    from orchestrator.app import finished as finished_app
    from orchestrator.app.finished import RunTests

    async with connect(nats_url) as client:
        ev = finished_app.tests_request(RunTests(job_id=job_id, tests=tests, by=default_user()), datetime.now(UTC))
        seq = await finished_app.request_tests(client, job_id, ev)
        try:
            result = await client.wait_tested(job_id, seq, timeout)
        except TimeoutError:
            fail(f"no test results within {timeout:g}s (is the orchestrator running?)")
    assert result is not None
    if as_json:
        print_json({"job_id": job_id, "passed": result.passed, "results": result.results})
    else:
        for r in result.results:
            mark = "[green]pass[/green]" if r.passed else "[bold red]FAIL[/bold red]"
            out.print(f"{mark}  {r.type}: expected {r.expected}, got {r.actual}", highlight=False)
    return result.passed


def rollback(
    job_id: Annotated[str, typer.Argument(help="A finished job that ran on a node.", show_default=False)],
    command: Annotated[
        str | None, typer.Option("--command", "-c", help="The undo command (default: the job's metadata.rollback).", show_default=False)
    ] = None,
    as_json: JsonOpt = False,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """Roll back a finished job: run its undo command on the same node, in the job's working
    directory with its env (secret entries left out), as a new job; when that job succeeds, the
    first one gets `rolled_back`. Prints the new job's id (follow it with `nexus logs -f ID`)."""
    _rollback(job_id, command, as_json, nats_url)


@run_async
async def _rollback(job_id: str, command: str | None, as_json: bool, nats_url: str) -> None:
    from orchestrator.app import finished as finished_app
    from orchestrator.app.finished import RollBack
    from orchestrator.cli.follow import EXIT_NEXUS, JobReport, Say
    from orchestrator.cli.run import VERDICT_WAIT_S, await_verdict
    from orchestrator.client import new_job_id

    async with connect(nats_url) as client:
        req = await finished_app.rollback_request(client, RollBack(job_id=job_id, command=command, by=default_user()), datetime.now(UTC))
        rollback_id = new_job_id()
        await client.submit(rollback_id, req)
        if not as_json:
            err.print(f"rolling back {job_id} on {req.node} as job {rollback_id}", highlight=False, markup=False)
        # As `nexus submit`: the analysis' answer (a deny rule, a held undo), and a rollback refused at once exits 125.
        report = JobReport(rollback_id, Say(enabled=not as_json), following=False)
        heard = await await_verdict(client, report)
    if not heard and not as_json:
        err.print(f"no analysis verdict within {VERDICT_WAIT_S:g}s (is the orchestrator running?); the job waits for it")
    elif heard and (verdict := report.verdict()) is not None:
        report.say(verdict)
    if as_json:
        print_json({"job_id": rollback_id, "rollback_of": job_id, "status": report.status})
    else:
        out.print(rollback_id, highlight=False, markup=False)
    if report.final is not None and report.status != "succeeded":  # refused before it ran
        raise typer.Exit(EXIT_NEXUS)
