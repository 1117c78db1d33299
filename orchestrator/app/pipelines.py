"""Pipeline use cases: run one (the same request from a CLI file or an API body) and follow it."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Literal

import msgspec

from bus.errors import StaleDecision
from orchestrator.app.errors import NoSuchPipeline, NoSuchStep, PipelineExists, WrongState
from orchestrator.app.jobs import ANONYMOUS, DecisionAnswer, record_name, sealed_env
from orchestrator.app.refusals import refuse_too_large
from orchestrator.app.rows import decoded
from orchestrator.client import NexusClient, Rows
from orchestrator.core.pipeline_views import PipelineView, StepJobState, of_pipeline, pipeline_jobs, requested_only, shown
from orchestrator.vetting import Vetting, vetted
from schemas import msgids, subjects
from schemas.envelope import Outgoing
from schemas.errors import InvalidSubject
from schemas.pipelines import (
    PipelineApprovalRefused,
    PipelineApprovalRequired,
    PipelineApproved,
    PipelineDenied,
    PipelineFailed,
    PipelineRequested,
    PipelineSpec,
    PipelineStepFinished,
    PipelineStepStarted,
    PipelineSucceeded,
)
from schemas.records import Record
from schemas.secrets import OrchestratorKey, Redaction, is_sealed


def new_pipeline_id() -> str:
    return f"p-{int(time.time() * 1000):x}-{secrets.token_hex(2)}"


class RunPipeline(msgspec.Struct, frozen=True, kw_only=True):
    """Run a compiled template. `source` says where it came from (a file name, `api`)."""

    spec: PipelineSpec
    variables: dict[str, str] = {}
    pipeline_id: str | None = None
    requested_by: str = ANONYMOUS
    source: str | None = None


def pipeline_id_of(cmd: RunPipeline) -> str:
    return subjects.check_id(cmd.pipeline_id or new_pipeline_id(), "pipeline id")


def pipeline_request(
    cmd: RunPipeline, now: datetime | None = None, key: OrchestratorKey | None = None, requester: str | None = None
) -> PipelineRequested:
    """The one builder of a pipeline's `requested` event. Secret values in the steps' env and
    in the template's variables are sealed to the orchestrator's `key`, as a job's are
    (app.jobs.sealed_env), for `requester` (app.jobs.record_name; by default the one it claims),
    who is also the requester of its steps' jobs: the step's jobs carry them sealed, and the node
    gets them sealed."""
    requester = requester or cmd.requested_by
    steps = [msgspec.structs.replace(s, env=sealed_env(s.env, {}, key, requester=requester)) if s.env else s for s in cmd.spec.steps]
    spec = msgspec.structs.replace(cmd.spec, steps=steps)
    # A variable is secret by its name, or by where it goes: into a secret env entry of a step
    # (`API_TOKEN: ${mytok}`), whose value is sealed, so it must not stay in clear beside it.
    redaction = Redaction(patterns=tuple(key.redacted_vars)) if key is not None else Redaction()
    secret_values = [s.env[n] for s in cmd.spec.steps for n in redaction.clear_secrets(s.env)]
    feeding = {n: v for n, v in cmd.variables.items() if v and any(v in secret for secret in secret_values)}
    variables = sealed_env(cmd.variables, feeding, key, requester=requester)
    return PipelineRequested(ts=now, spec=spec, variables=variables, requested_by=cmd.requested_by, source=cmd.source)


async def request_for(client: NexusClient, cmd: RunPipeline, now: datetime | None = None) -> PipelineRequested:
    """`pipeline_request` with the orchestrator's key fetched when there is env or variables to seal."""
    needs_key = bool(cmd.variables) or any(s.env for s in cmd.spec.steps)
    return pipeline_request(cmd, now, await client.sealing_key() if needs_key else None, record_name(client, cmd.requested_by))


class PipelineSubmitted(msgspec.Struct, frozen=True, kw_only=True):
    pipeline_id: str
    seq: int
    created: bool = True


async def submit(client: NexusClient, pipeline_id: str, req: PipelineRequested) -> PipelineSubmitted:
    """Store the request; the pipeline id is the idempotency key. The same id with the same
    request again is the same pipeline (`created`: false); with a different one it is refused
    (PipelineExists), as a job's id is: else the caller would follow the old pipeline as if
    the new one ran. Checked again after the publish, for a different request that came first.
    A request the bus would refuse for its size is TooLarge, before anything is stored."""
    refuse_too_large(req, "the pipeline's request")
    earlier = await _first_request(client, pipeline_id)
    if earlier is None:
        seq = await client.submit_pipeline(pipeline_id, req)
        earlier = await _first_request(client, pipeline_id)
        if earlier is not None and earlier[0] == seq:
            return PipelineSubmitted(pipeline_id=pipeline_id, seq=seq)
    seq, first = earlier if earlier is not None else (0, None)
    if first is None:
        raise PipelineExists(f"pipeline id {pipeline_id!r} is already used (its events have no valid request)")
    if not same_request(first, req):
        raise PipelineExists(f"pipeline id {pipeline_id!r} is already used by a different request")
    return PipelineSubmitted(pipeline_id=pipeline_id, seq=seq, created=False)


async def _first_request(client: NexusClient, pipeline_id: str) -> tuple[int, PipelineRequested | None] | None:
    """The first `requested` under the id that counts (judged as the orchestrator judges it);
    (seq, None) when some are stored and none counts; None when there is none."""
    stored: list[Record] = []
    async for batch in client.bus.read_records(subjects.pipeline(pipeline_id, "requested")):
        stored.extend(batch)
    valid = [(r.seq, r.event) for r in await vetted(client.bus, stored) if isinstance(r.event, PipelineRequested)]
    return valid[0] if valid else (stored[0].seq, None) if stored else None


def same_request(a: PipelineRequested, b: PipelineRequested) -> bool:
    """Whether two requests ask for the same pipeline: the same spec and variables. Sealed
    values differ on every sealing, so only where they are counts for them."""
    return _comparable(a) == _comparable(b)


def _comparable(req: PipelineRequested) -> tuple[PipelineSpec, dict[str, str]]:
    steps = [msgspec.structs.replace(s, env=_unsealed(s.env)) for s in req.spec.steps]
    return msgspec.structs.replace(req.spec, steps=steps), _unsealed(req.variables)


def _unsealed(values: dict[str, str]) -> dict[str, str]:
    return {k: "(sealed)" if is_sealed(v) else v for k, v in values.items()}


Query = Callable[[str, Sequence[Any]], Awaitable[Rows]]


async def pipeline_view(query: Query, pipeline_id: str) -> PipelineView | None:
    """A pipeline as its views show it (core.pipeline_views.shown: where its jobs ran, what they
    wait for; `requested_only`: no job listed that was never requested), from the state `query`
    reads (the orchestrator's, or a DuckDB file); None if unknown."""
    head = await query("SELECT * FROM pipelines WHERE pipeline_id = ?", [pipeline_id])
    if not head.rows:
        return None
    steps = await query("SELECT * FROM pipeline_steps WHERE pipeline_id = ? ORDER BY position", [pipeline_id])
    row = decoded(head.dicts()[0]) | {"steps": [decoded(s) for s in steps.dicts()]}
    view = msgspec.convert(row, PipelineView, strict=False)  # rows come snake_case, times as text
    ids = pipeline_jobs(view)
    jobs = await query("SELECT job_id, status, reason, node FROM jobs WHERE list_contains(?::VARCHAR[], job_id)", [ids]) if ids else None
    states = {r[0]: StepJobState(status=r[1], reason=r[2], node=r[3]) for r in jobs.rows} if jobs is not None else {}
    return shown(requested_only(view, states.keys()), states)


async def records(client: NexusClient, pipeline_id: str, from_seq: int = 1) -> AsyncIterator[Record]:
    """The pipeline's records from `from_seq`, live (the bus subscribes again after a reconnect),
    judged as the orchestrator judges them (orchestrator.vetting): each with its verified author,
    requests and approvals named by it, refused ones with their reason."""
    vetting = Vetting(client.bus)
    async for batch in client.bus.records(from_seq, subjects.pipeline(pipeline_id, ">")):
        for rec in batch:
            yield await vetting.record(rec)


WAIT_KINDS = ("approval_required", "queued", "assigned")
"""Kinds of job events that say whether a job waits (held for approval, queued) or stopped (placed)."""
FOLLOWED_KINDS = ("requested", *WAIT_KINDS)
"""What `followed` reads of step jobs: that each was requested (a job planned but never requested
is not shown as sent: core.pipeline_views.requested_only), and whether it waits."""


async def followed(client: NexusClient, pipeline_id: str) -> AsyncGenerator[Record, None]:
    """`records` of the pipeline, live, and with them, from its request on, the FOLLOWED_KINDS records
    of jobs shaped as its step jobs (core.pipeline_views.of_pipeline): what `nexus pipeline run`
    needs to say that a step waits, for an approval or a node. The two come in log order each,
    not with each other: a job's record may come before the `step_started` that names it."""
    queue: asyncio.Queue[Record | BaseException] = asyncio.Queue(maxsize=1000)

    async def pump(source: AsyncIterator[Record]) -> None:
        try:
            async for rec in source:
                await queue.put(rec)
        except Exception as exc:  # handed to the reader, which raises it
            await queue.put(exc)

    async def jobs(kind: str, start: int) -> AsyncIterator[Record]:
        vetting = Vetting(client.bus)
        async for batch in client.bus.records(start, subjects.job_kind_all(kind)):
            for rec in batch:
                try:
                    ours = of_pipeline(pipeline_id, subjects.parse(rec.subject).id)
                except InvalidSubject:  # any subject can be published under the filter
                    continue
                if ours:
                    yield await vetting.record(rec)

    tasks = [asyncio.create_task(pump(records(client, pipeline_id)))]
    try:
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if len(tasks) == 1:
                tasks += [asyncio.create_task(pump(jobs(kind, item.seq))) for kind in FOLLOWED_KINDS]
            yield item
    finally:
        for task in tasks:
            task.cancel()


class DecideStep(msgspec.Struct, frozen=True, kw_only=True):
    """Approve or deny a pipeline step waiting at its approval gate."""

    pipeline_id: str
    step: str
    decision: Literal["approved", "denied"]
    by: str = ANONYMOUS
    reason: str | None = None


async def decide_step(client: NexusClient, cmd: DecideStep) -> int:
    """Publish the step's `approved`/`denied`, expecting the pipeline's last event to be the one read."""
    pid = subjects.check_id(cmd.pipeline_id, "pipeline id")
    history: list[Record] = []
    async for batch in client.bus.read_records(subjects.pipeline(pid, ">")):
        history.extend(batch)
    if not history:
        raise NoSuchPipeline(pid)
    # Waiting: asked, and not answered since (an answer the orchestrator refused reopens the gate).
    waiting: set[str] = set()
    for r in history:
        if isinstance(r.event, PipelineApprovalRequired | PipelineApprovalRefused):
            waiting.add(r.event.step)
        elif isinstance(r.event, PipelineApproved | PipelineDenied):
            waiting.discard(r.event.step)
    asked = next((r.event for r in history if isinstance(r.event, PipelineRequested)), None)
    if asked is not None and cmd.step not in {step.id for step in asked.spec.steps}:
        raise NoSuchStep(pid, cmd.step)
    if cmd.step not in waiting:
        raise WrongState(f"step {cmd.step!r} of pipeline {pid!r} is not waiting for approval")
    ev = (PipelineApproved if cmd.decision == "approved" else PipelineDenied)(step=cmd.step, by=cmd.by, reason=cmd.reason)
    out = Outgoing(subjects.pipeline(pid, cmd.decision), ev, msgids.pipeline(pid, cmd.decision, cmd.step, history[-1].seq))
    try:
        return (await client.bus.publish(out, expected_seq=history[-1].seq)).seq
    except StaleDecision:
        raise WrongState(f"pipeline {pid!r} changed meanwhile; try again") from None


async def step_answer(client: NexusClient, cmd: DecideStep, seq: int, timeout_s: float) -> DecisionAnswer:
    """What the orchestrator made of the step's answer stored at `seq`, waiting at most `timeout_s`:
    refused when the record does not count or the orchestrator recorded `approval_refused` for
    the step (the gate waits again); acted when the step started or finished, or the pipeline ended."""
    by: str | None = None
    try:
        async with asyncio.timeout(timeout_s), contextlib.aclosing(records(client, cmd.pipeline_id, seq)) as recs:
            async for rec in recs:
                ev = rec.event
                if rec.seq == seq:
                    if not isinstance(ev, PipelineApproved | PipelineDenied):
                        return DecisionAnswer(outcome="refused", status="waiting_approval", reason=rec.error)
                    by = ev.by
                elif isinstance(ev, PipelineApprovalRefused) and ev.step == cmd.step:
                    return DecisionAnswer(outcome="refused", by=by, status="waiting_approval", reason=ev.reason)
                elif isinstance(ev, PipelineStepStarted) and ev.step == cmd.step:
                    return DecisionAnswer(outcome="acted", by=by, status="running")
                elif isinstance(ev, PipelineStepFinished) and ev.step == cmd.step:
                    return DecisionAnswer(outcome="acted", by=by, status=ev.status, reason=ev.reason)
                elif isinstance(ev, PipelineSucceeded):
                    return DecisionAnswer(outcome="acted", by=by, status="succeeded")
                elif isinstance(ev, PipelineFailed):
                    return DecisionAnswer(outcome="acted", by=by, status="failed", reason=ev.reason)
    except TimeoutError:
        pass
    return DecisionAnswer(outcome="pending", by=by)
