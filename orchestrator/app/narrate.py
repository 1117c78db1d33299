"""The narrator: an event of the log told for people. Pure: no I/O, no clock.

One place says what a job's event means in words, for every surface: the SSE
`status` messages, `nexus run` / `submit` status lines, `nexus history` and
`nexus pipeline run --lines`. `narrate(rec)` dispatches on the event's family
(the request phase, placement and execution, the outcome, cancelling); any
other event (a pipeline's, a node's) gets its fields as `key=value`.

`status_after` is the job's status once the event is applied, as the stream
reports it; `verdict_reason` is the one line that explains a terminal event.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from schemas import subjects
from schemas.events import (
    JobAccepted,
    JobApprovalRequired,
    JobApproved,
    JobAssigned,
    JobCancel,
    JobCancelled,
    JobCancelRequested,
    JobDenied,
    JobDispatch,
    JobExited,
    JobFailed,
    JobLost,
    JobQueued,
    JobRejected,
    JobRequested,
    JobStarted,
    JobSucceeded,
    JobTested,
    JobTimedOut,
    JobValidated,
)
from schemas.records import Record

Level = Literal["info", "warning", "error"]

# The status a job is in after an event of this kind (kinds not listed leave it as it was).
STATUS_OF_KIND = {
    "requested": "requested",
    "validated": "validated",
    "approval_required": "approval_required",
    "approved": "approved",
    "denied": "denied",
    "rejected": "rejected",
    "queued": "queued",
    "assigned": "assigned",
    "dispatch": "dispatched",
    "accepted": "accepted",
    "started": "running",
    "exited": "exited",
    "succeeded": "succeeded",
    "failed": "failed",
    "timed_out": "timed_out",
    "cancelled": "cancelled",
    "lost": "lost",
}
# Fields `details` leaves out: envelope noise and bulky values.
_NOT_DETAILS = frozenset({"type", "v", "ts", "env", "tests", "labels", "metadata", "argv", "candidates", "spec", "variables"})


class Narration(msgspec.Struct, frozen=True, kw_only=True):
    """One event in words: `category` is the event's kind (e.g. `assigned`)."""

    category: str
    message: str
    level: Level = "info"
    node: str | None = None
    attempt: int | None = None


def narrate(rec: Record) -> Narration:
    """The record told for people; an undecodable one says why it was refused."""
    kind = kind_of(rec)
    ev = rec.event
    if ev is None:
        return Narration(category=kind, message=f"{kind}: {rec.error}", level="warning")
    for family in (_request_phase, _placement, _execution, _outcome, _cancelling):
        told = family(kind, rec, ev)
        if told is not None:
            return told
    return Narration(category=kind, message=f"{kind} {details(ev)}".rstrip())


def status_after(rec: Record, previous: str) -> str:
    """The job's status once `rec` is applied (a lost job that will be retried is queued again)."""
    if isinstance(rec.event, JobLost) and rec.event.will_retry:
        return "queued"
    return STATUS_OF_KIND.get(kind_of(rec), previous)


def verdict_reason(ev: Any) -> str | None:
    """Why a job ended as it did, in one line (None for a plain success)."""
    if isinstance(ev, JobTimedOut):
        return timed_out(ev)
    if isinstance(ev, JobDenied):
        return f"denied by {ev.by}" + (f": {ev.reason}" if ev.reason else "")
    reason = getattr(ev, "reason", None)
    return reason if isinstance(reason, str) else None


def timed_out(ev: JobTimedOut) -> str:
    return f"timed out after {ev.timeout_s:g}s" if ev.timeout_s else "timed out"


def details(ev: Any) -> str:
    """An event's own fields as `key=value`, without the envelope and the bulky ones; a list as
    its items joined, a step's jobs by their ids (not a Python repr of the JSON)."""
    data = msgspec.to_builtins(ev)
    return ", ".join(f"{k}={_shown(v)}" for k, v in data.items() if k not in _NOT_DETAILS and v not in (None, "", [], {}))


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(_shown(v) for v in value)
    if isinstance(value, dict) and "job_id" in value:
        return str(value["job_id"])
    return str(value)


def clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def kind_of(rec: Record) -> str:
    """The event's kind, from its subject (an undecodable record has no event to ask)."""
    return rec.kind


def _request_phase(kind: str, rec: Record, ev: Any) -> Narration | None:
    match ev:
        case JobRequested():
            by = f" by {ev.requested_by}" if ev.requested_by else ""
            return Narration(category=kind, message=f"requested{by}: {ev.tool}: {clip(ev.command)}")
        case JobValidated():
            found = f", {len(ev.warnings)} warning(s), worst {ev.severity}" if ev.warnings else ", no findings"
            level: Level = "warning" if ev.severity == "critical" else "info"
            return Narration(category=kind, message=f"validated in {ev.duration_ms:g} ms{found}", level=level)
        case JobApprovalRequired():
            return Narration(category=kind, message=f"waiting for approval: {ev.reason}", level="warning")
        case JobApproved():
            return Narration(category=kind, message=f"approved by {ev.by}" + (f": {ev.reason}" if ev.reason else ""))
        case JobDenied():
            return Narration(category=kind, message=verdict_reason(ev) or "denied", level="error")
        case JobRejected():
            return Narration(category=kind, message=f"rejected: {ev.reason}", level="error")
    return None


def _placement(kind: str, rec: Record, ev: Any) -> Narration | None:
    match ev:
        case JobQueued():
            return Narration(category=kind, message=f"queued: {ev.reason}")
        case JobAssigned():
            why = f" ({ev.reason})" if ev.reason else ""
            return Narration(category=kind, message=f"assigned to node {ev.node}{why}", node=ev.node, attempt=ev.attempt)
        case JobDispatch():
            node = _node_of(rec)
            message = f"dispatched to node {node}: {ev.tool}: {clip(ev.command)}"
            return Narration(category=kind, message=message, node=node, attempt=ev.attempt)
        case JobAccepted():
            return Narration(category=kind, message=f"accepted by node {ev.node}", node=ev.node, attempt=ev.attempt)
        case JobStarted():
            return Narration(category=kind, message=f"started on {ev.node}, pid {ev.pid}", node=ev.node, attempt=ev.attempt)
        case JobLost():
            again = "; trying again" if ev.will_retry else ""
            message = f"lost on node {ev.node}: {ev.reason}{again}"
            return Narration(category=kind, message=message, level="error", node=ev.node, attempt=ev.attempt)
    return None


def _execution(kind: str, rec: Record, ev: Any) -> Narration | None:
    match ev:
        case JobExited():
            level: Level = "info"
            if ev.error:
                message, level = ev.error, "error"
            elif ev.exit_code is not None:
                message = f"exited with code {ev.exit_code} after {ev.duration_ms} ms"
            else:
                message = f"killed by signal {ev.signal}" + (f" ({ev.killed_by})" if ev.killed_by else "")
            return Narration(category=kind, message=message, level=level, node=ev.node, attempt=ev.attempt)
        case JobTested():
            ok = sum(1 for r in ev.results if r.passed)
            verdict = "passed" if ev.passed else "failed"
            message = f"tests {verdict}: {ok}/{len(ev.results)} assertion(s) passed"
            return Narration(category=kind, message=message, level="info" if ev.passed else "warning", attempt=ev.attempt)
    return None


def _outcome(kind: str, rec: Record, ev: Any) -> Narration | None:
    match ev:
        case JobSucceeded():
            return Narration(category=kind, message=f"succeeded (exit code {ev.exit_code})", attempt=ev.attempt)
        case JobFailed():
            return Narration(category=kind, message=f"failed: {ev.reason}", level="error", attempt=ev.attempt)
        case JobTimedOut():
            return Narration(category=kind, message=timed_out(ev), level="error", attempt=ev.attempt)
        case JobCancelled():
            return Narration(category=kind, message=f"cancelled: {ev.reason}", level="warning")
    return None


def _cancelling(kind: str, rec: Record, ev: Any) -> Narration | None:
    match ev:
        case JobCancelRequested():
            by = f" by {ev.requested_by}" if ev.requested_by else ""
            return Narration(category=kind, message=f"cancel requested{by}" + (f": {ev.reason}" if ev.reason else ""))
        case JobCancel():
            node = _node_of(rec)
            return Narration(category=kind, message=f"kill sent to node {node}", node=node, attempt=ev.attempt)
    return None


def _node_of(rec: Record) -> str:
    """The node a dispatch or kill is addressed to (decoded records have valid subjects)."""
    return subjects.parse(rec.subject).node or "?"
