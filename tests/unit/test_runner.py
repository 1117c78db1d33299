"""The runner's one publish path, on the in-memory bus: chains, staleness, retries, refusals.

And the planner's bookkeeping around it (what is due, which slots are taken)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bus.errors import BusError
from bus.memory import MemoryBus
from bus.port import Published as PubAck
from orchestrator.core import planner
from orchestrator.core.active_jobs import ActiveJobs
from orchestrator.core.pipeline_views import PipelineView
from orchestrator.core.views import JobStatus, JobView
from orchestrator.runner import Outcome, Runner
from schemas import msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import JobAssigned, JobDispatch, JobQueued, JobRequested, JobRolledBack
from schemas.pipelines import PipelineRollbackStarted, PipelineSpec, PipelineStepStarted, StepSpec
from schemas.records import Record

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FlakyBus(MemoryBus):
    """Fails the next `fail` publishes, retryable or not, before storing anything."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = 0
        self.retryable = True
        self.msg_ids: list[str | None] = []

    async def publish(self, out: Outgoing, *, expected_seq: int | None = None) -> PubAck:
        self.msg_ids.append(out.msg_id)
        if self.fail:
            self.fail -= 1
            raise BusError(f"no ack for {out.subject}", subject=out.subject, retryable=self.retryable)
        return await super().publish(out, expected_seq=expected_seq)


@pytest.fixture
async def bus() -> FlakyBus:
    b = FlakyBus()
    await b.ensure_streams()
    return b


async def requested(bus: MemoryBus, job_id: str) -> JobView:
    pub = await bus.publish(Outgoing(subjects.job(job_id, "requested"), JobRequested(command="true", ts=NOW), msgids.job_request(job_id)))
    return JobView(job_id=job_id, status=JobStatus.REQUESTED, command="true", first_seq=pub.seq, last_seq=pub.seq)


def assign(job: JobView, node: str = "n1") -> list[Outgoing]:
    assigned = JobAssigned(ts=NOW, node=node, attempt=1, candidates=[node], reason="test")
    dispatch = JobDispatch(ts=NOW, attempt=1, tool="bash", command="true", argv=["bash", "-c", "true"])
    return [
        Outgoing(subjects.job(job.job_id, "assigned"), assigned, msgids.job(job.job_id, "assigned", 1)),
        Outgoing(subjects.dispatch(job.job_id, node), dispatch, msgids.job(job.job_id, "dispatch", 1)),
    ]


async def test_a_plan_goes_out_as_one_chain_and_is_remembered_until_folded(bus: FlakyBus) -> None:
    job = await requested(bus, "j1")
    runner = Runner(bus)
    done = await runner.publish(planner.plan_job(job, assign(job)))
    assert done.outcome is Outcome.DONE
    mine = runner.pending[planner.job_key("j1")]
    assert mine.node == "n1" and mine.seq == job.last_seq + 2
    # Until the projection folds our events in, the job is not due and its slot is taken.
    active = ActiveJobs({"j1": job})
    assert planner.jobs_due(active, ["j1"], active.queued, runner.pending, lambda _u, p: p) == []
    fleet = planner.fleet({}, {}, active, runner.pending, ttl_s=10, quiet_since=NOW)
    assert fleet.load == {"n1": 1}
    # Folded in: nothing of ours is in flight for it any more, and the runner forgets it.
    runner.folded(planner.job_key("j1"), mine.seq - 1)
    assert planner.job_key("j1") in runner.pending
    runner.folded(planner.job_key("j1"), mine.seq)
    assert runner.pending == {}


async def test_a_stale_plan_is_dropped_for_the_planner_to_decide_again(bus: FlakyBus) -> None:
    job = await requested(bus, "j1")
    await bus.publish(Outgoing(subjects.job("j1", "queued"), JobQueued(ts=NOW, reason="x"), msgids.job("j1", "queued", 0)))
    done = await Runner(bus).publish(planner.plan_job(job, assign(job)))
    assert done.outcome is Outcome.STALE and done.settled


async def test_a_retryable_failure_is_retried_with_the_same_message_ids(bus: FlakyBus) -> None:
    job = await requested(bus, "j1")
    runner = Runner(bus)
    plan = planner.plan_job(job, assign(job))
    bus.fail = 1
    first = await runner.publish(plan)
    assert first.outcome is Outcome.RETRY and not first.settled
    assert (await runner.publish(plan)).outcome is Outcome.DONE
    assert bus.msg_ids[1] == bus.msg_ids[2] == msgids.job("j1", "assigned", 1)  # [0]: the request


async def test_a_refusal_for_good_becomes_the_jobs_rejection(bus: FlakyBus) -> None:
    job = await requested(bus, "j1")
    runner = Runner(bus)
    bus.fail, bus.retryable = 1, False
    done = await runner.publish(planner.plan_job(job, assign(job)))
    assert done.outcome is Outcome.REFUSED and done.expected == job.last_seq
    assert (await runner.publish(planner.refused(job, done.expected, NOW, str(done.error)))).outcome is Outcome.DONE
    kinds = [subjects.parse(r.subject).kind async for batch in bus.read_records(subjects.job_all("j1")) for r in batch]
    assert kinds == ["requested", "rejected"]


async def test_a_pipeline_decision_refused_for_good_fails_the_step_or_the_pipeline(bus: FlakyBus) -> None:
    spec = PipelineSpec(name="p", steps=[StepSpec(id="wide", command="true")])
    view = PipelineView(pipeline_id="p1", name="p", spec=spec, last_seq=0)
    started = PipelineStepStarted(ts=NOW, step="wide", jobs=[])
    runner = Runner(bus)
    for refused, kind in ((started, "step_finished"), (PipelineRollbackStarted(ts=NOW, steps=["wide"], reason="x"), "failed")):
        name = "step_started" if refused is started else "rollback_started"
        out = Outgoing(subjects.pipeline("p1", name), refused, msgids.pipeline("p1", name))
        plan = planner.Plan(key=planner.pipeline_key("p1"), outs=(out,), own=subjects.pipeline("p1", ""), expected=view.last_seq)
        bus.fail, bus.retryable = 1, False
        done = await runner.publish(plan)
        assert done.outcome is Outcome.REFUSED and done.refused is out
        end = planner.pipeline_refused(view, done.refused, view.last_seq, NOW, str(done.error))
        assert [subjects.parse(o.subject).kind for o in end.outs] == [kind]
        assert "could not be stored: no ack for" in end.outs[0].event.reason  # type: ignore[attr-defined]
        if kind == "step_finished":
            assert (end.outs[0].event.step, end.outs[0].event.status) == ("wide", "failed")  # type: ignore[attr-defined]


async def test_queued_plans_stand_on_their_message_ids(bus: FlakyBus) -> None:
    runner = Runner(bus)
    done = JobRolledBack(ts=NOW, rollback_job="rb")
    out = Outgoing(subjects.job("target", "rolled_back"), done, msgids.job("target", "rolled_back", "rb"))
    plan = planner.followup(out)
    bus.fail = 1
    assert (await runner.publish(plan)).outcome is Outcome.RETRY
    assert (await runner.publish(plan)).outcome is Outcome.DONE
    assert (await runner.publish(plan)).outcome is Outcome.DONE  # stored once: the id deduplicates
    assert runner.pending == {}


def test_an_undecodable_request_is_rejected_on_its_own_sequence() -> None:
    rec = Record(seq=7, subject=subjects.job("bad", "requested"), stream_ts=NOW, raw=b"{", event=None, error="not JSON")
    plan = planner.rejection(rec, NOW)
    assert plan is not None and plan.expected == 7 and plan.key == planner.job_key("bad")
    assert planner.rejection(Record(seq=8, subject="nexus.evt.job", stream_ts=NOW, raw=b"", event=None, error="x"), NOW) is None
