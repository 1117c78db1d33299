"""Job use cases of the application layer, on the in-memory bus (the same port the NATS adapter implements)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from bus.memory import MemoryBus
from orchestrator.app import finished, jobs, pipelines
from orchestrator.app.errors import (
    InvalidRequest,
    JobChanged,
    JobExists,
    JobFinished,
    NoSuchDependency,
    NoSuchJob,
    NoSuchPipeline,
    NotHeld,
    ReservedJobId,
    WrongState,
)
from orchestrator.app.finished import NeverRan, NotFinished, RunTests, TestsPending
from orchestrator.app.follow import follow_job
from orchestrator.app.jobs import ANONYMOUS, CancelJob, DecideJob, SubmitJob
from orchestrator.app.pipelines import DecideStep
from orchestrator.client import NexusClient
from schemas import msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import JobApprovalRequired, JobAssigned, JobCancelled, JobCancelRequested, JobExited, JobQueued, JobSucceeded
from schemas.pipelines import PipelineApprovalRefused, PipelineApprovalRequired, PipelineStepStarted, StepJob
from schemas.values import ExitCodeTest, OutputContainsTest

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def client() -> NexusClient:
    bus = MemoryBus()
    await bus.ensure_streams()
    return NexusClient(bus)


async def put(client: NexusClient, job_id: str, kind: str, event: object) -> int:
    out = Outgoing(subjects.job(job_id, kind), event, msgids.job(job_id, kind, 1))  # type: ignore[arg-type]
    return (await client.bus.publish(out)).seq


async def kinds(client: NexusClient, job_id: str) -> list[str]:
    return [subjects.parse(r.subject).kind for r in await client.history(job_id)]


def test_one_builder_takes_every_field_and_names_the_requester_the_same_way() -> None:
    req = jobs.job_request(SubmitJob(command="deploy", node="web-1", prefer={"zone": "a"}, timeout_s=5), NOW)
    assert (req.node, req.prefer, req.timeout_s, req.requested_by, req.ts) == ("web-1", {"zone": "a"}, 5, ANONYMOUS, NOW)


async def test_the_same_job_id_is_the_same_job_and_a_different_request_is_refused(client: NexusClient) -> None:
    first = await jobs.submit(client, "j1", jobs.job_request(SubmitJob(command="echo"), NOW))
    again = await jobs.submit(client, "j1", jobs.job_request(SubmitJob(command="echo"), NOW))
    assert (first.created, again.created, again.seq) == (True, False, first.seq)
    with pytest.raises(JobExists):
        await jobs.submit(client, "j1", jobs.job_request(SubmitJob(command="other"), NOW))


async def test_cancel_refuses_unknown_and_finished_jobs_and_publishes_nothing(client: NexusClient) -> None:
    with pytest.raises(NoSuchJob):
        await jobs.cancel(client, CancelJob(job_id="ghost"))
    await jobs.submit(client, "j1", jobs.job_request(SubmitJob(command="true"), NOW))
    await put(client, "j1", "succeeded", JobSucceeded(attempt=1, exit_code=0))
    with pytest.raises(JobFinished) as caught:
        await jobs.cancel(client, CancelJob(job_id="j1", by="ann"))
    assert caught.value.status == "succeeded" and caught.value.http_status == 409 and caught.value.exit_code == 1
    assert await kinds(client, "j1") == ["requested", "succeeded"]


async def test_cancel_of_a_running_job_is_recorded_with_who_asked(client: NexusClient) -> None:
    await jobs.submit(client, "j1", jobs.job_request(SubmitJob(command="sleep 9"), NOW))
    seq = await jobs.cancel(client, CancelJob(job_id="j1", by="ann", reason="wrong box"))
    last = (await client.history("j1"))[-1]
    assert last.seq == seq and last.event == JobCancelRequested(ts=last.event.ts, requested_by="ann", reason="wrong box")  # type: ignore[union-attr]


async def test_a_decision_needs_an_unanswered_hold_and_a_retry_is_stored_once(client: NexusClient) -> None:
    await jobs.submit(client, "j1", jobs.job_request(SubmitJob(command="rm -rf /srv"), NOW))
    with pytest.raises(NotHeld):
        await jobs.decide(client, DecideJob(job_id="j1", decision="approved", by="bob"))
    await put(client, "j1", "approval_required", JobApprovalRequired(reason="critical on prod"))
    seq = await jobs.decide(client, DecideJob(job_id="j1", decision="denied", by="bob", reason="freeze"), NOW)
    assert (await kinds(client, "j1"))[-1] == "denied" and seq > 0
    with pytest.raises(NotHeld):
        await jobs.decide(client, DecideJob(job_id="j1", decision="approved", by="carol"))


async def test_a_held_job_cancelled_or_ended_is_not_held_any_more(client: NexusClient) -> None:
    """Review: a held job cancelled (then `cancelled`) could still be approved or denied, and the
    decision went into the audit log."""
    await jobs.submit(client, "j1", jobs.job_request(SubmitJob(command="rm -rf /srv"), NOW))
    await put(client, "j1", "approval_required", JobApprovalRequired(reason="critical"))
    await jobs.cancel(client, CancelJob(job_id="j1", by="ann"))
    for decision in ("approved", "denied"):
        with pytest.raises(NotHeld, match="not waiting for approval"):
            await jobs.decide(client, DecideJob(job_id="j1", decision=decision, by="bob"))  # type: ignore[arg-type]
    await put(client, "j1", "cancelled", JobCancelled(reason="cancelled before it was dispatched"))
    with pytest.raises(NotHeld):
        await jobs.decide(client, DecideJob(job_id="j1", decision="approved", by="bob"))
    assert await kinds(client, "j1") == ["requested", "approval_required", "cancel_requested", "cancelled"]
    # A hold answered by a new hold (the approver was refused) is held again.
    await jobs.submit(client, "j2", jobs.job_request(SubmitJob(command="rm -rf /srv"), NOW))
    await put(client, "j2", "approval_required", JobApprovalRequired(reason="critical"))
    await jobs.decide(client, DecideJob(job_id="j2", decision="approved", by="bob"))
    again = Outgoing(subjects.job("j2", "approval_required"), JobApprovalRequired(reason="'bob' may not approve"), "j2:hold:2")
    await client.bus.publish(again)
    assert await jobs.decide(client, DecideJob(job_id="j2", decision="approved", by="alice")) > 0


async def test_a_job_after_one_never_submitted_is_refused_and_nothing_is_stored(client: NexusClient) -> None:
    with pytest.raises(NoSuchDependency, match="no job 'nope'"):
        await jobs.submit(client, "j2", jobs.job_request(SubmitJob(command="echo", after=["nope"]), NOW))
    assert await kinds(client, "j2") == []
    await jobs.submit(client, "j1", jobs.job_request(SubmitJob(command="true"), NOW))
    assert (await jobs.submit(client, "j2", jobs.job_request(SubmitJob(command="echo", after=["j1"]), NOW))).created


async def test_the_answer_to_an_approval_is_what_the_orchestrator_did_next(client: NexusClient) -> None:
    await jobs.submit(client, "j1", jobs.job_request(SubmitJob(command="rm -rf /srv"), NOW))
    await put(client, "j1", "approval_required", JobApprovalRequired(reason="critical"))
    seq = await jobs.decide(client, DecideJob(job_id="j1", decision="approved", by="bob"))
    assert await jobs.decision_answer(client, "j1", "approved", seq, 0.2) == jobs.DecisionAnswer(outcome="pending", by="bob")
    # The policy does not let bob approve: the orchestrator holds the job again.
    again = Outgoing(subjects.job("j1", "approval_required"), JobApprovalRequired(reason="'bob' may not approve this job"), "j1:hold:2")
    await client.bus.publish(again)
    refused = await jobs.decision_answer(client, "j1", "approved", seq, 5)
    assert (refused.outcome, refused.by, refused.reason) == ("refused", "bob", "'bob' may not approve this job")
    seq = await jobs.decide(client, DecideJob(job_id="j1", decision="approved", by="alice"))
    await put(client, "j1", "queued", JobQueued(reason="waiting for a node"))
    assert await jobs.decision_answer(client, "j1", "approved", seq, 5) == jobs.DecisionAnswer(outcome="acted", by="alice", status="queued")


async def test_the_answer_to_a_gate_is_the_steps_next_event(client: NexusClient) -> None:
    pid = "p1"
    gate = PipelineApprovalRequired(step="go", timeout_s=60)
    await client.bus.publish(Outgoing(subjects.pipeline(pid, "approval_required"), gate, "p1:a"))
    cmd = DecideStep(pipeline_id=pid, step="go", decision="approved", by="admin")
    seq = await pipelines.decide_step(client, cmd)
    refusal = PipelineApprovalRefused(step="go", by="admin", decision="approved", reason="'admin' is not among this pipeline's approvers")
    await client.bus.publish(Outgoing(subjects.pipeline(pid, "approval_refused"), refusal, "p1:r"))
    said = await pipelines.step_answer(client, cmd, seq, 5)
    assert (said.outcome, said.by, said.reason) == ("refused", "admin", refusal.reason)
    seq = await pipelines.decide_step(client, msgspec.structs.replace(cmd, by="alice"))
    started = PipelineStepStarted(step="go", batch=0, jobs=[StepJob(job_id="p1-s0-0")], nodes=[])
    await client.bus.publish(Outgoing(subjects.pipeline(pid, "step_started"), started, "p1:s"))
    said = await pipelines.step_answer(client, msgspec.structs.replace(cmd, by="alice"), seq, 5)
    assert (said.outcome, said.by, said.status) == ("acted", "alice", "running")


async def test_a_decision_on_a_job_that_moved_meanwhile_is_refused(client: NexusClient, monkeypatch: pytest.MonkeyPatch) -> None:
    await jobs.submit(client, "j1", jobs.job_request(SubmitJob(command="rm -rf /srv"), NOW))
    await put(client, "j1", "approval_required", JobApprovalRequired(reason="critical on prod"))
    real = client.history

    async def stale(job_id: str) -> list:  # type: ignore[type-arg]
        found = await real(job_id)
        await put(client, "j1", "cancel_requested", JobCancelRequested(requested_by="ann"))
        return found

    monkeypatch.setattr(client, "history", stale)
    with pytest.raises(JobChanged):
        await jobs.decide(client, DecideJob(job_id="j1", decision="approved", by="bob"))


async def test_follow_ends_after_the_verdict_once_the_stored_output_is_read(client: NexusClient) -> None:
    bus = client.bus
    await jobs.submit(client, "j1", jobs.job_request(SubmitJob(command="echo hi"), NOW))
    await put(client, "j1", "assigned", JobAssigned(node="n1", attempt=1))
    await bus.publish_output("j1", 1, 1, b"hi\n", "n1", token="t0")
    await put(client, "j1", "exited", JobExited(node="n1", attempt=1, exit_code=0, duration_ms=1, chunks=1))
    await put(client, "j1", "succeeded", JobSucceeded(attempt=1, exit_code=0))
    seen = [(i.record.seq if i.record else None, i.chunk.data if i.chunk else None) async for i in follow_job(bus, "j1")]
    assert [s for s, _ in seen if s is not None] == [1, 2, 3, 4]
    assert [d for _, d in seen if d is not None] == [b"hi\n"]


async def test_output_counts_only_from_the_node_that_ran_the_attempt(client: NexusClient) -> None:
    """DESIGN §9: output is a node fact. Another node's chunks for the job (its subject names
    that node), and chunks of an attempt no node was given, are left out by every reader."""
    bus = client.bus
    await jobs.submit(client, "j1", jobs.job_request(SubmitJob(command="echo hi"), NOW))
    await bus.publish_output("j1", 1, 1, b"early ", "n1", token="t1")  # read before the record naming n1: waits for it, in order
    await put(client, "j1", "assigned", JobAssigned(node="n1", attempt=1))
    await bus.publish_output("j1", 1, 1, b"forged by n2 ", "n2", token="t2")
    await bus.publish_output("j1", 1, 2, b"hi\n", "n1", token="t3")
    await bus.publish_output("j1", 7, 1, b"attempt 7 was never given to a node", "n1", token="t4")
    await put(client, "j1", "exited", JobExited(node="n1", attempt=1, exit_code=0, duration_ms=1, chunks=2))
    await put(client, "j1", "succeeded", JobSucceeded(attempt=1, exit_code=0))
    followed = [i.chunk.data async for i in follow_job(bus, "j1") if i.chunk is not None]
    stored = [c.data async for c in client.output("j1")]
    assert followed == stored == [b"early ", b"hi\n"]


async def test_tests_run_on_finished_jobs_one_run_at_a_time(client: NexusClient) -> None:
    ev = finished.tests_request(RunTests(job_id="j1", tests=[ExitCodeTest(expected=0)], by="ann"), NOW)
    with pytest.raises(NoSuchJob):
        await finished.request_tests(client, "j1", ev)
    await jobs.submit(client, "j1", jobs.job_request(SubmitJob(command="true"), NOW))
    with pytest.raises(NotFinished):
        await finished.request_tests(client, "j1", ev)
    await put(client, "j1", "exited", JobExited(node="n1", attempt=1, exit_code=0, duration_ms=1))
    await put(client, "j1", "succeeded", JobSucceeded(attempt=1, exit_code=0))
    seq = await finished.request_tests(client, "j1", ev)
    assert (await client.history("j1"))[-1].seq == seq
    with pytest.raises(TestsPending):
        await finished.request_tests(client, "j1", ev)


async def test_a_pipeline_step_decision_needs_its_gate_open(client: NexusClient) -> None:
    gate = Outgoing(subjects.pipeline("p1", "approval_required"), PipelineApprovalRequired(step="deploy", timeout_s=60), "p1-gate")
    with pytest.raises(NoSuchPipeline):
        await pipelines.decide_step(client, DecideStep(pipeline_id="p1", step="deploy", decision="approved"))
    await client.bus.publish(gate)
    with pytest.raises(WrongState):
        await pipelines.decide_step(client, DecideStep(pipeline_id="p1", step="build", decision="approved"))
    assert await pipelines.decide_step(client, DecideStep(pipeline_id="p1", step="deploy", decision="denied", by="bob")) > 0
    with pytest.raises(WrongState):
        await pipelines.decide_step(client, DecideStep(pipeline_id="p1", step="deploy", decision="approved"))


async def test_tests_refuse_a_job_that_never_ran(client: NexusClient) -> None:
    """Review: tests on a job cancelled before dispatch (or denied) were accepted, failed
    ('actual: None') and recorded a failed `job.tested`."""
    ev = finished.tests_request(RunTests(job_id="j1", tests=[ExitCodeTest(expected=0)], by="ann"), NOW)
    await jobs.submit(client, "j1", jobs.job_request(SubmitJob(command="true"), NOW))
    await put(client, "j1", "cancelled", JobCancelled(reason="cancelled before it was dispatched"))
    with pytest.raises(NeverRan, match="never ran") as caught:
        await finished.request_tests(client, "j1", ev)
    assert caught.value.http_status == 409
    assert await kinds(client, "j1") == ["requested", "cancelled"]


def test_a_chosen_job_id_may_not_be_shaped_like_a_pipeline_step_s() -> None:
    assert jobs.job_id_of(SubmitJob(command="true", job_id="my-job-1")) == "my-job-1"
    assert jobs.job_id_of(SubmitJob(command="true")).startswith("j-")
    for taken in ("rel-s0-0", "rel-s2-hc-1-3", "rel-s2-rb-3"):
        with pytest.raises(ReservedJobId, match="pipeline step"):
            jobs.job_id_of(SubmitJob(command="true", job_id=taken))


def test_a_test_run_with_a_pattern_re2_refuses_is_refused_before_it_is_published() -> None:
    with pytest.raises(InvalidRequest, match=r"invalid pattern '\(a'"):
        finished.tests_request(RunTests(job_id="j1", tests=[OutputContainsTest(pattern="(a")]), NOW)
    assert finished.tests_request(RunTests(job_id="j1", tests=[OutputContainsTest(pattern="a")]), NOW).tests
