"""`nexus run` and `nexus submit`: submit a job; `run` also follows it to its end.

Stdin is never read: the job's own stdin is closed at once (its first read gets
end-of-file, like `ssh -n`), and data piped into `nexus` stays where it is, with
a note on stderr, so a `while read` loop around `nexus run` keeps its input.

While `nexus run` follows, the first SIGINT, SIGTERM or SIGHUP cancels the job
and goes on following until it ended, so the exit code says how; output that
nobody reads any more (a closed pipe or terminal) counts as that first signal.
A second signal stops following at once (exit 128+N); the cancel stands.
"""

import contextlib
import fcntl
import os
import signal
import stat
import sys
import termios
from collections.abc import Awaitable
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli import process
from orchestrator.cli.common import DEFAULT_NATS, CredsOpt, JsonOpt, NatsOpt, connect, default_user, print_json, run_async
from orchestrator.cli.job_options import (
    AfterOpt,
    CommandArg,
    CwdOpt,
    EnvOpt,
    ExpectExitOpt,
    ExpectFileOpt,
    ExpectOutputOpt,
    IdempotentOpt,
    IdOpt,
    JobFlags,
    JobTestFlags,
    LabelOpt,
    MetaOpt,
    NodeOpt,
    NoTtyOpt,
    ParentOpt,
    PreferOpt,
    PriorityOpt,
    RetriesOpt,
    SecretOpt,
    TestsOpt,
    TimeoutOpt,
    ToolOpt,
    request_from,
)

if TYPE_CHECKING:  # imported where used: `nexus --help` must not pay for the bus and the app layer
    from orchestrator.app.jobs import SubmitJob
    from orchestrator.cli.follow import JobReport, OutputSink, Say
    from orchestrator.cli.json_stream import StreamedJson
    from orchestrator.client import NexusClient
    from schemas.records import Record

# How long `nexus submit` waits for the analysis verdict before it leaves the job to it.
VERDICT_WAIT_S = 5.0
# How long a cancel request may take to be stored before `nexus run` exits anyway.
CANCEL_PUBLISH_S = 10.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STDIN_NOTE = (
    "stdin is not forwarded: the job's stdin is closed (it reads end-of-file, like ssh -n); "
    "put the data in the command or in a file on the node"
)


def run(
    command: CommandArg,
    node: NodeOpt = None,
    label: LabelOpt = None,
    prefer: PreferOpt = None,
    tool: ToolOpt = "bash",
    cwd: CwdOpt = None,
    env: EnvOpt = None,
    secret: SecretOpt = None,
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
    no_tty: NoTtyOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No status lines or analysis findings on stderr.")] = False,
    as_json: JsonOpt = False,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """Submit a command, stream its output live, and exit with its exit code.

    Stdin is not forwarded: the job's stdin is closed at once (like ssh -n).
    The analysis findings, an approval hold (why, who may approve) and the verdict
    go to stderr. Ctrl-C, SIGTERM or SIGHUP cancels the job; a second one stops following.

    Exit codes: the command's own; 1 if it exited 0 but its tests failed; 124 timed
    out; 130 cancelled; 128+N killed by signal N; 125 rejected, denied, lost or could not start.
    """
    flags = JobFlags(
        node=node, label=label, prefer=prefer, tool=tool, cwd=cwd, env=env, secret=secret, timeout=timeout, priority=priority,
        job_id=job_id, meta=meta, parent=parent, after=after, retries=retries, idempotent=idempotent, tty=not no_tty,
        tests=JobTestFlags(tests=tests, expect_exit=expect_exit, expect_output=expect_output, expect_file=expect_file),
    )  # fmt: skip
    code = _run(request_from(command, flags), quiet, as_json, nats_url)
    # All it opened is closed by now (the bus, the event loop, its signal handlers).
    process.exit_now(code)


@run_async
async def _run(cmd: "SubmitJob", quiet: bool, as_json: bool, nats_url: str) -> int:
    from orchestrator.app import jobs as jobs_app
    from orchestrator.app.jobs import job_id_of
    from orchestrator.cli.follow import JobReport, OutputSink, Say
    from orchestrator.cli.json_stream import StreamedJson

    job_id = job_id_of(cmd)
    say = Say(enabled=not (quiet or as_json))
    if stdin_pending():
        say(STDIN_NOTE)
    async with connect(nats_url, follows=True) as client:
        await jobs_app.submit(client, job_id, await jobs_app.request_for(client, cmd, datetime.now(UTC)))
        say(f"job {job_id} submitted")
        report = JobReport(job_id, say)
        # --json: one object, its output written as it is read (memory bounded whatever its size)
        with CancelOnSignal(client, job_id, say) as guard:
            gone = lambda: guard.cancel("stdout closed")  # noqa: E731 - as without --json: the job is cancelled
            writer = StreamedJson({"job_id": job_id}, "output", on_gone=gone) if as_json else None
            sink = writer or OutputSink(on_gone=gone)
            try:
                ended = await guard.follow(_follow(client, report, sink))
            except BaseException as e:
                if writer is not None:  # the object stays whole: what was read, and why it stops there
                    writer.finish({**report.summary(None), "error": str(e) or type(e).__name__})
                raise
    code = report.exit_code()
    if ended:
        if (verdict := report.verdict()) is not None:
            say(verdict)
    else:
        code = 128 + guard.detached_by
        say(f"stopped following job {job_id}; `nexus logs {job_id} -f` picks it up")
    if writer is not None:
        writer.finish(report.summary(code))
    return code


async def _follow(client: "NexusClient", report: "JobReport", output: "StreamedJson | OutputSink") -> None:
    from orchestrator.cli.json_stream import StreamedJson

    async for item in client.follow(report.job_id):
        if item.output is not None:
            if isinstance(output, StreamedJson):
                output.feed(item.attempt, item.stream, item.output)
            else:
                output.write(item.output, item.stream)
        elif item.record is not None:
            report.on_record(item.record)
        elif item.notice is not None:  # the connection lost or back: said even with -q, since it may take a while
            report.say.tell(item.notice)


class CancelOnSignal:
    """While `nexus run` follows: the first stop signal cancels the job, a second one stops following."""

    def __init__(self, client: "NexusClient", job_id: str, say: "Say") -> None:
        import asyncio

        self.client = client
        self.job_id = job_id
        self.say = say
        self.cancelling: asyncio.Task[None] | None = None
        self.detached_by = 0
        self._detach = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def __enter__(self) -> "CancelOnSignal":
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError):
                self._loop.add_signal_handler(sig, self._on_signal, sig)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError):
                self._loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        name = "Ctrl-C" if sig == signal.SIGINT else signal.Signals(sig).name
        if self.cancelling is None:
            self.cancel(name)
        elif not self._detach.is_set():
            self.detached_by = sig
            self._detach.set()

    def cancel(self, why: str) -> None:
        """Ask for the job's cancel once, whatever asked first."""
        if self.cancelling is not None:
            return
        import asyncio

        self.say(f"{why}: cancelling job {self.job_id} (a second signal stops following; the cancel stands)")
        self.cancelling = asyncio.ensure_future(self._cancel(why))

    async def _cancel(self, why: str) -> None:
        from orchestrator.app import jobs as jobs_app
        from orchestrator.app.errors import JobFinished
        from orchestrator.app.jobs import CancelJob

        with contextlib.suppress(JobFinished):  # it ended meanwhile: nothing to cancel
            await jobs_app.cancel(self.client, CancelJob(job_id=self.job_id, by=default_user(), reason=f"{why} in nexus run"))

    async def follow(self, following: Awaitable[None]) -> bool:
        """Await the follower until it ends (True) or a second signal (False); in both
        cases a cancel asked for is stored before this returns."""
        import asyncio

        task = asyncio.ensure_future(following)
        detach = asyncio.ensure_future(self._detach.wait())
        try:
            await asyncio.wait([task, detach], return_when=asyncio.FIRST_COMPLETED)
        finally:
            detach.cancel()
            ended = task.done()
            if not ended:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.cancelling is not None:
            await asyncio.wait_for(self.cancelling, CANCEL_PUBLISH_S)
        if ended:
            task.result()  # the follower's own error, if any
        return ended


def submit(
    command: CommandArg,
    node: NodeOpt = None,
    label: LabelOpt = None,
    prefer: PreferOpt = None,
    tool: ToolOpt = "bash",
    cwd: CwdOpt = None,
    env: EnvOpt = None,
    secret: SecretOpt = None,
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
    no_tty: NoTtyOpt = False,
    as_json: JsonOpt = False,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """Submit a command and print its job id, without waiting for it to run.

    Waits a moment for the analysis verdict and shows its findings, an approval
    hold or a rejection on stderr. Stdin is not forwarded: the job's stdin is closed at once.

    Exit codes: 0 submitted (it runs, is queued or held for approval, or no verdict came in
    time); 125 rejected at once (it will never run; the id is still printed).
    """
    flags = JobFlags(
        node=node, label=label, prefer=prefer, tool=tool, cwd=cwd, env=env, secret=secret, timeout=timeout, priority=priority,
        job_id=job_id, meta=meta, parent=parent, after=after, retries=retries, idempotent=idempotent, tty=not no_tty,
        tests=JobTestFlags(tests=tests, expect_exit=expect_exit, expect_output=expect_output, expect_file=expect_file),
    )  # fmt: skip
    _submit(request_from(command, flags), as_json, nats_url)


@run_async
async def _submit(cmd: "SubmitJob", as_json: bool, nats_url: str) -> None:
    from orchestrator.app import jobs as jobs_app
    from orchestrator.app.jobs import job_id_of
    from orchestrator.cli.follow import EXIT_NEXUS, JobReport, Say

    job_id = job_id_of(cmd)
    say = Say(enabled=not as_json)
    if stdin_pending():
        say(STDIN_NOTE)
    report = JobReport(job_id, say, following=False)
    async with connect(nats_url) as client:
        seq = (await jobs_app.submit(client, job_id, await jobs_app.request_for(client, cmd, datetime.now(UTC)))).seq
        heard = await await_verdict(client, report, waits_for_jobs=bool(cmd.after))
    if not heard:
        say(f"no analysis verdict within {VERDICT_WAIT_S:g}s (is the orchestrator running?); the job waits for it")
    elif (verdict := report.verdict()) is not None:
        say(verdict)
    if as_json:
        print_json({"job_id": job_id, "seq": seq, "status": report.status, "warnings": report.warnings_json()})
    else:
        print(job_id)
    if report.final is not None and report.status != "succeeded":  # ended before it ran: rejected at once
        raise typer.Exit(EXIT_NEXUS)  # `J=$(nexus submit ...) && ...` must not go on


async def await_verdict(client: "NexusClient", report: "JobReport", *, waits_for_jobs: bool = False) -> bool:
    """Follow the job until the analysis phase answered (validated, held or rejected); for a job
    that `waits_for_jobs` (`--after`), until the decision on those jobs that follows at once
    (queued to wait for them, placed, or rejected: one of them failed), so that a job that can
    never run is told as rejected."""
    import asyncio

    from schemas.events import JobApprovalRequired, JobAssigned, JobQueued, JobValidated, ends_job

    def answered(rec: "Record") -> bool:
        if isinstance(rec.event, JobValidated):
            return not rec.event.approval_needed and not waits_for_jobs  # else the hold, or the wait, comes next
        return isinstance(rec.event, JobApprovalRequired | JobQueued | JobAssigned) or ends_job(rec.event)

    try:
        async with asyncio.timeout(VERDICT_WAIT_S):
            async for item in client.follow(report.job_id, until=answered):
                if item.record is not None:
                    report.on_record(item.record)
    except TimeoutError:
        return False
    return True


def stdin_pending() -> bool:
    """Is there data on stdin that someone meant for the job? Never reads it: what is
    piped into `nexus` (say, by a `while read` loop around it) is left where it is."""
    try:
        fd = sys.stdin.fileno()
        if os.isatty(fd):
            return False
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            return st.st_size > os.lseek(fd, 0, os.SEEK_CUR)
        if stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode):
            waiting = bytearray(4)
            fcntl.ioctl(fd, termios.FIONREAD, waiting)
            return int.from_bytes(waiting, sys.byteorder) > 0
    except (OSError, ValueError, AttributeError):
        pass  # no usable stdin at all (closed, or replaced by something without a descriptor)
    return False
