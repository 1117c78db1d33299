"""Pipelines on the wire: the resolved spec of a pipeline and its lifecycle events.

A pipeline is a graph of steps; every step runs ordinary jobs (`job.requested`
with `metadata.pipeline` / `metadata.step`). Its events are published on
`nexus.evt.pipeline.<pipeline_id>.<kind>` with `type` `pipeline.<kind>`:

    requested            someone submitted the pipeline (the resolved spec, its variables)
    rejected             the orchestrator refused it: the request does not decode, or its spec cannot run
    approval_required    a gated step's needs are met; it waits for `approved` or `denied`
    approved / denied    an answer for one step (it counts only from an approver in the policy)
    approval_refused     an answer from someone else: recorded with the reason; the step keeps waiting
    step_started         a step (or, when rolling, one batch of it) started; its jobs
    health_check_started the health checks of one batch of a step started; their jobs
    step_finished        a step ended: succeeded, failed or skipped
    rollback_started     the pipeline failed; these steps are undone, in this order
    step_rollback_started / step_rolled_back   one step's rollback jobs, and how they ended
    rolled_back          every rollback ended (which steps rolled back, which failed)
    succeeded / failed   the pipeline ended

The spec in `pipeline.requested` is resolved: `needs` is always a list there
(see `resolve_needs`), variables are substituted.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.envelope import Envelope, Id
from schemas.limits import MAX_PIPELINE_STEPS, MAX_REASON_CHARS, Command, Env, Int64, Name, Names, Path, Text, TimeoutS
from schemas.values import Tests

StepStatus = Literal["succeeded", "failed", "skipped"]


class StepSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One step: a command run as one job, or as one job per node (fan-out)."""

    id: Id
    command: Command
    tool: Name = "bash"
    nodes: list[Id] = []
    """Fan-out: one job on each of these nodes."""
    labels: dict[str, str] = {}
    """Fan-out: one job on every live node with these labels (resolved when the step starts)."""
    max_parallel: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    """At most this many of the step's jobs unfinished at a time."""
    needs: list[Id] | None = None
    """Steps this one depends on. None: the previous step in the spec; []: none."""
    when: Literal["success", "failure", "always"] = "success"
    """Run if every need succeeded / if any need failed / once the needs ended."""
    tests: Tests = []
    timeout_s: TimeoutS | None = None
    rollback: Command | None = None
    """Command that undoes this step, run on the nodes where the step succeeded."""
    strategy: Literal["parallel", "rolling"] = "parallel"
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1
    """Rolling: nodes per batch."""
    health_check: Command | None = None
    """Command run on each node of a batch after its jobs succeeded; a failure counts as the node failing."""
    max_fail_percentage: Annotated[float, msgspec.Meta(ge=0, le=100)] = 0
    """Percentage of the step's nodes allowed to fail before the step fails (and a rollout stops)."""
    approval: bool = False
    """Wait for `approved` before starting."""
    approval_timeout_s: TimeoutS = 3600
    env: Env = {}
    working_dir: Path | None = None
    tty: bool = True
    """False: the step's jobs run with plain pipes instead of a PTY (stdout and stderr kept apart)."""


class PipelineSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A pipeline as compiled from a template: named steps with their dependencies."""

    name: Name
    steps: Annotated[list[StepSpec], msgspec.Meta(max_length=MAX_PIPELINE_STEPS)]
    approvers: Names = []
    """Narrows who may approve gated steps to these of the policy's approvers; it never adds one
    (the operator's policy file decides who approves, not the submitted template)."""
    description: Text = ""


def resolve_needs(spec: PipelineSpec) -> dict[str, list[str]]:
    """Each step's dependencies, with the sequential default applied: a step whose
    `needs` is None depends on the step before it in the spec."""
    out: dict[str, list[str]] = {}
    for i, step in enumerate(spec.steps):
        if step.needs is not None:
            out[step.id] = list(step.needs)
        else:
            out[step.id] = [spec.steps[i - 1].id] if i > 0 else []
    return out


def with_resolved_needs(spec: PipelineSpec) -> PipelineSpec:
    """The same spec with every `needs` written out."""
    needs = resolve_needs(spec)
    steps = [msgspec.structs.replace(s, needs=needs[s.id]) for s in spec.steps]
    return msgspec.structs.replace(spec, steps=steps)


class SpecProblem(msgspec.Struct, frozen=True, kw_only=True):
    """Something wrong with a spec: `step` is the index of the step it concerns,
    `field` the field (e.g. `needs`) and `item` the index inside a list field."""

    message: str
    step: Int64 | None = None
    field: str | None = None
    item: Int64 | None = None


def spec_problems(spec: PipelineSpec) -> list[SpecProblem]:
    """Structural problems msgspec cannot see: duplicate ids, unknown or cyclic
    needs, contradictory fields. Empty when the spec can run."""
    problems: list[SpecProblem] = []
    if not spec.steps:
        problems.append(SpecProblem(message="a pipeline needs at least one step"))
    seen: dict[str, int] = {}
    for i, step in enumerate(spec.steps):
        if step.id in seen:
            problems.append(SpecProblem(message=f"duplicate step id {step.id!r} (also step {seen[step.id] + 1})", step=i, field="id"))
        seen.setdefault(step.id, i)
        if not step.command.strip():
            problems.append(SpecProblem(message="command is empty", step=i, field="command"))
        if step.nodes and step.labels:
            problems.append(SpecProblem(message="give either nodes or labels, not both", step=i, field="labels"))
        listed: set[str] = set()
        for j, node in enumerate(step.nodes):
            if node in listed:
                problems.append(SpecProblem(message=f"node {node!r} is listed twice", step=i, field="nodes", item=j))
            listed.add(node)
        if step.strategy != "rolling" and step.batch_size != 1:
            problems.append(SpecProblem(message="batch_size applies to strategy: rolling only", step=i, field="batch_size"))
        if not step.approval and step.approval_timeout_s != 3600:
            problems.append(SpecProblem(message="approval_timeout_s is set but approval is false", step=i, field="approval_timeout_s"))
    needs = resolve_needs(spec)
    for i, step in enumerate(spec.steps):
        given = step.needs or []
        for j, need in enumerate(given):
            if need == step.id:
                problems.append(SpecProblem(message=f"step {step.id!r} needs itself", step=i, field="needs", item=j))
            elif need not in seen:
                problems.append(SpecProblem(message=f"needs unknown step {need!r}", step=i, field="needs", item=j))
            elif need in given[:j]:
                problems.append(SpecProblem(message=f"{need!r} is listed twice", step=i, field="needs", item=j))
        if step.when == "failure" and not needs[step.id]:
            message = "when: failure needs at least one step in needs (it runs when one of them failed)"
            problems.append(SpecProblem(message=message, step=i, field="when"))
    if not problems:
        cycle = find_cycle(needs)
        if cycle:
            first = next(i for i, s in enumerate(spec.steps) if s.id == cycle[0])
            problems.append(SpecProblem(message="dependency cycle: " + " -> ".join(cycle), step=first, field="needs"))
    return problems


def spec_refusal(spec: PipelineSpec) -> str | None:
    """Why the spec cannot run, in one text (None: it can): `spec_problems`, each named by its
    step and field as a template's errors are. The orchestrator rejects such a pipeline."""
    said = []
    for p in spec_problems(spec):
        where = f"step {spec.steps[p.step].id}: " if p.step is not None else ""
        said.append(where + (f"{p.field}: " if p.field else "") + p.message)
    return "; ".join(said)[:MAX_REASON_CHARS] if said else None


def find_cycle(needs: dict[str, list[str]]) -> list[str]:
    """A dependency cycle as [a, b, ..., a] (a needs b ...), or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for dep in needs.get(node, []):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep in needs and dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for start in needs:
        if start not in state:
            found = visit(start)
            if found:
                return found
    return []


# ---------------------------------------------------------------- events


class StepJob(msgspec.Struct, frozen=True, kw_only=True):
    """One job of a step: its (deterministic) id and the node it is pinned to, if any."""

    job_id: Id
    node: Id | None = None


class PipelineRequested(Envelope, frozen=True, kw_only=True, tag="pipeline.requested"):
    """A pipeline was submitted. The pipeline id (in the subject) is the idempotency key."""

    claims_its_id = True

    spec: PipelineSpec
    variables: dict[str, str] = msgspec.field(default_factory=dict)
    requested_by: str | None = None
    source: str | None = None
    """Where the spec came from, e.g. the template's file name."""


class PipelineApprovalRequired(Envelope, frozen=True, kw_only=True, tag="pipeline.approval_required"):
    """A gated step is ready; it waits up to `timeout_s` for `approved` or `denied`."""

    step: Id
    timeout_s: float
    approvers: list[str] = msgspec.field(default_factory=list)


class PipelineApproved(Envelope, frozen=True, kw_only=True, tag="pipeline.approved"):
    step: Id
    by: str
    reason: str | None = None


class PipelineDenied(Envelope, frozen=True, kw_only=True, tag="pipeline.denied"):
    step: Id
    by: str
    reason: str | None = None


class PipelineApprovalRefused(Envelope, frozen=True, kw_only=True, tag="pipeline.approval_refused"):
    """An answer at a gate from someone the operator's policy does not let approve it
    (`by`, `decision`: what they answered). It changes nothing: the step waits on."""

    step: Id
    by: str
    decision: Literal["approved", "denied"]
    reason: str


class PipelineStepStarted(Envelope, frozen=True, kw_only=True, tag="pipeline.step_started"):
    """A step started (parallel: `batch` 0, all its jobs) or one batch of a rolling step did.

    `nodes` is the step's whole plan, every target node in rollout order (empty
    for a step on any node); it is fixed when the step starts. With `max_parallel`
    the jobs listed here are requested a few at a time.
    """

    step: Id
    batch: Int64 = 0
    jobs: list[StepJob]
    nodes: list[Id] = msgspec.field(default_factory=list)


class PipelineHealthCheckStarted(Envelope, frozen=True, kw_only=True, tag="pipeline.health_check_started"):
    """The health check jobs of one batch, one per node whose job succeeded."""

    step: Id
    batch: Int64
    jobs: list[StepJob]


class PipelineStepFinished(Envelope, frozen=True, kw_only=True, tag="pipeline.step_finished"):
    step: Id
    status: StepStatus
    reason: str | None = None


class PipelineRollbackStarted(Envelope, frozen=True, kw_only=True, tag="pipeline.rollback_started"):
    """The pipeline failed; `steps` are rolled back one after the other, in this order."""

    steps: list[Id]
    reason: str


class PipelineStepRollbackStarted(Envelope, frozen=True, kw_only=True, tag="pipeline.step_rollback_started"):
    """One step's rollback command, as one job on each node where the step succeeded."""

    step: Id
    jobs: list[StepJob]


class PipelineStepRolledBack(Envelope, frozen=True, kw_only=True, tag="pipeline.step_rolled_back"):
    step: Id
    status: Literal["succeeded", "failed"]
    reason: str | None = None


class PipelineRolledBack(Envelope, frozen=True, kw_only=True, tag="pipeline.rolled_back"):
    """Every rollback ended: `steps` rolled back, `failed` did not (their rollback failed)."""

    steps: list[Id]
    failed: list[Id] = msgspec.field(default_factory=list)


class PipelineSucceeded(Envelope, frozen=True, kw_only=True, tag="pipeline.succeeded"):
    pass


class PipelineFailed(Envelope, frozen=True, kw_only=True, tag="pipeline.failed"):
    reason: str


class PipelineRejected(Envelope, frozen=True, kw_only=True, tag="pipeline.rejected"):
    """The pipeline will not run: `code` `invalid_payload` (its `requested` does not decode; `raw`
    holds the start of it) or `invalid_spec` (`spec_problems` found something). `reason` is for people."""

    code: str
    reason: str
    raw: str | None = None


PipelineEvent = (
    PipelineRequested
    | PipelineApprovalRequired
    | PipelineApproved
    | PipelineDenied
    | PipelineApprovalRefused
    | PipelineStepStarted
    | PipelineHealthCheckStarted
    | PipelineStepFinished
    | PipelineRollbackStarted
    | PipelineStepRollbackStarted
    | PipelineStepRolledBack
    | PipelineRolledBack
    | PipelineSucceeded
    | PipelineFailed
    | PipelineRejected
)
