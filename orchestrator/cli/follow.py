"""What a person at the terminal sees of a job: status lines, output, verdict, exit code.

`JobReport` turns a job's events into status lines on stderr as they arrive (the
analysis findings, an approval hold with its reason and who may release it, the
placement, the verdict) and gives `nexus run` its exit code. `Say` prints those
lines and goes quiet when the terminal is gone; `OutputSink` writes the job's
output to stdout and tells its owner once when nobody reads it any more.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from orchestrator.app.narrate import narrate
from orchestrator.cli import process
from orchestrator.cli.common import err
from orchestrator.cli.terminal_text import printable, printable_text
from schemas.codec import event_type
from schemas.events import (
    JobApprovalRequired,
    JobApproved,
    JobAssigned,
    JobCancelled,
    JobDenied,
    JobExited,
    JobFailed,
    JobLost,
    JobQueued,
    JobStarted,
    JobSucceeded,
    JobTimedOut,
    JobValidated,
    ends_job,
)
from schemas.records import Record

if TYPE_CHECKING:  # rich is imported when there is something to print: `nexus run -q` does without it
    from rich.text import Text

# Exit codes of `nexus run` besides the command's own (documented in docs/cli.md).
EXIT_NEXUS = 125  # rejected, denied, lost, or could not start
EXIT_TIMEOUT = 124
EXIT_CANCELLED = 130
EXIT_TESTS_FAILED = 1  # the command exited 0 but its tests failed

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


# Set at all, any of these may make rich style a pipe too (rich.console.Console.is_terminal).
STYLE_FORCING = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


class Say:
    """Status lines on stderr, `nexus: ...`; silent when disabled or once stderr is gone.

    Control characters in a line (it may quote the log: a reason, a finding) are shown as
    escapes (terminal_text). Where rich would print a plain line as it is (stderr no terminal,
    nothing forcing styles), it is written here byte for byte as rich would, without importing
    rich (~15 ms of a `nexus run` in a script); styled lines (analysis findings, holds) and
    terminals go through rich."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.plain = not _styled(sys.stderr)
        self.gone = False  # stderr closed: nobody to tell any more

    def __call__(self, line: str | Text) -> None:
        if self.enabled:
            self.tell(line)

    def tell(self, line: str | Text) -> None:
        """Say `line` even when status lines are off (-q, --json): what the person must know."""
        if self.gone:
            return
        try:
            if self.plain and isinstance(line, str):
                sys.stderr.write(f"nexus: {printable(line, one_line=True)}\n")
                sys.stderr.flush()
                return
            from rich.text import Text

            shown = printable(line, one_line=True) if isinstance(line, str) else printable_text(line, one_line=True)
            err.print(Text.assemble(("nexus: ", "dim"), shown), highlight=False)
        except OSError:  # a closed terminal (SIGHUP) or pipe: nobody to tell any more
            self.gone = True


def _styled(stream: TextIO | None) -> bool:
    """Would rich style what it prints on `stream`?"""
    if any(name in os.environ for name in STYLE_FORCING):
        return True
    try:
        return stream is not None and stream.isatty()
    except ValueError:  # a closed stream
        return False


class OutputSink:
    """The job's raw output on stdout (a `tty: false` job's stderr on stderr). When stdout is
    gone (a closed pipe or terminal) it calls `on_gone` once and drops the rest, as `nexus run`
    then stops the job."""

    def __init__(self, on_gone: Callable[[], None]) -> None:
        self.on_gone = on_gone
        self.gone = False
        self.stderr_gone = False

    def write(self, data: bytes, stream: str = "stdout") -> None:
        if stream == "stderr":
            self._write_stderr(data)
            return
        if self.gone:
            return
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except OSError:
            self.gone = True
            process.drop_stdout()
            self.on_gone()

    def _write_stderr(self, data: bytes) -> None:
        if self.stderr_gone:
            return
        try:
            sys.stderr.flush()  # our own status lines (text layer) first, in the order they were said
            sys.stderr.buffer.write(data)
            sys.stderr.buffer.flush()
        except OSError:  # nobody reads our stderr any more: the job's stdout still counts
            self.stderr_gone = True


def analysis_lines(ev: JobValidated) -> list[Text]:
    """The findings of the analysis phase, one line each, worst first, then its suggestions."""
    if not ev.warnings:
        return []
    from rich.text import Text

    rank = {"critical": 0, "warning": 1, "info": 2}
    lines = [
        Text.assemble("analysis: ", (f"{w.severity:<8}", SEVERITY_STYLE.get(w.severity, "")), f" {w.type}: {w.message}")
        for w in sorted(ev.warnings, key=lambda w: rank.get(w.severity, 3))
    ]
    return lines + [Text(f"  suggestion: {s}") for s in ev.suggestions]


def hold_lines(job_id: str, ev: JobApprovalRequired, *, following: bool) -> list[Text]:
    """Why the job waits, who may release it, and how."""
    from rich.text import Text

    # The server takes approvals only from the approver and admin roles; the policy may narrow that to names.
    role = "credentials with the approver or admin role"
    who = f"{', '.join(ev.approvers)} (the policy's approvers), with {role}" if ev.approvers else f"anyone with {role}"
    how = f"approve with `nexus approve {job_id}`, or refuse with `nexus deny {job_id}`"
    return [
        Text.assemble(("waiting for approval: ", "bold yellow"), ev.reason),
        Text(f"  may approve: {who}"),
        Text(f"  {how}" + ("; Ctrl-C cancels the job" if following else "")),
    ]


def dropped_note(job_id: str, kept: int, dropped: int) -> str:
    return (
        f"job {job_id}: only the first {kept:,} bytes of its output were kept; {dropped:,} more were printed "
        "past its node's limit (`nexus agent --output-max-mb`) and dropped"
    )


class JobReport:
    """What is known of one job from its events, told through `say` as it arrives."""

    def __init__(self, job_id: str, say: Say, *, following: bool = True) -> None:
        self.job_id = job_id
        self.say = say
        self.following = following
        self.status = "requested"
        self.validated: JobValidated | None = None
        self.exited: JobExited | None = None
        self.final: Record | None = None

    def on_record(self, rec: Record) -> None:
        ev = rec.event
        if ev is None:
            return
        self.status = event_type(ev).split(".", 1)[1]
        if ends_job(ev):
            self.final = rec
            return
        self._tell(rec)

    def _tell(self, rec: Record) -> None:
        ev = rec.event
        match ev:
            case JobValidated():
                self.validated = ev
                for line in analysis_lines(ev):
                    self.say(line)
            case JobApprovalRequired():
                for line in hold_lines(self.job_id, ev, following=self.following):
                    self.say(line)
            case JobExited():
                self.exited = ev
                if ev.output_dropped:  # said even with -q: what was printed is not all there is
                    self.say.tell(dropped_note(self.job_id, ev.output_bytes, ev.output_dropped))
            case JobApproved() | JobQueued() | JobAssigned() | JobStarted() | JobLost():  # a lost job here is retried
                self.say(narrate(rec).message)

    def verdict(self) -> str | None:
        """One line on how the job ended, unless it simply succeeded."""
        ev = self.final.event if self.final is not None else None
        if ev is None or isinstance(ev, JobSucceeded):
            return None
        if isinstance(ev, JobTimedOut):
            why = f"after {ev.timeout_s:g}s" if ev.timeout_s else "no timeout recorded"
        elif isinstance(ev, JobDenied):
            why = f"by {ev.by}" + (f": {ev.reason}" if ev.reason else " (no reason given)") + "; it never ran"
        else:
            why = getattr(ev, "reason", "")
        return f"job {self.job_id} {self.status}: {why}"

    def exit_code(self) -> int:
        ev = self.final.event if self.final is not None else None
        if isinstance(ev, JobSucceeded):
            return ev.exit_code
        if isinstance(ev, JobTimedOut):
            return EXIT_TIMEOUT
        if isinstance(ev, JobCancelled):
            return EXIT_CANCELLED
        if isinstance(ev, JobFailed) and self.exited is not None:
            if self.exited.exit_code is not None:
                # A command that exited 0 but failed its tests still fails the run.
                return self.exited.exit_code or EXIT_TESTS_FAILED
            if self.exited.signal:
                return 128 + self.exited.signal
        return EXIT_NEXUS

    def warnings_json(self) -> list[dict[str, str]]:
        found = self.validated.warnings if self.validated is not None else []
        return [{"type": w.type, "severity": w.severity, "message": w.message} for w in found]

    def summary(self, code: int | None) -> dict[str, Any]:
        """`nexus run --json`'s fields besides the output: how the job ended, and `code`, the exit
        code of `nexus run` itself (None: it stopped on an error)."""
        return {
            "status": self.status,
            "exit_code": self.exited.exit_code if self.exited else None,
            "exit": code,
            "warnings": self.warnings_json(),
        } | ({"output_dropped": self.exited.output_dropped} if self.exited and self.exited.output_dropped else {})
