"""The job state machine: one small, pure evolve function per job event.

`evolve_job` is the whole transition function. Events come in four groups
(admission, on the node, outcome, after the fact); each group is a union and
each is matched exhaustively, with a plain `assert_never` that mypy --strict
checks, so a new job event kind fails the type check until it is handled.
Views are frozen: every step returns a new `JobView` (`msgspec.structs.replace`).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import assert_never

from msgspec.structs import replace

from orchestrator.core.authorship import denial_refusal
from orchestrator.core.views import JobStatus, JobView
from schemas.codec import encode, event_type
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
    JobEvent,
    JobExited,
    JobFailed,
    JobLost,
    JobQueued,
    JobRejected,
    JobRequested,
    JobRolledBack,
    JobStarted,
    JobSucceeded,
    JobTested,
    JobTestRequested,
    JobTimedOut,
    JobValidated,
    NodeFact,
)
from schemas.secrets import Redaction, masked

# Before the job reaches a node.
Admission = JobValidated | JobApprovalRequired | JobApproved | JobDenied | JobRejected | JobQueued
# The node's side of one attempt.
OnNode = JobAssigned | JobDispatch | JobAccepted | JobStarted | JobExited | JobCancelRequested | JobCancel
# Verdicts: each ends the job, except a lost attempt that will be retried.
Outcome = JobSucceeded | JobFailed | JobTimedOut | JobCancelled | JobLost
# Facts recorded about a job that may already have ended.
AfterTheFact = JobTested | JobTestRequested | JobRolledBack

S = JobStatus
Step = tuple[JobView, str | None]


def evolve_job(job: JobView | None, job_id: str, ev: JobEvent, ts: datetime, seq: int) -> tuple[JobView | None, str | None]:
    """Next view of one job, and a note when the event changes nothing."""
    if isinstance(ev, JobRequested):
        if job is not None:
            # Still advance last_seq: decisions expect the job's last subject sequence.
            return touched(job, seq), "duplicate job.requested: the job already exists, ignored"
        return requested(job_id, ev, ts, seq), None
    if job is None:
        if isinstance(ev, JobRejected):
            # A requested payload that never decoded: the rejection is the job's only record.
            return rejected_unknown(job_id, ev, ts, seq), None
        return None, "event for an unknown job, ignored"
    before = touched(job, seq)
    after, note = _transition(before, ev, ts, seq)
    if note is not None:
        return before, note
    if job.terminal and not after.terminal:
        return before, "event after the job ended, ignored"
    return after, None


def _transition(job: JobView, ev: Admission | OnNode | Outcome | AfterTheFact, ts: datetime, seq: int) -> Step:
    if isinstance(ev, JobApproved | JobDenied) and job.status != S.APPROVAL_REQUIRED:
        # Not waiting for one (cancelled, answered, never held): a record that never counts,
        # so it stays out of the approvals and denials counted (metrics_analysis) and reads so.
        return job, f"{event_type(ev)} of a job not waiting for approval ({job.status}), ignored"
    if isinstance(ev, JobDenied) and (refused := denial_refusal(job.deciders, ev.by)) is not None:
        # By someone the hold did not name (an approval by them is answered with a new hold: decide).
        return job, refused
    if job.status in _DECISION_NOT_AFTER.get(type(ev), ()):
        return job, f"{event_type(ev)} cannot follow status {job.status}: refused"
    if isinstance(ev, Admission):
        return _admission(job, ev, ts), None
    if isinstance(ev, NodeFact):
        if (refused := _not_from_the_runner(job, ev)) is not None:
            return job, refused
        return _on_node(job, ev, ts), None
    if isinstance(ev, OnNode):
        return _on_node(job, ev, ts), None
    if isinstance(ev, Outcome):
        return _outcome(job, ev, ts), None
    if isinstance(ev, AfterTheFact):
        return _after_the_fact(job, ev, ts, seq)
    assert_never(ev)


def requested(job_id: str, ev: JobRequested, ts: datetime, seq: int) -> JobView:
    # Secret values (sealed, or in clear from a foreign publisher) never reach the view:
    # the decider reads them from the request in the log when it seals them for the node.
    secrets = Redaction().secret_names(ev.env, ev.secrets)
    return JobView(
        job_id=job_id,
        status=S.REQUESTED,
        command=ev.command,
        tool=ev.tool,
        requested_node=ev.node,
        labels=dict(ev.labels),
        prefer=dict(ev.prefer),
        working_dir=ev.working_dir,
        env=masked(ev.env, secrets),
        secrets=secrets,
        timeout_s=ev.timeout_s,
        priority=ev.priority,
        tests=list(ev.tests),
        parent=ev.parent,
        metadata=dict(ev.metadata),
        requested_by=ev.requested_by,
        after=list(ev.after),
        retries=ev.retries,
        idempotent=ev.idempotent,
        tty=ev.tty,
        requested_at=ts,
        first_seq=seq,
        last_seq=seq,
    )


def rejected_unknown(job_id: str, ev: JobRejected, ts: datetime, seq: int) -> JobView:
    return JobView(
        job_id=job_id,
        status=S.REJECTED,
        command="",
        reason=ev.reason,
        requested_at=ts,
        finished_at=ts,
        first_seq=seq,
        last_seq=seq,
    )


# ---------------------------------------------------------------- admission


def _admission(job: JobView, ev: Admission, ts: datetime) -> JobView:
    match ev:
        case JobValidated():
            return validated(job, ev, ts)
        case JobApprovalRequired():
            # Held again after an approval that did not count (its author may not approve): that
            # approval is nobody's, so the record no longer names an approver.
            return replace(job, status=S.APPROVAL_REQUIRED, reason=ev.reason, deciders=ev.deciders, approved_by=None)
        case JobApproved():
            return approved(job, ev)
        case JobDenied():
            return denied(job, ev, ts)
        case JobRejected():
            if ev.severity is not None or ev.warnings:  # what the analysis found before it refused
                job = replace(job, severity=ev.severity, warnings=list(ev.warnings))
            return finish(job, S.REJECTED, ts, ev.reason)
        case JobQueued():
            return replace(job, status=S.QUEUED, reason=ev.reason, queued_at=job.queued_at or ts)
        case _:
            assert_never(ev)


def validated(job: JobView, ev: JobValidated, ts: datetime) -> JobView:
    return replace(
        job,
        status=S.VALIDATED,
        severity=ev.severity,
        warnings=list(ev.warnings),
        suggestions=list(ev.suggestions),
        validation_ms=ev.duration_ms,
        validated_at=ts,
    )


def approved(job: JobView, ev: JobApproved) -> JobView:
    return replace(job, status=S.APPROVED, approved_by=ev.by, reason=ev.reason)


def denied(job: JobView, ev: JobDenied, ts: datetime) -> JobView:
    return finish(job, S.DENIED, ts, f"denied by {ev.by}" + (f": {ev.reason}" if ev.reason else ""))


# ---------------------------------------------------------------- on the node

# The facts a node reports about the attempt it runs (schemas.events.NodeFact), and the statuses each may follow.
# The statuses a placement decision can never follow: the orchestrator decides from the job's
# last event, and none of its decisions takes a job back from its node (decide.decide_job). One
# there is a copy of an older decision published again, which would make the job wait for an
# exit that can no longer count, or place it a second time.
_RAN = frozenset({S.DISPATCHED, S.ACCEPTED, S.RUNNING, S.EXITED})
_DECISION_NOT_AFTER: dict[type, frozenset[JobStatus]] = {
    JobValidated: _RAN | {S.ASSIGNED},
    JobApprovalRequired: _RAN | {S.ASSIGNED},
    JobQueued: _RAN | {S.ASSIGNED},
    JobAssigned: _RAN,
    JobDispatch: _RAN - {S.DISPATCHED},
}

_FACT_AFTER: dict[type, tuple[str, frozenset[JobStatus]]] = {
    JobAccepted: ("accepted", frozenset({S.DISPATCHED})),
    JobStarted: ("started", frozenset({S.ACCEPTED})),
    JobExited: ("exited", frozenset({S.ACCEPTED, S.RUNNING})),
}


def _not_from_the_runner(job: JobView, ev: NodeFact) -> str | None:
    """Why a node fact cannot count (None: it can): it must come from the node the current
    attempt was dispatched to, for that attempt, in the order the agent reports them."""
    if job.terminal:
        return "event after the job ended, ignored"
    if ev.node != job.node or ev.attempt != job.attempt:
        return f"fact from node {ev.node!r} attempt {ev.attempt}, but the job's attempt {job.attempt} is on {job.node!r}: refused"
    kind, after = _FACT_AFTER[type(ev)]
    if job.status not in after:
        return f"{kind} cannot follow status {job.status}: refused"
    return None


def _on_node(job: JobView, ev: OnNode, ts: datetime) -> JobView:
    match ev:
        case JobAssigned():
            # A new attempt: a kill sent to the last one (declared lost) is not this one's.
            attempt = {"node": ev.node, "attempt": ev.attempt, "assigned_at": ts, "placement": ev.reason, "cancel_sent": False}
            return replace(job, status=S.ASSIGNED, reason=None, **attempt)
        case JobDispatch():
            return replace(job, status=S.DISPATCHED)
        case JobAccepted():
            return replace(job, status=S.ACCEPTED, accepted_at=ts, instance=ev.instance)
        case JobStarted():
            return replace(job, status=S.RUNNING, started_at=ts)
        case JobExited():
            return exited(job, ev, ts)
        case JobCancelRequested():
            return replace(job, cancel_requested=True)
        case JobCancel():
            return replace(job, cancel_sent=True)
        case _:
            assert_never(ev)


def exited(job: JobView, ev: JobExited, ts: datetime) -> JobView:
    return replace(
        job,
        status=S.EXITED,
        exit_code=ev.exit_code,
        signal=ev.signal,
        killed_by=ev.killed_by,
        duration_ms=ev.duration_ms,
        output_bytes=ev.output_bytes,
        chunks=ev.chunks,
        output_dropped=ev.output_dropped,
        exited_at=ts,
        checks=list(ev.checks),
        reason=ev.error or job.reason,
    )


# ---------------------------------------------------------------- outcome


def _outcome(job: JobView, ev: Outcome, ts: datetime) -> JobView:
    match ev:
        case JobSucceeded():
            return finish(job, S.SUCCEEDED, ts, None)
        case JobFailed():
            return finish(job, S.FAILED, ts, ev.reason)
        case JobTimedOut():
            return finish(job, S.TIMED_OUT, ts, f"timed out after {ev.timeout_s:g}s" if ev.timeout_s else "timed out")
        case JobCancelled():
            return finish(job, S.CANCELLED, ts, ev.reason)
        case JobLost():
            if ev.will_retry:
                return replace(job, status=S.QUEUED, reason=ev.reason, queued_at=ts)
            return finish(job, S.LOST, ts, ev.reason)
        case _:
            assert_never(ev)


def finish(job: JobView, status: JobStatus, ts: datetime, reason: str | None) -> JobView:
    """The job ends with `status`; a job that has already ended keeps its verdict."""
    if job.terminal:
        return job
    return replace(job, status=status, finished_at=ts, reason=job.reason if reason is None else reason)


# ---------------------------------------------------------------- after the fact


def _after_the_fact(job: JobView, ev: AfterTheFact, ts: datetime, seq: int) -> Step:
    match ev:
        case JobTested():
            return replace(job, tests_passed=ev.passed, test_results=list(ev.results), retest=[], retest_by=None), None
        case JobRolledBack():
            return replace(job, rollback_job=ev.rollback_job, rolled_back_at=ts), None
        case JobTestRequested():
            if not job.terminal or job.retest:
                return job, "tests can run on a finished job, one request at a time; ignored"
            retest = replace(job, retest=list(ev.tests), retest_job=verification_job_id(job.job_id, seq), retest_by=ev.requested_by)
            if ev.ts is None:  # (a request without its own time cannot be told from a copy of one)
                return retest, None
            if (mark := _digest(ev)) in job.test_requests:
                # The same request (its time, tests and requester) stored again under a new msg id:
                # a copy, which would run the tests' commands once more in its author's name.
                return job, "a copy of a test request already taken: refused"
            return replace(retest, test_requests=[*job.test_requests, mark]), None
        case _:
            assert_never(ev)


def _digest(ev: JobTestRequested) -> str:
    return hashlib.sha256(encode(ev)).hexdigest()[:32]


def verification_job_id(job_id: str, seq: int) -> str:
    """Deterministic id of the job that checks a finished job's node-side tests."""
    suffix = f"-t{seq}"
    return job_id[: 64 - len(suffix)] + suffix


def touched(job: JobView, seq: int) -> JobView:
    """The view with its `last_seq` moved: the server counts every message on the job's subjects."""
    return replace(job, last_seq=seq)
