"""Pipelines: the fold of pipeline events into views, and the decider that moves one on.

`evolve_pipeline` folds `pipeline.*` events into a `PipelineView` (with one
`StepView` per step). `decide_pipeline` looks at that view, the `JobView`s of
the pipeline's jobs and `now`, and returns what to publish next: pipeline events
and `job.requested` for the steps' jobs. Both are pure: no clock, no I/O.

Step jobs are ordinary jobs whose ids are derived from (pipeline, step position,
role, batch, node index) by `step_job_id`. A job id is an idempotency key, so
deciding again after a restart, or on a view that lags behind the log, can only
re-publish a request the bus and the reducer already drop: no step runs twice.

Rules (docs/pipelines.md has the user's version):

- A step starts when all its `needs` ended and its `when` holds (`success`: all
  needs succeeded; `failure`: one of them failed; `always`). Otherwise it is skipped.
- Fail fast: once a step failed, steps not started yet with `when: success` are
  skipped; steps already running finish; `failure`/`always` steps still run.
- `max_parallel`: one `step_started` lists all the step's jobs (of the batch);
  `job.requested` goes out for at most `max_parallel` unfinished jobs at a time.
- Rolling: batches of `batch_size` nodes; after a batch's jobs succeeded its
  health checks run on those nodes; the next batch starts only when the failed
  nodes (job or health check) are within `max_fail_percentage`. Otherwise the
  rollout stops: the step fails, and later batches are never touched.
- A gate's answer counts only from someone the operator's policy lets approve (and, if the
  template names approvers, one of those): `Policy.may_approve`, never the template alone. Any
  other answer is recorded as `approval_refused` with the reason; the step keeps waiting.
- A step's run jobs are judged with the step's health check and rollback (`step_companions`):
  their worst finding counts for the job, so approval is asked before the step changes anything,
  and once: a health check or rollback on a node where the step's run job was approved is not
  held again (`approved_with`).
- When every step ended and one failed, the `rollback` command of each step
  runs on every node where the step's job succeeded (the failed step's included:
  a stopped rollout is undone on the batches already done), one step at a time,
  in reverse order of completion. Then `rolled_back` and `failed`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from orchestrator.core.admission import Companion
from orchestrator.core.pipeline_views import (
    FINISHED,
    PIPELINE_TERMINAL,
    PipelineView,
    Role,
    StepView,
    evolve_pipeline,
    step_job_id,
)
from orchestrator.core.policy import Policy
from orchestrator.core.views import JobView
from schemas import msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import JobRequested
from schemas.limits import MAX_REASON_CHARS, MetaValue
from schemas.pipelines import (
    PipelineApprovalRefused,
    PipelineApprovalRequired,
    PipelineEvent,
    PipelineFailed,
    PipelineHealthCheckStarted,
    PipelineRejected,
    PipelineRollbackStarted,
    PipelineRolledBack,
    PipelineStepFinished,
    PipelineStepRollbackStarted,
    PipelineStepRolledBack,
    PipelineStepStarted,
    PipelineSucceeded,
    StepJob,
    StepSpec,
    spec_refusal,
)

# ---------------------------------------------------------------- decide

ORCHESTRATOR_ROLE = "admin"
"""The role of the identity the orchestrator signs with (core.authorship): a step's job counts
only when its request is from this role."""


@dataclass(frozen=True)
class _Publish:
    """A pipeline event to publish (kept typed as PipelineEvent until the end)."""

    kind: str
    event: PipelineEvent
    msg_id: str


@dataclass(frozen=True)
class _Request:
    job_id: str
    event: JobRequested


_Emit = _Publish | _Request


@dataclass
class _Ctx:
    jobs: Mapping[str, JobView]
    fleet_nodes: Mapping[str, list[str]]
    now: datetime
    policy: Policy
    enforcing: bool
    requester: str | None
    requested: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)

    def known(self, job_id: str) -> bool:
        return job_id in self.jobs or job_id in self.requested

    def foreign(self, job_id: str) -> str | None:
        """Why the job under this step id is not the step's (None: it is). Its id is the
        idempotency key, so a request someone else published first holds it, and ours was
        dropped as a duplicate: that job never counts. Without identities nothing says who
        requested it, and every job counts. The orchestrator's requests name the pipeline's
        requester (an orchestrator that is an admin service) or itself (one that is not): an
        admin service acting for another user (the HTTP API) did not make them."""
        jv = self.jobs.get(job_id)
        if jv is None or not self.enforcing:
            return None
        if jv.requester_role == ORCHESTRATOR_ROLE and jv.requested_by in (self.requester, jv.requester):
            return None
        who = f"{jv.requested_by!r} ({jv.requester_role})" if jv.requester_role else "an unsigned publisher"
        return f"requested by {who}, not by the orchestrator: a foreign request under the step's job id, not counted"

    def ended(self, job_id: str) -> bool:
        jv = self.jobs.get(job_id)
        return jv is not None and (jv.terminal or self.foreign(job_id) is not None)

    def succeeded(self, job_id: str) -> bool:
        jv = self.jobs.get(job_id)
        return jv is not None and jv.status == "succeeded" and self.foreign(job_id) is None

    def failed(self, job_id: str) -> bool:
        return self.ended(job_id) and not self.succeeded(job_id)

    def failure(self, job_id: str) -> str | None:
        """How the job failed the step (None: it did not, or not yet)."""
        jv = self.jobs.get(job_id)
        if jv is None or not self.failed(job_id):
            return None
        return self.foreign(job_id) or str(jv.status) + (f" ({jv.reason})" if jv.reason else "")


def decide_pipeline(
    view: PipelineView | None,
    jobs: Mapping[str, JobView],
    fleet_nodes: Mapping[str, list[str]],
    now: datetime,
    policy: Policy,
    *,
    enforcing: bool,
) -> list[Outgoing]:
    """What to publish next for one pipeline.

    `jobs`: the current JobView of each id in `pipeline_jobs(view)` (missing: not
    requested yet). `fleet_nodes[step_id]`: the live nodes matching a label step's
    selector, needed when that step is about to start (absent: wait; empty: the
    step fails). `policy`: the operator's, which says who may answer a gate.
    `enforcing`: the log's identities are enforced (core.authorship), so a step
    counts only the jobs the orchestrator requested (`JobView.requester_role`
    admin, for the pipeline's requester); a job someone else requested first
    under a step's id fails the step.
    The decision folds its own pipeline events and decides again until nothing
    changes, so one call moves the pipeline as far as it can.
    """
    if view is None:
        return []
    if (rejected := _rejection(view, now)) is not None:
        return [rejected]
    ctx = _Ctx(jobs=jobs, fleet_nodes=fleet_nodes, now=now, policy=policy, enforcing=enforcing, requester=view.requested_by)
    emitted: list[_Emit] = []
    current = view
    for _ in range(10_000):  # each round folds at least one new pipeline event; this only guards a bug
        fresh = _decide_round(current, ctx)
        if not fresh:
            break
        progressed = False
        for e in fresh:
            emitted.append(e)
            if isinstance(e, _Request):
                ctx.requested.add(e.job_id)
                ctx.seen.add(msgids.job_request(e.job_id))
            else:
                ctx.seen.add(e.msg_id)
                nxt = evolve_pipeline(current, current.pipeline_id, e.event, now, current.last_seq)
                assert nxt is not None
                current = nxt
                progressed = True
        if not progressed:
            break
    return [_outgoing(view.pipeline_id, e) for e in emitted]


def _rejection(v: PipelineView, now: datetime) -> Outgoing | None:
    """`rejected` for a pipeline whose spec cannot run (schemas.pipelines.spec_refusal, the check
    `nexus pipeline run` makes on the template): a step that needs itself, a cycle... would
    otherwise wait forever. Asked only before anything of it happened: a pipeline that moved on
    was accepted (by this check, or by a release before it)."""
    if v.status != "running" or any(s.status != "pending" for s in v.steps):
        return None
    why = spec_refusal(v.spec)
    if why is None:
        return None
    ev = PipelineRejected(ts=now, code="invalid_spec", reason=f"the pipeline cannot run: {why}"[:MAX_REASON_CHARS])
    return Outgoing(subjects.pipeline(v.pipeline_id, "rejected"), ev, msgids.pipeline(v.pipeline_id, "rejected"))


def _outgoing(pipeline_id: str, e: _Emit) -> Outgoing:
    if isinstance(e, _Request):
        return Outgoing(subjects.job(e.job_id, "requested"), e.event, msgids.job_request(e.job_id))
    return Outgoing(subjects.pipeline(pipeline_id, e.kind), e.event, e.msg_id)


def _decide_round(v: PipelineView, ctx: _Ctx) -> list[_Emit]:
    """One round: finish what can finish, else start what can start, else end the pipeline."""
    if v.status in PIPELINE_TERMINAL:
        return []
    if v.status == "rolling_back":
        return _fresh(_rollback(v, ctx), ctx)
    failing = v.failed_step is not None
    for phase in (_progress_step, _start_step):
        emits = [e for s in v.steps for e in phase(v, s, v.spec.steps[s.position], failing, ctx)]
        emits = _fresh(emits, ctx)
        if emits:
            return emits
    if all(s.status in FINISHED for s in v.steps):
        if not failing:
            return _fresh([_pipe(v, "succeeded", PipelineSucceeded(ts=ctx.now))], ctx)
        return _fresh(_end_failed(v, ctx), ctx)
    return []


def _fresh(emits: list[_Emit], ctx: _Ctx) -> list[_Emit]:
    return [e for e in emits if (e.msg_id if isinstance(e, _Publish) else msgids.job_request(e.job_id)) not in ctx.seen]


def _pipe(v: PipelineView, kind: str, event: PipelineEvent, *key: int | str) -> _Publish:
    return _Publish(kind, event, msgids.pipeline(v.pipeline_id, kind, *key))


def _finish(v: PipelineView, s: StepView, status: Literal["succeeded", "failed", "skipped"], reason: str | None, now: datetime) -> _Publish:
    return _pipe(v, "step_finished", PipelineStepFinished(ts=now, step=s.step_id, status=status, reason=reason), s.step_id)


def _start_step(v: PipelineView, s: StepView, spec: StepSpec, failing: bool, ctx: _Ctx) -> list[_Emit]:
    if s.status not in ("pending", "approved"):
        return []
    if s.status == "approved" and (refused := _refusal(v, s, spec, ctx)) is not None:
        return [refused]
    if s.status == "pending":
        states = {n: st.status for n in s.needs if (st := v.step(n)) is not None}
        if any(state not in FINISHED for state in states.values()):
            return []
        why_not = _why_not_run(spec, states, v.failed_step if failing else None)
        if why_not is not None:
            return [_finish(v, s, "skipped", why_not, ctx.now)]
        if spec.approval:
            approvers = gate_approvers(ctx.policy, v.spec.approvers)
            if v.spec.approvers and not approvers:
                named = ", ".join(v.spec.approvers)
                return [
                    _finish(v, s, "failed", f"none of the pipeline's approvers ({named}) may approve under the operator's policy", ctx.now)
                ]
            ev = PipelineApprovalRequired(ts=ctx.now, step=s.step_id, timeout_s=spec.approval_timeout_s, approvers=approvers)
            return [_pipe(v, "approval_required", ev, s.step_id)]
    elif failing and spec.when == "success":
        return [_finish(v, s, "skipped", f"step {v.failed_step} failed", ctx.now)]
    targets: list[str | None]
    if spec.nodes:
        targets = list(spec.nodes)
    elif spec.labels:
        found = ctx.fleet_nodes.get(s.step_id)
        if found is None:
            return []  # the orchestrator has not resolved the selector yet
        targets = [*sorted(set(found))]
        if not targets:
            sel = ", ".join(f"{k}={val}" for k, val in sorted(spec.labels.items()))
            return [_finish(v, s, "failed", f"no live node with tool {spec.tool!r} matches labels {sel}", ctx.now)]
    else:
        targets = [None]
    jobs = [StepJob(job_id=step_job_id(v.pipeline_id, s.position, n), node=t) for n, t in enumerate(targets)]
    first = jobs[: _batch_size(spec, len(jobs))]
    nodes = [t for t in targets if t is not None]
    return [_pipe(v, "step_started", PipelineStepStarted(ts=ctx.now, step=s.step_id, batch=0, jobs=first, nodes=nodes), s.step_id, 0)]


def gate_approvers(policy: Policy, named: list[str]) -> list[str]:
    """Who may answer a gate, for the record: the template's names that the policy lets approve,
    else the policy's approvers (empty: whoever the policy's roles allow, or anyone by default)."""
    return [a for a in named if policy.may_approve(a)] if named else list(policy.approvers)


def _refusal(v: PipelineView, s: StepView, spec: StepSpec, ctx: _Ctx) -> _Publish | None:
    """`approval_refused` when the step's answer came from someone who may not give it."""
    decision: Literal["approved", "denied"] = "approved" if s.status == "approved" else "denied"
    by = s.approved_by if decision == "approved" else s.denied_by
    if by is None or (ctx.policy.may_approve(by) and (not v.spec.approvers or by in v.spec.approvers)):
        return None
    if not ctx.policy.may_approve(by):
        who = ", ".join(ctx.policy.approvers) or "users whose role may approve"
        why = f"{by!r} is not an approver in the operator's policy (approvers: {who})"
    else:
        why = f"{by!r} is not among this pipeline's approvers ({', '.join(v.spec.approvers)})"
    ev = PipelineApprovalRefused(ts=ctx.now, step=s.step_id, by=by, decision=decision, reason=f"{decision} by {by!r} refused: {why}")
    return _pipe(v, "approval_refused", ev, s.step_id, s.last_seq)


def _why_not_run(spec: StepSpec, states: Mapping[str, str], failed_step: str | None) -> str | None:
    if spec.when == "always":
        return None
    if spec.when == "failure":
        return None if "failed" in states.values() else "no step it needs failed"
    if failed_step is not None:
        return f"step {failed_step} failed"
    bad = [f"{n} {st}" for n, st in states.items() if st != "succeeded"]
    return f"needs did not succeed: {', '.join(bad)}" if bad else None


def _batch_size(spec: StepSpec, total: int) -> int:
    return spec.batch_size if spec.strategy == "rolling" else max(total, 1)


def _progress_step(v: PipelineView, s: StepView, spec: StepSpec, failing: bool, ctx: _Ctx) -> list[_Emit]:
    if s.status == "waiting_approval":
        return _waiting_approval(v, s, spec, failing, ctx.now)
    if s.status == "denied":
        refused = _refusal(v, s, spec, ctx)
        return [refused if refused is not None else _finish(v, s, "failed", s.reason, ctx.now)]
    if s.status != "running":
        return []
    return _running(v, s, spec, ctx)


def _waiting_approval(v: PipelineView, s: StepView, spec: StepSpec, failing: bool, now: datetime) -> list[_Emit]:
    if failing and spec.when == "success":
        return [_finish(v, s, "skipped", f"step {v.failed_step} failed", now)]
    if s.approval_deadline is not None and now >= s.approval_deadline:
        return [_finish(v, s, "failed", f"not approved within {spec.approval_timeout_s:g}s", now)]
    return []


@dataclass(frozen=True)
class _Batch:
    """Where a running step is in its plan: nodes `lo` to `hi` of `total`, batch `index` of `count`."""

    total: int
    size: int
    count: int
    index: int
    lo: int
    hi: int

    @classmethod
    def of(cls, s: StepView, spec: StepSpec) -> _Batch:
        total = max(len(s.nodes), 1)
        size = _batch_size(spec, total)
        return cls(total, size, -(-total // size), s.batch, s.batch * size, min(total, (s.batch + 1) * size))

    def exceeded(self, failed: Mapping[int, str], spec: StepSpec, intruded: bool) -> bool:
        """Too many nodes failed, or a job was foreign (`intruded`): that fails the step whatever
        max_fail_percentage allows, so a forged request is never a tolerated failure."""
        return intruded or len(failed) * 100 > spec.max_fail_percentage * self.total


def _running(v: PipelineView, s: StepView, spec: StepSpec, ctx: _Ctx) -> list[_Emit]:
    """A running step: keep its batch's jobs requested, then health checks, then the next batch or the verdict."""
    b = _Batch.of(s, spec)
    batch_jobs = s.jobs[b.lo : b.hi]
    failed = _failed_nodes(v, s, b.size, ctx)
    exceeded = b.exceeded(failed, spec, _intruded(s, ctx))
    emits = [] if exceeded else _top_up(v, s, spec, batch_jobs, s.jobs, "run", s.batch, ctx)
    if any(ctx.known(j.job_id) and not ctx.ended(j.job_id) for j in batch_jobs):
        return emits
    if not exceeded and not all(ctx.ended(j.job_id) for j in batch_jobs):
        return emits
    ok = [(b.lo + i, j) for i, j in enumerate(batch_jobs) if ctx.succeeded(j.job_id)]
    if spec.health_check and ok and not exceeded:
        emits, checked = _health_checks(v, s, spec, ok, emits, ctx)
        if not checked:
            return emits
        failed = _failed_nodes(v, s, b.size, ctx)
        exceeded = b.exceeded(failed, spec, _intruded(s, ctx))
    return [*emits, *_batch_done(v, s, spec, b, failed, exceeded, ctx.now)]


def _health_checks(
    v: PipelineView, s: StepView, spec: StepSpec, ok: list[tuple[int, StepJob]], emits: list[_Emit], ctx: _Ctx
) -> tuple[list[_Emit], bool]:
    """The events for the batch's health checks, and whether every one has ended."""
    checks = [StepJob(job_id=step_job_id(v.pipeline_id, s.position, n, "health_check", s.batch), node=_ran_on(j, ctx)) for n, j in ok]
    recorded = {h.job_id for h in s.health_checks}
    if any(h.job_id not in recorded for h in checks):
        ev = PipelineHealthCheckStarted(ts=ctx.now, step=s.step_id, batch=s.batch, jobs=checks)
        return [_pipe(v, "health_check_started", ev, s.step_id, s.batch)], False
    emits = [*emits, *_top_up(v, s, spec, checks, checks, "health_check", s.batch, ctx)]
    return emits, all(ctx.ended(h.job_id) for h in checks)


def _batch_done(
    v: PipelineView, s: StepView, spec: StepSpec, b: _Batch, failed: Mapping[int, str], exceeded: bool, now: datetime
) -> list[_Emit]:
    if exceeded:
        return [_finish(v, s, "failed", _failure_reason(failed, b.total, spec, s.batch, b.count), now)]
    if s.batch + 1 < b.count:
        nxt = [
            StepJob(job_id=step_job_id(v.pipeline_id, s.position, n), node=s.nodes[n] if s.nodes else None)
            for n in range(b.hi, min(b.total, b.hi + b.size))
        ]
        ev_next = PipelineStepStarted(ts=now, step=s.step_id, batch=s.batch + 1, jobs=nxt, nodes=list(s.nodes))
        return [_pipe(v, "step_started", ev_next, s.step_id, s.batch + 1)]
    note = None
    if failed:
        note = f"{len(failed)} of {b.total} node(s) failed, within max_fail_percentage {spec.max_fail_percentage:g}"
    return [_finish(v, s, "succeeded", note, now)]


def _ran_on(j: StepJob, ctx: _Ctx) -> str | None:
    jv = ctx.jobs.get(j.job_id)
    return jv.node if jv is not None and jv.node else j.node


def _on(node: str | None) -> str:
    """` on NODE`, or nothing for a job that never got a node (rejected, denied before placement)."""
    return f" on {node}" if node else ""


def _failed_nodes(v: PipelineView, s: StepView, size: int, ctx: _Ctx) -> dict[int, str]:
    """Plan index -> what failed there (its job, else its health check)."""
    out: dict[int, str] = {}
    checks = {h.job_id for h in s.health_checks}
    for n, j in enumerate(s.jobs):
        hc = step_job_id(v.pipeline_id, s.position, n, "health_check", n // size)
        for job_id, what in ((j.job_id, "job"), (hc, "health check")):
            why = ctx.failure(job_id) if what == "job" or job_id in checks else None
            if why is not None:
                out.setdefault(n, f"{what} {job_id}{_on(_ran_on(j, ctx))} {why}")
    return out


def _intruded(s: StepView, ctx: _Ctx) -> bool:
    return any(ctx.foreign(j.job_id) is not None for j in (*s.jobs, *s.health_checks))


def _failure_reason(failed: Mapping[int, str], total: int, spec: StepSpec, batch: int, batches: int) -> str:
    shown = [failed[n] for n in sorted(failed)[:3]] + (["..."] if len(failed) > 3 else [])
    reason = "; ".join(shown)
    if total > 1:
        reason = f"{len(failed)} of {total} node(s) failed (max_fail_percentage {spec.max_fail_percentage:g}): {reason}"
    if spec.strategy == "rolling" and batch + 1 < batches:
        reason += f"; rollout stopped after batch {batch + 1} of {batches}"
    return reason


def _top_up(
    v: PipelineView, s: StepView, spec: StepSpec, candidates: list[StepJob], pool: list[StepJob], role: Role, batch: int, ctx: _Ctx
) -> list[_Emit]:
    """Requests for the candidates not requested yet, keeping at most `max_parallel` of `pool` unfinished."""
    missing = [j for j in candidates if not ctx.known(j.job_id)]
    if spec.max_parallel is not None:
        active = sum(1 for j in pool if ctx.known(j.job_id) and not ctx.ended(j.job_id))
        missing = missing[: max(0, spec.max_parallel - active)]
    return [_request(v, s, spec, j, role, batch, ctx.now) for j in missing]


def _request(v: PipelineView, s: StepView, spec: StepSpec, j: StepJob, role: Role, batch: int, now: datetime) -> _Request:
    command = {"run": spec.command, "health_check": spec.health_check, "rollback": spec.rollback}[role]
    assert command is not None
    metadata: dict[str, MetaValue] = {"pipeline": v.pipeline_id, "step": s.step_id, "role": role}
    if role != "rollback":
        metadata["batch"] = batch
    ev = JobRequested(
        ts=now,
        command=command,
        tool=spec.tool,
        node=j.node,
        env=dict(spec.env),
        working_dir=spec.working_dir,
        timeout_s=spec.timeout_s,
        tests=list(spec.tests) if role == "run" else [],
        metadata=metadata,
        requested_by=v.requested_by,
        tty=spec.tty,
    )
    return _Request(j.job_id, ev)


def step_companions(view: PipelineView | None, metadata: Mapping[str, MetaValue]) -> list[Companion]:
    """The commands a step's run job comes with, judged with it: the step's health check and
    rollback (they run later on the same nodes, so approval is asked before the step starts).
    Empty for any other job."""
    name = metadata.get("step")
    step = view.step(name) if view is not None and isinstance(name, str) and metadata.get("role") == "run" else None
    if view is None or step is None:
        return []
    return spec_companions(view.spec.steps[step.position])


def approved_with(
    view: PipelineView | None, job: JobView, load: Callable[[str], JobView | None], *, enforcing: bool
) -> JobView | None:
    """The approved run job of the step whose approval covered `job`, that step's health check or
    rollback on the same node: the run job was judged with them (`step_companions`), and a person
    approved all three at once. None when `job` is not such a job (a foreign request under its id
    included, when identities are enforced: it must be the orchestrator's, as `_Ctx.foreign` says)."""
    role, name = job.metadata.get("role"), job.metadata.get("step")
    step = view.step(name) if view is not None and isinstance(name, str) else None
    if view is None or step is None or role not in ("health_check", "rollback") or job.requested_node is None:
        return None
    spec = view.spec.steps[step.position]
    if job.command != (spec.health_check if role == "health_check" else spec.rollback) or job.tool != spec.tool:
        return None
    if enforcing and job.requester_role != ORCHESTRATOR_ROLE:
        return None
    for planned in step.jobs:
        run = load(planned.job_id)
        mine = run is not None and (not enforcing or run.requester_role == ORCHESTRATOR_ROLE)
        if mine and run is not None and run.node == job.requested_node and run.approved_by is not None:
            return run
    return None


def spec_companions(spec: StepSpec) -> list[Companion]:
    """The step's health check and rollback, as its run jobs are judged with them."""
    found = [("health check", spec.health_check), ("rollback", spec.rollback)]
    return [Companion(role=role, command=command) for role, command in found if command]


def _end_failed(v: PipelineView, ctx: _Ctx) -> list[_Emit]:
    reason = v.reason or "a step failed"
    order = []
    for name in reversed(v.finish_order):
        s = v.step(name)
        if s is not None and v.spec.steps[s.position].rollback and any(ctx.succeeded(j.job_id) for j in s.jobs):
            order.append(name)
    if not order:
        return [_pipe(v, "failed", PipelineFailed(ts=ctx.now, reason=reason))]
    return [_pipe(v, "rollback_started", PipelineRollbackStarted(ts=ctx.now, steps=order, reason=reason))]


def _rollback(v: PipelineView, ctx: _Ctx) -> list[_Emit]:
    """One step at a time, in `rollback_steps` order; then `rolled_back` and `failed`."""
    now = ctx.now
    for name in v.rollback_steps:
        s = v.step(name)
        if s is None:
            continue
        spec = v.spec.steps[s.position]
        if s.rollback_status is None:
            jobs = [
                StepJob(job_id=step_job_id(v.pipeline_id, s.position, n, "rollback"), node=_ran_on(j, ctx))
                for n, j in enumerate(s.jobs)
                if ctx.succeeded(j.job_id)
            ]
            return [_pipe(v, "step_rollback_started", PipelineStepRollbackStarted(ts=now, step=name, jobs=jobs), name)]
        if s.rollback_status == "running":
            emits = _top_up(v, s, spec, s.rollbacks, s.rollbacks, "rollback", 0, ctx)
            if not all(ctx.ended(j.job_id) for j in s.rollbacks):
                return emits
            bad = [f"{j.job_id}{_on(_ran_on(j, ctx))} {why}" for j in s.rollbacks if (why := ctx.failure(j.job_id)) is not None]
            ev = PipelineStepRolledBack(ts=now, step=name, status="failed" if bad else "succeeded", reason="; ".join(bad) if bad else None)
            return [*emits, _pipe(v, "step_rolled_back", ev, name)]
    done = [n for n in v.rollback_steps if (s := v.step(n)) is not None and s.rollback_status == "succeeded"]
    bad_steps = [n for n in v.rollback_steps if (s := v.step(n)) is not None and s.rollback_status == "failed"]
    reason = v.reason or "a step failed"
    if done:
        reason += f"; rolled back {', '.join(done)}"
    if bad_steps:
        reason += f"; rollback FAILED for {', '.join(bad_steps)}"
    return [
        _pipe(v, "rolled_back", PipelineRolledBack(ts=now, steps=done, failed=bad_steps)),
        _pipe(v, "failed", PipelineFailed(ts=now, reason=reason)),
    ]
