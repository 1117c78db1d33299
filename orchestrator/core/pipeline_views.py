"""Pipeline read models: `PipelineView` and its `StepView`s, folded from pipeline events.

Pure: no clock, no I/O. `decide_pipeline` (orchestrator.core.pipeline) decides from these views;
the store keeps them in the `pipelines` and `pipeline_steps` tables. Step job ids are derived
here (`step_job_id`) so the fold and the decider agree on them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, assert_never

import msgspec
from msgspec.structs import replace

from schemas.pipelines import (
    PipelineApprovalRefused,
    PipelineApprovalRequired,
    PipelineApproved,
    PipelineDenied,
    PipelineEvent,
    PipelineFailed,
    PipelineHealthCheckStarted,
    PipelineRejected,
    PipelineRequested,
    PipelineRollbackStarted,
    PipelineRolledBack,
    PipelineSpec,
    PipelineStepFinished,
    PipelineStepRollbackStarted,
    PipelineStepRolledBack,
    PipelineStepStarted,
    PipelineSucceeded,
    StepJob,
    resolve_needs,
)
from schemas.secrets import shown_env

PipelineStatus = Literal["running", "rolling_back", "succeeded", "failed", "rejected"]
StepState = Literal["pending", "waiting_approval", "approved", "denied", "running", "succeeded", "failed", "skipped"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "skipped"})
PIPELINE_TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "rejected"})
Role = Literal["run", "health_check", "rollback"]


class StepView(msgspec.Struct, frozen=True, kw_only=True):
    """One row of `pipeline_steps`. Job lists hold every job the step planned so far."""

    pipeline_id: str
    step_id: str
    position: int
    status: StepState = "pending"
    needs: list[str] = []
    batch: int = -1
    nodes: list[str] = []
    jobs: list[StepJob] = []
    health_checks: list[StepJob] = []
    rollbacks: list[StepJob] = []
    approval_requested_at: datetime | None = None
    approval_deadline: datetime | None = None
    approved_by: str | None = None
    denied_by: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None
    rollback_status: Literal["running", "succeeded", "failed"] | None = None
    rollback_reason: str | None = None
    last_seq: int = 0


class PipelineView(msgspec.Struct, frozen=True, kw_only=True):
    """One row of `pipelines`; `steps` are the `pipeline_steps` rows (not a column)."""

    pipeline_id: str
    name: str
    spec: PipelineSpec
    status: PipelineStatus = "running"
    variables: dict[str, str] = {}
    requested_by: str | None = None
    source: str | None = None
    reason: str | None = None
    failed_step: str | None = None
    finish_order: list[str] = []
    rollback_steps: list[str] = []
    rolled_back_steps: list[str] = []
    rollback_failed: list[str] = []
    requested_at: datetime | None = None
    finished_at: datetime | None = None
    first_seq: int = 0
    last_seq: int = 0
    steps: list[StepView] = []

    def step(self, step_id: str) -> StepView | None:
        return next((s for s in self.steps if s.step_id == step_id), None)


# ---------------------------------------------------------------- fold


def evolve_pipeline(view: PipelineView | None, pipeline_id: str, event: PipelineEvent, ts: datetime, seq: int) -> PipelineView | None:
    """Next view of one pipeline; None for an event of a pipeline never requested.

    Events that do not fit the current state (a second `requested`, anything after
    the end, an answer for a step that is not waiting) change only `last_seq`.
    Views are frozen: each step returns a new view.
    """
    if isinstance(event, PipelineRequested):
        return replace(view, last_seq=seq) if view is not None else _requested(pipeline_id, event, ts, seq)
    if view is None:
        # A `requested` that never decoded: the rejection is the pipeline's only record.
        return _rejected_unknown(pipeline_id, event, ts, seq) if isinstance(event, PipelineRejected) else None
    v = replace(view, last_seq=seq)
    if v.status in PIPELINE_TERMINAL:
        return v
    if isinstance(event, StepEvent):
        s = v.step(event.step)
        return v if s is None else _with_step(v, _evolve_step(v, s, event, ts), seq)
    return _evolve_run(v, event, ts)


def _requested(pipeline_id: str, event: PipelineRequested, ts: datetime, seq: int) -> PipelineView:
    needs = resolve_needs(event.spec)
    steps = [
        StepView(pipeline_id=pipeline_id, step_id=s.id, position=i, needs=needs[s.id], last_seq=seq) for i, s in enumerate(event.spec.steps)
    ]
    return PipelineView(
        pipeline_id=pipeline_id,
        name=event.spec.name,
        spec=event.spec,
        variables=dict(event.variables),
        requested_by=event.requested_by,
        source=event.source,
        requested_at=ts,
        first_seq=seq,
        last_seq=seq,
        steps=steps,
    )


def _rejected_unknown(pipeline_id: str, event: PipelineRejected, ts: datetime, seq: int) -> PipelineView:
    return PipelineView(
        pipeline_id=pipeline_id,
        name="",
        spec=PipelineSpec(name="", steps=[]),
        status="rejected",
        reason=event.reason,
        requested_at=ts,
        finished_at=ts,
        first_seq=seq,
        last_seq=seq,
    )


# Events about one step, and those about the whole run.
StepEvent = (
    PipelineApprovalRequired
    | PipelineApproved
    | PipelineDenied
    | PipelineApprovalRefused
    | PipelineStepStarted
    | PipelineHealthCheckStarted
    | PipelineStepFinished
    | PipelineStepRollbackStarted
    | PipelineStepRolledBack
)
RunEvent = PipelineRollbackStarted | PipelineRolledBack | PipelineSucceeded | PipelineFailed | PipelineRejected


def _with_step(v: PipelineView, step: _StepChange, seq: int) -> PipelineView:
    """The view with one step's changes, and the run's (the finish order, the failed step)."""
    new, run = step
    if new is None:
        return v
    steps = list(v.steps)
    steps[new.position] = replace(new, last_seq=seq)
    return replace(v, steps=steps, **run)


_StepChange = tuple[StepView | None, dict[str, Any]]
_NONE: _StepChange = (None, {})


def _evolve_step(v: PipelineView, s: StepView, event: StepEvent, ts: datetime) -> _StepChange:
    match event:
        case PipelineApprovalRequired():
            if s.status != "pending":
                return _NONE
            deadline = ts + timedelta(seconds=event.timeout_s)
            return replace(s, status="waiting_approval", approval_requested_at=ts, approval_deadline=deadline), {}
        case PipelineApproved() | PipelineDenied():
            return _answered(s, event), {}
        case PipelineApprovalRefused():
            # The decider found the answer's author is no approver: the step waits again, same deadline.
            if s.status not in ("approved", "denied"):
                return _NONE
            return replace(s, status="waiting_approval", approved_by=None, denied_by=None, reason=event.reason), {}
        case PipelineStepStarted():
            return _step_started(s, event, ts), {}
        case PipelineHealthCheckStarted():
            if s.status != "running":
                return _NONE
            known = {j.job_id for j in s.health_checks}
            return replace(s, health_checks=[*s.health_checks, *(j for j in event.jobs if j.job_id not in known)]), {}
        case PipelineStepFinished():
            return _step_finished(v, s, event, ts)
        case PipelineStepRollbackStarted():
            return (replace(s, rollback_status="running", rollbacks=list(event.jobs)), {}) if s.rollback_status is None else _NONE
        case PipelineStepRolledBack():
            if s.rollback_status != "running":
                return _NONE
            return replace(s, rollback_status=event.status, rollback_reason=event.reason), {}
        case _:
            assert_never(event)


def _answered(s: StepView, event: PipelineApproved | PipelineDenied) -> StepView | None:
    """The first answer to a waiting gate is taken as given; whether its author may give it is the
    decider's question (it has the operator's policy), answered with `approval_refused` if not."""
    if s.status != "waiting_approval":
        return None
    if isinstance(event, PipelineApproved):
        return replace(s, status="approved", approved_by=event.by, reason=event.reason)
    why = f"denied by {event.by}" + (f": {event.reason}" if event.reason else "")
    return replace(s, status="denied", denied_by=event.by, reason=why)


def _step_started(s: StepView, event: PipelineStepStarted, ts: datetime) -> StepView | None:
    if s.status not in ("pending", "approved", "running"):
        return None
    known = {j.job_id for j in s.jobs}
    return replace(
        s,
        status="running",
        started_at=s.started_at or ts,
        batch=max(s.batch, event.batch),
        nodes=s.nodes or list(event.nodes),
        jobs=[*s.jobs, *(j for j in event.jobs if j.job_id not in known)],
    )


def _step_finished(v: PipelineView, s: StepView, event: PipelineStepFinished, ts: datetime) -> _StepChange:
    if s.status in FINISHED:
        return _NONE
    run: dict[str, Any] = {"finish_order": [*v.finish_order, s.step_id]}
    if event.status == "failed" and v.failed_step is None:
        run["failed_step"] = s.step_id
        run["reason"] = f"step {s.step_id} failed" + (f": {event.reason}" if event.reason else "")
    return replace(s, status=event.status, finished_at=ts, reason=event.reason), run


def _evolve_run(v: PipelineView, event: RunEvent, ts: datetime) -> PipelineView:
    match event:
        case PipelineRollbackStarted():
            return replace(v, status="rolling_back", rollback_steps=list(event.steps), reason=v.reason or event.reason)
        case PipelineRolledBack():
            return replace(v, rolled_back_steps=list(event.steps), rollback_failed=list(event.failed))
        case PipelineSucceeded():
            return replace(v, status="succeeded", finished_at=ts)
        case PipelineFailed():
            return replace(v, status="failed", finished_at=ts, reason=event.reason)
        case PipelineRejected():
            return replace(v, status="rejected", finished_at=ts, reason=event.reason)
        case _:
            assert_never(event)


# ---------------------------------------------------------------- as people read it


class StepJobState(msgspec.Struct, frozen=True, kw_only=True):
    """What the views of a pipeline show of one of its jobs: its status, why, and its node."""

    status: str
    reason: str | None = None
    node: str | None = None


def shown(view: PipelineView, jobs: Mapping[str, StepJobState]) -> PipelineView:
    """The view as `nexus pipeline show`, the API and `nexus pipeline run` show it, with what its
    jobs' own records say (`jobs`, by job id): each step job with the node it ran on; a step
    that named no nodes with those where its jobs ran; and while a step runs, what its jobs wait
    for first in its reason: a job held for approval (with the command that answers it) or
    queued (with why). A running pipeline's reason names the steps that wait so."""

    def placed(planned: list[StepJob]) -> list[StepJob]:
        return [replace(j, node=j.node or (st.node if (st := jobs.get(j.job_id)) else None)) for j in planned]

    steps: list[StepView] = []
    waiting: list[str] = []
    for s in view.steps:
        run = placed(s.jobs)
        reason = s.reason
        if s.status == "running" or s.rollback_status == "running":
            waits = [w for j in (*s.jobs, *s.health_checks, *s.rollbacks) if (w := waiting_note(j.job_id, jobs.get(j.job_id))) is not None]
            if waits:
                more = [f"and {len(waits) - 3} more"] if len(waits) > 3 else []
                reason = "; ".join([*waits[:3], *more, *([s.reason] if s.reason else [])])
                waiting.append(f"step {s.step_id}: {waits[0]}")
        nodes = s.nodes or list(dict.fromkeys(j.node for j in run if j.node))
        steps.append(replace(s, jobs=run, health_checks=placed(s.health_checks), rollbacks=placed(s.rollbacks), nodes=nodes, reason=reason))
    reason = view.reason
    if view.status in ("running", "rolling_back") and waiting:
        reason = "; ".join([*waiting, *([view.reason] if view.reason else [])])
    # Secret values as every view shows them (a job's env too): the mask, not the sealed text.
    spec = replace(view.spec, steps=[replace(s, env=_shown(s.env)) if s.env else s for s in view.spec.steps])
    return replace(view, steps=steps, reason=reason, spec=spec, variables=_shown(view.variables))


def _shown(values: Mapping[str, str]) -> dict[str, str]:
    return {n: str(v) for n, v in shown_env(values).items()}


def requested_only(view: PipelineView, requested: Collection[str]) -> PipelineView:
    """The view with only the step jobs that were requested (`requested`: the ids the log holds a
    job under). A step plans all its jobs when it starts, but with `max_parallel` requests them a
    few at a time, and one that fails early never requests the rest: those are not listed as if
    sent to their node, but counted in the step's reason as not started."""
    steps: list[StepView] = []
    for s in view.steps:
        planned = (*s.jobs, *s.health_checks, *s.rollbacks)
        unsent = [j for j in planned if j.job_id not in requested]
        if not unsent:
            steps.append(s)
            continue
        where = [j.node for j in unsent if j.node]
        note = f"{len(unsent)} job(s) not started" + (" yet" if s.status == "running" else "") + (f" ({', '.join(where)})" if where else "")
        sent = [[j for j in jobs if j.job_id in requested] for jobs in (s.jobs, s.health_checks, s.rollbacks)]
        reason = f"{s.reason}; {note}" if s.reason else note
        steps.append(replace(s, jobs=sent[0], health_checks=sent[1], rollbacks=sent[2], reason=reason))
    return replace(view, steps=steps)


def waiting_note(job_id: str, job: StepJobState | None) -> str | None:
    """What a step job waits for, with what answers it (None: it waits for nothing we can name)."""
    if job is None:
        return None
    if job.status == "approval_required":
        why = f" ({job.reason})" if job.reason else ""
        return f"job {job_id} is held for approval{why}: nexus approve {job_id} (or nexus deny {job_id})"
    if job.status == "queued":
        return f"job {job_id} is queued" + (f": {job.reason}" if job.reason else "")
    return None


# ---------------------------------------------------------------- job ids


def step_job_id(pipeline_id: str, position: int, n: int, role: Role = "run", batch: int = 0) -> str:
    """`<pipeline>-s<position>-<n>`, `...-s<position>-hc-<batch>-<n>`, `...-s<position>-rb-<n>`.

    `n` is the node's index in the step's plan. The suffix grammar makes the id
    unambiguous for any pipeline id (which may itself contain dashes); a pipeline
    id too long to fit 64 characters is shortened with a hash of it.
    """
    if role == "run":
        suffix = f"-s{position}-{n}"
    elif role == "health_check":
        suffix = f"-s{position}-hc-{batch}-{n}"
    else:
        suffix = f"-s{position}-rb-{n}"
    head = pipeline_id
    if len(head) + len(suffix) > 64:
        digest = hashlib.sha256(pipeline_id.encode()).hexdigest()[:10]
        head = f"{pipeline_id[: 64 - len(suffix) - len(digest) - 1]}-{digest}"
    return head + suffix


_STEP_JOB_SUFFIX = re.compile(r".-s[0-9]+-(?:[0-9]+|hc-[0-9]+-[0-9]+|rb-[0-9]+)\Z")


def is_step_job_id(job_id: str) -> bool:
    """Whether `job_id` has the shape `step_job_id` gives a pipeline step's jobs (any pipeline):
    ids the orchestrator alone may request (app.jobs refuses them from a caller)."""
    return _STEP_JOB_SUFFIX.search(job_id) is not None


def of_pipeline(pipeline_id: str, job_id: str) -> bool:
    """Whether `job_id` is shaped as one of the pipeline's step jobs (`step_job_id`), its id
    whole or shortened with its hash; only a view's job lists say which it planned."""
    if not is_step_job_id(job_id):
        return False
    digest = hashlib.sha256(pipeline_id.encode()).hexdigest()[:10]
    return job_id.startswith(f"{pipeline_id}-s") or f"-{digest}-s" in job_id


def pipeline_jobs(view: PipelineView) -> list[str]:
    """Every job id the view names: the JobViews `decide_pipeline` needs."""
    return [j.job_id for s in view.steps for j in (*s.jobs, *s.health_checks, *s.rollbacks)]


def next_deadline(view: PipelineView) -> datetime | None:
    """When the decider must run again even if nothing happens (an approval timing out)."""
    if view.status in PIPELINE_TERMINAL:
        return None
    deadlines = [s.approval_deadline for s in view.steps if s.status == "waiting_approval" and s.approval_deadline]
    return min(deadlines, default=None)
