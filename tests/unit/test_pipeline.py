"""Pipelines: the fold of pipeline events and the decider, driven by a simulated world.

`Sim` plays the orchestrator: it folds the pipeline events the decider emits
(through the JSON codec), turns `job.requested` into JobViews, and lets a test
finish jobs. On every decision it checks the restart property: deciding again
on the same inputs gives the same outgoings, a view replayed from the log
equals the incrementally folded one, and no job id is ever requested twice.
"""

from __future__ import annotations

import typing
from collections import Counter
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core import planner
from orchestrator.core.pipeline import approved_with, decide_pipeline, step_companions
from orchestrator.core.pipeline_views import (
    PipelineView,
    StepJobState,
    evolve_pipeline,
    is_step_job_id,
    next_deadline,
    of_pipeline,
    pipeline_jobs,
    requested_only,
    shown,
    step_job_id,
)
from orchestrator.core.policy import Policy
from orchestrator.core.views import JobView
from schemas import subjects
from schemas.envelope import Outgoing
from schemas.events import JobRequested
from schemas.pipelines import (
    PipelineApprovalRefused,
    PipelineApproved,
    PipelineDenied,
    PipelineEvent,
    PipelineFailed,
    PipelineRejected,
    PipelineRequested,
    PipelineSpec,
    PipelineStepStarted,
    PipelineSucceeded,
    StepJob,
    StepSpec,
    with_resolved_needs,
)
from schemas.records import Record
from schemas.values import ExitCodeTest

NOW = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
_decoder = msgspec.json.Decoder(PipelineEvent)


def roundtrip(ev: PipelineEvent) -> PipelineEvent:
    decoded: PipelineEvent = _decoder.decode(msgspec.json.encode(ev))
    return decoded


def tag(ev: object) -> str:
    return str(type(ev).__struct_config__.tag)  # type: ignore[attr-defined]


def spec(*steps: StepSpec, approvers: list[str] | None = None) -> PipelineSpec:
    return with_resolved_needs(PipelineSpec(name="test", steps=list(steps), approvers=approvers or []))


def step(id: str, **kw: typing.Any) -> StepSpec:
    kw.setdefault("command", f"do-{id}")
    return StepSpec(id=id, **kw)


class Sim:
    def __init__(
        self,
        pipeline: PipelineSpec,
        pid: str = "rel-1",
        fleet: dict[str, list[str]] | None = None,
        policy: Policy | None = None,
        enforcing: bool = True,
        orchestrator: str | None = None,
    ) -> None:
        self.pid = pid
        self.enforcing = enforcing
        # The orchestrator's identity, when it is no admin service: its requests are named after it.
        self.orchestrator = orchestrator
        self.policy = policy or Policy()
        self.now = NOW
        self.fleet = fleet or {}
        self.log: list[tuple[PipelineEvent, datetime]] = []
        self.incremental: PipelineView | None = None
        self.jobs: dict[str, JobView] = {}
        self.requests: list[str] = []
        self.hijacked: set[str] = set()
        self.published: list[Outgoing] = []
        self.publish(PipelineRequested(ts=self.now, spec=pipeline, requested_by="alice", source="t.yaml"))

    def publish(self, ev: PipelineEvent) -> None:
        ev = roundtrip(ev)
        ts = ev.ts or self.now
        self.log.append((ev, ts))
        self.incremental = evolve_pipeline(self.incremental, self.pid, ev, ts, len(self.log))

    def view(self) -> PipelineView:
        view: PipelineView | None = None
        for seq, (ev, ts) in enumerate(self.log, 1):
            view = evolve_pipeline(view, self.pid, ev, ts, seq)
        assert view is not None
        assert msgspec.json.encode(view) == msgspec.json.encode(self.incremental), "replay differs from the incremental fold"
        return view

    def job_views(self, view: PipelineView) -> dict[str, JobView]:
        return {j: self.jobs[j] for j in pipeline_jobs(view) if j in self.jobs}

    def decide(self) -> list[Outgoing]:
        view = self.view()
        jobs = self.job_views(view)
        outs = decide_pipeline(view, jobs, self.fleet, self.now, self.policy, enforcing=self.enforcing)
        assert outs == decide_pipeline(view, jobs, self.fleet, self.now, self.policy, enforcing=self.enforcing), "deciding twice differs"
        for o in outs:
            ref = subjects.parse(o.subject)
            if ref.family == "job":
                assert isinstance(o.event, JobRequested)
                assert ref.kind == "requested" and o.msg_id == f"job:{ref.id}:requested:1"
                if ref.id in self.hijacked:
                    continue  # the bus drops it: that id is taken
                assert ref.id not in self.jobs, f"job {ref.id} requested twice"
                ev = o.event
                assert ev.metadata["pipeline"] == self.pid and ev.parent is None
                self.jobs[ref.id] = JobView(
                    job_id=ref.id,
                    status="requested",
                    command=ev.command,
                    requested_node=ev.node,
                    node=ev.node or "auto-1",
                    metadata=dict(ev.metadata),
                    tests=list(ev.tests),
                    requested_by=self.orchestrator or ev.requested_by,
                    requester=(self.orchestrator or "orchestrator") if self.enforcing else None,
                    requester_role="admin" if self.enforcing else None,
                )
                self.requests.append(ref.id)
            else:
                assert ref.family == "pipeline" and ref.id == self.pid
                assert tag(o.event) == f"pipeline.{ref.kind}"
                self.publish(typing.cast(PipelineEvent, o.event))
        self.published += outs
        return outs

    def settle(self) -> list[Outgoing]:
        outs: list[Outgoing] = []
        while batch := self.decide():
            outs += batch
        return outs

    def finish(self, job_id: str, status: str = "succeeded", reason: str | None = None) -> list[Outgoing]:
        assert not self.jobs[job_id].terminal
        self.jobs[job_id] = msgspec.structs.replace(self.jobs[job_id], status=status, reason=reason)
        return self.settle()

    def hijack(self, job_id: str, *, role: str | None = "submitter", by: str | None = "mallory", status: str = "succeeded") -> None:
        """Someone else's request under a step's job id, published before the orchestrator's:
        it holds the id (the orchestrator's own request would be dropped as a duplicate).
        `by`: the identity that published it, `role` its role (None: unsigned)."""
        requester = by if role is not None else None
        self.jobs[job_id] = JobView(
            job_id=job_id, status=status, command="echo HIJACKED", requested_by="mallory", requester=requester, requester_role=role
        )
        self.hijacked.add(job_id)

    def active(self) -> list[str]:
        return [j for j in self.requests if not self.jobs[j].terminal]

    def run(self, outcome: typing.Callable[[JobView], str]) -> PipelineView:
        """Finish active jobs one at a time, oldest first, until the pipeline ends."""
        self.settle()
        for _ in range(500):
            active = self.active()
            if not active:
                break
            jv = self.jobs[active[0]]
            status = outcome(jv)
            self.finish(jv.job_id, status, None if status == "succeeded" else "exit code 1")
        return self.view()

    def kinds(self) -> list[str]:
        return [tag(ev).removeprefix("pipeline.") for ev, _ in self.log]

    def requested(self, role: str = "run", step: str | None = None) -> list[JobView]:
        return [
            self.jobs[j]
            for j in self.requests
            if self.jobs[j].metadata["role"] == role and (step is None or self.jobs[j].metadata["step"] == step)
        ]


def fail_steps(*names: str, role: str = "run", nodes: tuple[str, ...] = ()) -> typing.Callable[[JobView], str]:
    def outcome(jv: JobView) -> str:
        hit = jv.metadata["step"] in names and jv.metadata["role"] == role and (not nodes or jv.node in nodes)
        return "failed" if hit else "succeeded"

    return outcome


def ok(_: JobView) -> str:
    return "succeeded"


# ---------------------------------------------------------------- sequential chains


def chain(**rollbacks: str) -> PipelineSpec:
    return spec(*(step(n, rollback=rollbacks.get(n)) for n in ("build", "test", "deploy", "verify")))


def test_sequential_chain_runs_in_file_order_and_succeeds() -> None:
    sim = Sim(chain())
    view = sim.run(ok)
    assert view.status == "succeeded"
    assert [j.metadata["step"] for j in sim.requested()] == ["build", "test", "deploy", "verify"]
    assert sim.kinds()[-1] == "succeeded"
    assert [s.status for s in view.steps] == ["succeeded"] * 4


def test_sequential_chain_requests_one_step_at_a_time() -> None:
    sim = Sim(chain())
    sim.settle()
    assert [j.job_id for j in sim.requested()] == ["rel-1-s0-0"]
    sim.finish("rel-1-s0-0")
    assert [j.job_id for j in sim.requested()] == ["rel-1-s0-0", "rel-1-s1-0"]


def test_sequential_chain_stops_at_first_failure() -> None:
    sim = Sim(chain())
    view = sim.run(fail_steps("test"))
    assert view.status == "failed"
    assert [j.metadata["step"] for j in sim.requested()] == ["build", "test"]
    assert [(s.step_id, s.status) for s in view.steps] == [
        ("build", "succeeded"),
        ("test", "failed"),
        ("deploy", "skipped"),
        ("verify", "skipped"),
    ]
    assert view.failed_step == "test"
    assert view.reason is not None and view.reason.startswith("step test failed")
    assert "rollback_started" not in sim.kinds()  # nothing to undo: no step has a rollback command
    assert sim.kinds()[-1] == "failed"


def test_step_jobs_carry_the_step_spec() -> None:
    s = step("build", command="make", tool="sh", timeout_s=30, env={"A": "1"}, working_dir="/src", tests=[ExitCodeTest(expected=0)])
    sim = Sim(spec(s))
    sim.settle()
    req = next(o.event for o in sim.published if isinstance(o.event, JobRequested))
    assert (req.command, req.tool, req.timeout_s, req.env, req.working_dir) == ("make", "sh", 30, {"A": "1"}, "/src")
    assert req.tests == [ExitCodeTest(expected=0)]
    assert req.node is None and req.requested_by == "alice"
    assert req.metadata == {"pipeline": "rel-1", "step": "build", "role": "run", "batch": 0}


# ---------------------------------------------------------------- fan-out


def test_parallel_fan_out_on_three_nodes_with_max_parallel_2() -> None:
    sim = Sim(spec(step("deploy", nodes=["w1", "w2", "w3"], max_parallel=2)))
    sim.settle()
    started = [ev for ev, _ in sim.log if isinstance(ev, PipelineStepStarted)]
    assert len(started) == 1 and [j.node for j in started[0].jobs] == ["w1", "w2", "w3"]
    assert [j.node for j in sim.requested()] == ["w1", "w2"]
    sim.finish("rel-1-s0-1")
    assert [j.node for j in sim.requested()] == ["w1", "w2", "w3"]
    assert len(sim.active()) == 2
    sim.finish("rel-1-s0-0")
    sim.finish("rel-1-s0-2")
    assert sim.view().status == "succeeded"


def test_fan_out_without_max_parallel_requests_every_node_at_once() -> None:
    sim = Sim(spec(step("deploy", nodes=["w1", "w2", "w3"])))
    sim.settle()
    assert [j.requested_node for j in sim.requested()] == ["w1", "w2", "w3"]


@pytest.mark.parametrize(("pct", "expected"), [(0, "failed"), (33, "failed"), (34, "succeeded")])
def test_max_fail_percentage(pct: float, expected: str) -> None:
    sim = Sim(spec(step("deploy", nodes=["w1", "w2", "w3"], max_fail_percentage=pct)))
    view = sim.run(fail_steps("deploy", nodes=("w2",)))
    assert view.steps[0].status == expected
    assert view.status == expected


def test_fan_out_stops_requesting_once_the_step_cannot_succeed() -> None:
    sim = Sim(spec(step("deploy", nodes=["w1", "w2", "w3", "w4"], max_parallel=1)))
    view = sim.run(fail_steps("deploy", nodes=("w1",)))
    assert [j.node for j in sim.requested()] == ["w1"]
    assert view.steps[0].status == "failed"
    assert view.steps[0].reason is not None and "w1" in view.steps[0].reason


def test_label_fan_out_waits_for_the_fleet_then_pins_each_node() -> None:
    sim = Sim(spec(step("deploy", labels={"role": "web"})))
    assert sim.settle() == []
    sim.fleet = {"deploy": ["w2", "w1", "w2"]}
    sim.settle()
    assert [j.requested_node for j in sim.requested()] == ["w1", "w2"]
    assert sim.view().steps[0].nodes == ["w1", "w2"]


def test_label_fan_out_with_no_matching_node_fails_the_step() -> None:
    sim = Sim(spec(step("deploy", labels={"role": "web"})), fleet={"deploy": []})
    sim.settle()
    view = sim.view()
    assert view.status == "failed" and view.steps[0].reason is not None and "role=web" in view.steps[0].reason


# ---------------------------------------------------------------- conditions


def branching() -> PipelineSpec:
    return spec(
        step("build"),
        step("deploy", needs=["build"]),
        step("notify", needs=["build"], when="failure"),
        step("cleanup", needs=["deploy", "notify"], when="always"),
    )


def test_on_failure_branch_runs_only_when_its_need_failed() -> None:
    sim = Sim(branching())
    view = sim.run(fail_steps("build"))
    assert {s.step_id: s.status for s in view.steps} == {
        "build": "failed",
        "deploy": "skipped",
        "notify": "succeeded",
        "cleanup": "succeeded",
    }
    assert [j.metadata["step"] for j in sim.requested()] == ["build", "notify", "cleanup"]
    assert view.status == "failed"  # the failure was handled, but it happened


def test_on_failure_branch_is_skipped_when_everything_succeeded() -> None:
    sim = Sim(branching())
    view = sim.run(ok)
    assert {s.step_id: s.status for s in view.steps} == {
        "build": "succeeded",
        "deploy": "succeeded",
        "notify": "skipped",
        "cleanup": "succeeded",
    }
    assert view.steps[2].reason == "no step it needs failed"
    assert view.status == "succeeded"


def test_fail_fast_skips_independent_steps_not_started_yet() -> None:
    pipeline = spec(step("a", needs=[]), step("b", needs=[]), step("c", needs=["b"]))
    sim = Sim(pipeline)
    sim.settle()
    assert {j.metadata["step"] for j in sim.requested()} == {"a", "b"}
    sim.finish("rel-1-s0-0", "failed", "boom")
    sim.finish("rel-1-s1-0")
    view = sim.view()
    assert view.step("c") is not None and view.step("c").status == "skipped"  # type: ignore[union-attr]
    assert view.status == "failed"


# ---------------------------------------------------------------- rollback


def test_rollback_undoes_completed_steps_in_reverse_order_one_at_a_time() -> None:
    pipeline = spec(
        step("a", rollback="undo-a"),
        step("b"),
        step("c", rollback="undo-c", nodes=["w1", "w2"]),
        step("d", rollback="undo-d"),
        step("e", rollback="undo-e"),
    )
    sim = Sim(pipeline)
    sim.run(fail_steps("d"))
    view = sim.view()
    assert view.rollback_steps == ["c", "a"]  # b has no rollback, d failed, e never ran
    rollbacks = sim.requested("rollback")
    assert [(j.metadata["step"], j.requested_node) for j in rollbacks] == [("c", "w1"), ("c", "w2"), ("a", "auto-1")]
    assert [j.command for j in rollbacks] == ["undo-c", "undo-c", "undo-a"]
    assert sim.kinds()[-2:] == ["rolled_back", "failed"]
    assert view.rolled_back_steps == ["c", "a"] and view.rollback_failed == []
    assert view.status == "failed" and view.reason is not None and "rolled back c, a" in view.reason


def test_rollback_waits_for_each_step_before_the_next() -> None:
    pipeline = spec(step("a", rollback="undo-a"), step("b", rollback="undo-b", nodes=["w1", "w2"]), step("c"))
    sim = Sim(pipeline)
    sim.settle()
    sim.finish("rel-1-s0-0")
    sim.finish("rel-1-s1-0")
    sim.finish("rel-1-s1-1")
    sim.finish("rel-1-s2-0", "failed", "exit code 2")
    assert [j.job_id for j in sim.requested("rollback")] == ["rel-1-s1-rb-0", "rel-1-s1-rb-1"]
    sim.finish("rel-1-s1-rb-0")
    assert len(sim.requested("rollback")) == 2
    sim.finish("rel-1-s1-rb-1", "failed", "exit code 1")
    assert [j.job_id for j in sim.requested("rollback")][-1] == "rel-1-s0-rb-0"
    sim.finish("rel-1-s0-rb-0")
    view = sim.view()
    assert view.status == "failed"
    assert view.rolled_back_steps == ["a"] and view.rollback_failed == ["b"]
    assert view.step("b").rollback_status == "failed"  # type: ignore[union-attr]


def test_rollback_runs_after_running_steps_finish() -> None:
    pipeline = spec(step("a", needs=[], rollback="undo-a"), step("b", needs=[]))
    sim = Sim(pipeline)
    sim.settle()
    sim.finish("rel-1-s1-0", "failed", "boom")
    assert sim.requested("rollback") == []  # a is still running
    sim.finish("rel-1-s0-0")
    assert [j.metadata["step"] for j in sim.requested("rollback")] == ["a"]


# ---------------------------------------------------------------- rolling


def rolling(batch_size: int = 1, **kw: typing.Any) -> PipelineSpec:
    return spec(
        step("build", rollback="undo-build"),
        step(
            "deploy",
            nodes=["w1", "w2", "w3"],
            strategy="rolling",
            batch_size=batch_size,
            health_check="curl -f localhost/health",
            rollback="undo-deploy",
            **kw,
        ),
    )


def test_rolling_deploy_health_check_fails_on_second_batch() -> None:
    sim = Sim(rolling())
    view = sim.run(fail_steps("deploy", role="health_check", nodes=("w2",)))
    deploy = view.steps[1]
    assert deploy.status == "failed"
    assert deploy.reason is not None and "health check" in deploy.reason and "w2" in deploy.reason
    assert "rollout stopped after batch 2 of 3" in deploy.reason
    touched = {j.node for j in sim.jobs.values() if j.metadata["step"] == "deploy"}
    assert "w3" not in touched  # the third batch is never touched
    assert [(j.node, j.command) for j in sim.requested("health_check")] == [("w1", "curl -f localhost/health")] * 1 + [
        ("w2", "curl -f localhost/health")
    ]
    # The batches already done are undone (w2's deploy ran too), then the build.
    assert [(j.metadata["step"], j.node) for j in sim.requested("rollback")] == [
        ("deploy", "w1"),
        ("deploy", "w2"),
        ("build", "auto-1"),
    ]
    assert view.rollback_steps == ["deploy", "build"]
    assert view.status == "failed"


def test_rolling_deploy_waits_for_health_checks_before_the_next_batch() -> None:
    sim = Sim(rolling())
    sim.settle()
    sim.finish("rel-1-s0-0")
    assert [j.node for j in sim.requested(step="deploy")] == ["w1"]
    sim.finish("rel-1-s1-0")
    assert [j.job_id for j in sim.requested("health_check")] == ["rel-1-s1-hc-0-0"]
    assert [j.node for j in sim.requested(step="deploy")] == ["w1"]
    sim.finish("rel-1-s1-hc-0-0")
    assert [j.node for j in sim.requested(step="deploy")] == ["w1", "w2"]
    started = [(ev.batch, [j.node for j in ev.jobs], ev.nodes) for ev, _ in sim.log if isinstance(ev, PipelineStepStarted)]
    assert started[1:] == [(0, ["w1"], ["w1", "w2", "w3"]), (1, ["w2"], ["w1", "w2", "w3"])]


def test_rolling_deploy_in_batches_of_two_succeeds() -> None:
    sim = Sim(rolling(batch_size=2))
    view = sim.run(ok)
    assert view.status == "succeeded"
    started = [[j.node for j in ev.jobs] for ev, _ in sim.log if isinstance(ev, PipelineStepStarted) and ev.step == "deploy"]
    assert started == [["w1", "w2"], ["w3"]]
    assert [j.node for j in sim.requested("health_check")] == ["w1", "w2", "w3"]


def test_rolling_deploy_tolerates_failures_within_max_fail_percentage() -> None:
    sim = Sim(rolling(max_fail_percentage=34))
    view = sim.run(fail_steps("deploy", role="health_check", nodes=("w2",)))
    assert view.status == "succeeded"
    assert {j.node for j in sim.requested(step="deploy")} == {"w1", "w2", "w3"}
    assert view.steps[1].reason is not None and "1 of 3" in view.steps[1].reason


# ---------------------------------------------------------------- foreign requests under a step's id


def test_a_job_someone_else_requested_under_a_steps_id_fails_the_step() -> None:
    sim = Sim(chain())
    sim.settle()
    sim.hijack("rel-1-s1-0")  # a submitter guessed the `test` step's id and published first
    sim.finish("rel-1-s0-0")
    view = sim.view()
    assert view.status == "failed"
    test = view.step("test")
    assert test is not None and test.status == "failed"
    assert test.reason is not None and "requested by 'mallory' (submitter), not by the orchestrator" in test.reason
    assert [j.metadata["step"] for j in sim.requested()] == ["build"]  # the foreign job is never ours
    assert [s.status for s in view.steps] == ["succeeded", "failed", "skipped", "skipped"]


def test_a_foreign_job_never_passes_an_approval_gate() -> None:
    sim = Sim(gated())
    sim.settle()
    sim.hijack("rel-1-s1-0")  # it even ran, before anyone approved
    sim.finish("rel-1-s0-0")
    assert sim.view().step("deploy").status == "waiting_approval"  # type: ignore[union-attr]
    sim.publish(PipelineApproved(ts=NOW, step="deploy", by="bob"))
    sim.settle()
    view = sim.view()
    deploy = view.step("deploy")
    assert deploy is not None and deploy.status == "failed" and "not by the orchestrator" in (deploy.reason or "")
    assert view.status == "failed"


def test_an_unsigned_request_under_a_steps_id_is_foreign_once_identities_are_enforced() -> None:
    sim = Sim(chain())
    sim.settle()
    sim.hijack("rel-1-s1-0", role=None, status="running")  # still running: the step does not wait for it
    sim.finish("rel-1-s0-0")
    test = sim.view().step("test")
    assert test is not None and test.status == "failed" and "requested by an unsigned publisher" in (test.reason or "")


def test_a_foreign_job_fails_a_step_whatever_its_max_fail_percentage() -> None:
    sim = Sim(spec(step("fan", nodes=["w1", "w2", "w3", "w4"], max_fail_percentage=50)))
    sim.settle()
    sim.hijack("rel-1-s0-9")  # not one of the step's ids: it changes nothing
    for j in ("rel-1-s0-0", "rel-1-s0-1", "rel-1-s0-2"):
        sim.finish(j)
    assert sim.view().status == "running"
    sim.jobs["rel-1-s0-3"] = msgspec.structs.replace(sim.jobs["rel-1-s0-3"], requester_role="submitter", status="succeeded")
    sim.settle()  # (a view that says the last job's request was someone else's)
    fan = sim.view().step("fan")
    assert fan is not None and fan.status == "failed" and "job rel-1-s0-3" in (fan.reason or "")


def test_a_foreign_rollback_job_fails_the_rollback() -> None:
    sim = Sim(chain(build="undo-build"))
    sim.settle()
    sim.hijack("rel-1-s0-rb-0")
    sim.finish("rel-1-s0-0")
    sim.finish("rel-1-s1-0", "failed", "exit code 1")
    view = sim.view()
    build = view.step("build")
    assert view.status == "failed" and build is not None and build.rollback_status == "failed"
    assert "not by the orchestrator" in (build.rollback_reason or "")
    assert view.rollback_failed == ["build"]


def test_an_admin_service_acting_for_someone_else_does_not_speak_for_the_orchestrator() -> None:
    # The HTTP API (an admin service) publishes its users' requests, named after them, with ids they may choose.
    sim = Sim(chain())
    sim.settle()
    sim.hijack("rel-1-s1-0", role="admin", by="api")  # for 'mallory', not for the pipeline's 'alice'
    sim.finish("rel-1-s0-0")
    test = sim.view().step("test")
    assert test is not None and test.status == "failed" and "requested by 'mallory' (admin)" in (test.reason or "")


def test_an_orchestrator_that_is_no_admin_service_is_named_by_its_own_identity_and_counts() -> None:
    # `nexus creds new --role admin --name orchestrator-b` (operations.md): its requests name itself.
    sim = Sim(chain(), orchestrator="orchestrator-b")
    assert sim.run(ok).status == "succeeded"
    assert {j.requested_by for j in sim.jobs.values()} == {"orchestrator-b"}


def test_without_identities_every_job_under_a_steps_id_counts() -> None:
    # A bus without credentials proves no author: today's behaviour, documented in docs/security.md.
    sim = Sim(chain(), enforcing=False)
    sim.settle()
    sim.hijack("rel-1-s1-0", role=None)
    assert sim.run(ok).status == "succeeded"


# ---------------------------------------------------------------- rejected pipelines


@pytest.mark.parametrize(
    ("steps", "said"),
    [
        ([step("a", needs=["a"])], "step a: needs: step 'a' needs itself"),
        ([step("c", needs=[]), step("a", needs=["b"]), step("b", needs=["a"])], "dependency cycle: a -> b -> a"),
    ],
)
def test_a_pipeline_whose_spec_cannot_run_is_rejected_before_anything_runs(steps: list[StepSpec], said: str) -> None:
    # Published straight on the bus: `nexus pipeline run` refuses the same template (one check, spec_problems).
    sim = Sim(PipelineSpec(name="bad", steps=steps))
    (out,) = sim.settle()
    assert isinstance(out.event, PipelineRejected) and out.event.code == "invalid_spec" and said in out.event.reason
    assert out.subject == "nexus.evt.pipeline.rel-1.rejected"
    view = sim.view()
    assert (view.status, view.reason) == ("rejected", out.event.reason) and view.finished_at is not None
    assert sim.requests == [] and sim.settle() == [] and next_deadline(view) is None


def test_a_rejection_is_the_only_record_of_a_pipeline_whose_request_never_decoded() -> None:
    rec = Record(seq=7, subject="nexus.evt.pipeline.pbad1.requested", stream_ts=NOW, raw=b"garbage", error="not JSON")
    plan = planner.rejection(rec, NOW)
    assert plan is not None and plan.expected == 7 and plan.is_own(plan.outs[0])
    (out,) = plan.outs
    assert out.subject == "nexus.evt.pipeline.pbad1.rejected" and out.msg_id == "pipeline:pbad1:rejected:7"
    assert isinstance(out.event, PipelineRejected) and out.event.code == "invalid_payload" and out.event.raw == "garbage"
    view = evolve_pipeline(None, "pbad1", roundtrip(out.event), NOW, 8)
    assert view is not None and view.status == "rejected" and "payload does not decode: not JSON" in (view.reason or "")
    assert view.first_seq == 8 and view.steps == []
    # A valid request under that id afterwards is a duplicate: the id stays rejected, as a job's does.
    again = evolve_pipeline(view, "pbad1", PipelineRequested(spec=spec(step("a"))), NOW, 9)
    assert again is not None and again.status == "rejected" and again.last_seq == 9


# ---------------------------------------------------------------- approval gates


def gated(**kw: typing.Any) -> PipelineSpec:
    return spec(step("build"), step("deploy", approval=True, approval_timeout_s=600, **kw), approvers=["bob", "carol"])


def test_approval_gate_waits_then_runs_when_approved() -> None:
    sim = Sim(gated())
    sim.settle()
    sim.finish("rel-1-s0-0")
    view = sim.view()
    assert view.step("deploy").status == "waiting_approval"  # type: ignore[union-attr]
    assert sim.kinds()[-1] == "approval_required"
    assert next_deadline(view) == NOW + timedelta(seconds=600)
    assert [j.metadata["step"] for j in sim.requested()] == ["build"]
    sim.publish(PipelineApproved(ts=NOW, step="deploy", by="bob"))
    sim.settle()
    assert [j.metadata["step"] for j in sim.requested()] == ["build", "deploy"]
    sim.finish("rel-1-s1-0")
    view = sim.view()
    assert view.status == "succeeded" and view.step("deploy").approved_by == "bob"  # type: ignore[union-attr]


def test_approval_by_someone_not_among_the_pipelines_approvers_is_refused() -> None:
    sim = Sim(gated())
    sim.run(ok)
    sim.publish(PipelineApproved(ts=NOW, step="deploy", by="mallory"))
    (refused,) = sim.settle()
    assert isinstance(refused.event, PipelineApprovalRefused) and refused.event.by == "mallory"
    deploy = sim.view().step("deploy")
    assert deploy is not None and deploy.status == "waiting_approval" and deploy.approved_by is None
    assert deploy.reason is not None and "'mallory' is not among this pipeline's approvers" in deploy.reason
    assert [j.metadata["step"] for j in sim.requested()] == ["build"]  # nothing of the gated step ran


APPROVERS = Policy(approvers=["alice"], users={"alice": ["admin"], "mallory": ["operator"]})


def test_a_gate_is_approved_only_by_the_policys_approvers_never_by_the_templates_list() -> None:
    """Issue 11: the submitter's template named themself; the operator's policy decides."""
    sim = Sim(spec(step("build"), step("deploy", approval=True)), policy=APPROVERS)
    sim.run(ok)
    assert sim.view().step("deploy").status == "waiting_approval"  # type: ignore[union-attr]
    asked = [o.event for o in sim.published if o.subject.endswith(".approval_required")]
    assert asked[0].approvers == ["alice"]  # type: ignore[union-attr]
    for answer in (PipelineApproved(ts=NOW, step="deploy", by="mallory"), PipelineDenied(ts=NOW, step="deploy", by="mallory")):
        sim.publish(answer)
        (refused,) = sim.settle()
        assert isinstance(refused.event, PipelineApprovalRefused)
        assert refused.event.reason.endswith("'mallory' is not an approver in the operator's policy (approvers: alice)")
        assert sim.view().step("deploy").status == "waiting_approval"  # type: ignore[union-attr]
    assert refused.msg_id != sim.published[-2].msg_id  # each refusal is its own record
    sim.publish(PipelineApproved(ts=NOW, step="deploy", by="alice"))
    sim.settle()
    assert [j.metadata["step"] for j in sim.requested()] == ["build", "deploy"]


def test_a_template_naming_only_non_approvers_fails_its_gate_at_once() -> None:
    sim = Sim(spec(step("build"), step("deploy", approval=True), approvers=["mallory"]), policy=APPROVERS)
    sim.run(ok)
    view = sim.view()
    assert view.status == "failed" and "approval_required" not in sim.kinds()
    assert view.step("deploy").reason == "none of the pipeline's approvers (mallory) may approve under the operator's policy"  # type: ignore[union-attr]


def test_a_steps_run_jobs_come_with_its_health_check_and_rollback() -> None:
    sim = Sim(spec(step("deploy", health_check="curl -f localhost", rollback="rm -rf /srv/app")))
    sim.settle()
    view = sim.view()
    run = sim.jobs["rel-1-s0-0"]
    assert [(c.role, c.command) for c in step_companions(view, run.metadata)] == [
        ("health check", "curl -f localhost"),
        ("rollback", "rm -rf /srv/app"),
    ]
    assert step_companions(view, {**run.metadata, "role": "rollback"}) == []
    assert step_companions(None, run.metadata) == []


def test_a_health_check_or_rollback_is_approved_with_its_run_job_on_that_node_only() -> None:
    """Approval is asked once, with the run job: its companions on that node are not held again.
    Nothing else rides on that approval: another command, node or step, a run job nobody
    approved, or (identities enforced) a request that is not the orchestrator's."""
    sim = Sim(spec(step("deploy", nodes=["n1", "n2"], health_check="curl -f localhost", rollback="rm -rf /srv/app")))
    sim.settle()
    view = sim.view()
    jobs = {j: msgspec.structs.replace(v, node=v.requested_node, requester_role="admin") for j, v in sim.jobs.items()}
    run = jobs["rel-1-s0-0"]
    jobs[run.job_id] = msgspec.structs.replace(run, approved_by="bob")
    meta = {**run.metadata, "role": "rollback"}
    undo = JobView(job_id="rel-1-s0-rb-0", status="requested", command="rm -rf /srv/app", requested_node=run.node,
                   metadata=meta, requester_role="admin")  # fmt: skip
    assert undo.requested_node == "n1"
    found = approved_with(view, undo, jobs.get, enforcing=True)
    assert found is not None and found.job_id == run.job_id
    check = msgspec.structs.replace(undo, command="curl -f localhost", metadata={**meta, "role": "health_check"})
    assert approved_with(view, check, jobs.get, enforcing=True) == found
    others = [
        msgspec.structs.replace(undo, command="rm -rf /"),  # not the step's rollback
        msgspec.structs.replace(undo, requested_node="n2"),  # n2's run job was not approved
        msgspec.structs.replace(undo, requester_role="submitter"),  # a foreign request under the id
        msgspec.structs.replace(undo, metadata={**meta, "role": "run"}),  # a run job is judged itself
        msgspec.structs.replace(undo, metadata={**meta, "step": "other"}),
    ]
    assert [approved_with(view, o, jobs.get, enforcing=True) for o in others] == [None] * len(others)
    assert approved_with(view, others[2], jobs.get, enforcing=False) == found  # no identities: nothing says who
    assert approved_with(None, undo, jobs.get, enforcing=True) is None


def test_approval_gate_denied_fails_the_pipeline() -> None:
    sim = Sim(spec(step("build"), step("deploy", approval=True), step("verify"), approvers=["bob"]))
    sim.run(ok)
    sim.publish(PipelineDenied(ts=NOW, step="deploy", by="bob", reason="change freeze"))
    sim.settle()
    view = sim.view()
    assert [(s.step_id, s.status) for s in view.steps] == [("build", "succeeded"), ("deploy", "failed"), ("verify", "skipped")]
    assert view.status == "failed"
    assert view.reason == "step deploy failed: denied by bob: change freeze"
    assert [j.metadata["step"] for j in sim.requested()] == ["build"]


def test_approval_gate_times_out() -> None:
    sim = Sim(gated())
    sim.run(ok)
    sim.now = NOW + timedelta(seconds=599)
    assert sim.settle() == []
    sim.now = NOW + timedelta(seconds=600)
    sim.settle()
    view = sim.view()
    assert view.status == "failed"
    assert view.step("deploy").reason == "not approved within 600s"  # type: ignore[union-attr]
    assert next_deadline(view) is None
    # A late approval changes nothing.
    sim.publish(PipelineApproved(ts=sim.now, step="deploy", by="bob"))
    assert sim.settle() == [] and sim.view().status == "failed"


# ---------------------------------------------------------------- restart


def everything() -> PipelineSpec:
    return spec(
        step("build", rollback="undo-build", tests=[ExitCodeTest()]),
        step("fan", nodes=["a", "b", "c"], max_parallel=2, max_fail_percentage=34, rollback="undo-fan"),
        step(
            "roll",
            nodes=["a", "b", "c", "d"],
            strategy="rolling",
            batch_size=2,
            health_check="check",
            max_fail_percentage=25,
            rollback="undo-roll",
            approval=True,
        ),
        step("notify", needs=["fan", "roll"], when="failure"),
        step("cleanup", needs=["notify"], when="always"),
    )


def test_restart_replays_the_log_and_decides_nothing_new() -> None:
    sim = Sim(everything())
    sim.settle()
    sim.finish("rel-1-s0-0")
    sim.finish("rel-1-s1-0")
    before = list(sim.requests)
    # A fresh orchestrator: replay the log into a new view, re-decide.
    assert sim.settle() == []
    assert sim.requests == before
    # Deciding on a view whose jobs were not folded yet re-publishes the same requests only.
    view = sim.view()
    lagging = decide_pipeline(view, {}, {}, NOW, Policy(), enforcing=True)
    again = {subjects.parse(o.subject).id for o in lagging}
    assert again <= set(before)
    assert all(o.msg_id == f"job:{subjects.parse(o.subject).id}:requested:1" for o in lagging)
    assert len(lagging) == 2  # `fan` still has two unfinished jobs (max_parallel 2); nothing else


def test_restart_after_jobs_were_requested_but_step_started_was_lost() -> None:
    sim = Sim(spec(step("deploy", nodes=["w1", "w2"])))
    outs = decide_pipeline(sim.view(), {}, {}, NOW, Policy(), enforcing=True)
    pipeline_events = [o for o in outs if subjects.parse(o.subject).family == "pipeline"]
    assert [o.msg_id for o in pipeline_events] == ["pipeline:rel-1:step_started:deploy:0"]
    # Only the job.requested events reached the log: the next decision re-emits the
    # same step_started (same msg id) and requests nothing the log already has.
    jobs: dict[str, JobView] = {}
    for o in outs:
        if isinstance(o.event, JobRequested):
            job_id = subjects.parse(o.subject).id
            jobs[job_id] = JobView(job_id=job_id, status="requested", command="x", requested_by="alice", requester_role="admin")
    again = decide_pipeline(sim.view(), jobs, {}, NOW, Policy(), enforcing=True)
    assert [o.msg_id for o in again] == ["pipeline:rel-1:step_started:deploy:0"]


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_any_history_keeps_the_invariants(data: st.DataObject) -> None:
    sim = Sim(everything())
    sim.settle()
    for _ in range(200):
        view = sim.view()
        if view.status in ("succeeded", "failed"):
            break
        # Never more unfinished jobs of a step than its max_parallel.
        per_step = Counter(sim.jobs[j].metadata["step"] for j in sim.active() if sim.jobs[j].metadata["role"] == "run")
        assert per_step["fan"] <= 2
        gate = view.step("roll")
        assert gate is not None
        if gate.status == "waiting_approval":
            action = data.draw(st.sampled_from(["approve", "deny", "timeout"]))
            if action == "approve":
                sim.publish(PipelineApproved(ts=sim.now, step="roll", by="ops"))
            elif action == "deny":
                sim.publish(PipelineDenied(ts=sim.now, step="roll", by="ops"))
            else:
                sim.now += timedelta(hours=2)
            sim.settle()
            continue
        active = sim.active()
        assert active, "a running pipeline with nothing to wait for"
        job_id = data.draw(st.sampled_from(active))
        sim.finish(job_id, data.draw(st.sampled_from(["succeeded", "failed", "timed_out", "lost"])), "x")
    view = sim.view()
    assert view.status in ("succeeded", "failed")
    assert sim.settle() == []
    assert len(sim.requests) == len(set(sim.requests))
    assert (view.status == "failed") == any(s.status == "failed" for s in view.steps)
    assert sim.kinds().count("succeeded") + sim.kinds().count("failed") == 1
    # Rollbacks only where the step's job succeeded, and only after every run job ended.
    for rb in sim.requested("rollback"):
        step_view = view.step(str(rb.metadata["step"]))
        assert step_view is not None
        ran = {j.node for j in step_view.jobs if sim.jobs.get(j.job_id) and sim.jobs[j.job_id].status == "succeeded"}
        assert rb.requested_node in ran or (rb.requested_node == "auto-1")
    first_rb = next((i for i, j in enumerate(sim.requests) if sim.jobs[j].metadata["role"] == "rollback"), None)
    if first_rb is not None:
        assert all(sim.jobs[j].metadata["role"] == "rollback" for j in sim.requests[first_rb:])
    # The rolling step never touched a batch after the one that failed.
    roll = view.step("roll")
    assert roll is not None
    if roll.status == "failed" and roll.jobs:
        assert len(roll.jobs) == (roll.batch + 1) * 2


# ---------------------------------------------------------------- fold and ids


def test_fold_ignores_duplicates_late_events_and_unknown_pipelines() -> None:
    req = PipelineRequested(spec=chain(), requested_by="alice")
    view = evolve_pipeline(None, "p", req, NOW, 1)
    assert view is not None and view.first_seq == 1 and [s.needs for s in view.steps] == [[], ["build"], ["test"], ["deploy"]]
    again = evolve_pipeline(view, "p", PipelineRequested(spec=spec(step("x")), requested_by="eve"), NOW, 2)
    assert again is not None and again.requested_by == "alice" and again.last_seq == 2
    done = evolve_pipeline(view, "p", PipelineSucceeded(), NOW, 3)
    late = evolve_pipeline(done, "p", PipelineFailed(reason="late"), NOW, 4)
    assert late is not None and late.status == "succeeded" and late.reason is None and late.last_seq == 4
    assert evolve_pipeline(None, "q", PipelineFailed(reason="x"), NOW, 5) is None
    assert view.last_seq == 1 and view.status == "running"  # the fold never mutates its input


def test_every_event_kind_round_trips_through_json() -> None:
    kinds = {str(c.__struct_config__.tag) for c in typing.get_args(PipelineEvent)}
    sim = Sim(everything())
    sim.run(fail_steps("fan"))
    sim.publish(PipelineApproved(step="roll", by="ops"))
    sim.publish(PipelineDenied(step="roll", by="ops"))
    sim.publish(PipelineApprovalRefused(step="roll", by="ops", decision="denied", reason="not an approver"))
    sim.publish(PipelineRejected(code="invalid_spec", reason="late: the pipeline ended"))
    seen = {tag(ev) for ev, _ in sim.log}
    assert kinds - seen <= {"pipeline.succeeded", "pipeline.approval_required", "pipeline.health_check_started"}
    for ev, _ in sim.log:
        assert roundtrip(ev) == ev
    assert all(k.startswith("pipeline.") for k in kinds)


def test_step_job_ids_are_valid_unambiguous_and_fit_64_chars() -> None:
    assert step_job_id("rel-1", 2, 0) == "rel-1-s2-0"
    assert step_job_id("rel-1", 2, 3, "health_check", 1) == "rel-1-s2-hc-1-3"
    assert step_job_id("rel-1", 2, 3, "rollback") == "rel-1-s2-rb-3"
    # Pipeline ids with dashes cannot collide with another pipeline's step ids.
    ids = {step_job_id(p, pos, n, role, b) for p in ("p", "p-s1", "p-s1-hc") for pos in range(3) for n in range(3) for b in range(2)
           for role in ("run", "health_check", "rollback")}  # fmt: skip
    assert len(ids) == 3 * 3 * 3 * (1 + 2 + 1) + 3 * 3 * 3 * 0  # run and rollback ignore batch
    long = "x" * 64
    a, b = step_job_id(long, 12, 345, "health_check", 67), step_job_id(long[:-1] + "y", 12, 345, "health_check", 67)
    assert len(a) == 64 and a != b and subjects.is_valid_id(a)
    assert a.endswith("-s12-hc-67-345")


def test_every_step_job_id_and_only_those_has_the_step_shape() -> None:
    made = [step_job_id(p, pos, n, role, b) for p in ("p", "p-s1", "x" * 64) for pos in (0, 12) for n in (0, 7)
            for role in ("run", "health_check", "rollback") for b in (0, 3)]  # fmt: skip
    assert all(is_step_job_id(j) for j in made)
    assert not any(map(is_step_job_id, ["j-18f3a-abc123", "deploy", "-s1-0", "p-s1", "p-s-1", "p-s1-hc-2", "p-s1-rb-", "p-s1-x"]))


def test_started_step_keeps_its_plan() -> None:
    view = evolve_pipeline(None, "p", PipelineRequested(spec=spec(step("d", labels={"r": "w"}))), NOW, 1)
    jobs = [StepJob(job_id="p-s0-0", node="w1")]
    view = evolve_pipeline(view, "p", PipelineStepStarted(step="d", jobs=jobs, nodes=["w1"]), NOW, 2)
    view = evolve_pipeline(view, "p", PipelineStepStarted(step="d", jobs=jobs, nodes=["w1"]), NOW, 3)
    assert view is not None and view.steps[0].jobs == jobs and view.steps[0].status == "running"


def test_a_step_job_that_never_got_a_node_is_not_said_to_have_run_on_one() -> None:
    sim = Sim(chain())
    sim.settle()
    sim.jobs["rel-1-s0-0"] = msgspec.structs.replace(sim.jobs["rel-1-s0-0"], node=None)
    sim.finish("rel-1-s0-0", "rejected", "no node has tool 'ansible'")
    assert sim.view().steps[0].reason == "job rel-1-s0-0 rejected (no node has tool 'ansible')"


# ---------------------------------------------------------------- as people read it


def test_a_running_step_says_what_its_jobs_wait_for_and_where_they_ran() -> None:
    sim = Sim(spec(step("build"), step("deploy", nodes=["prod-1"]), step("verify")))
    sim.settle()
    sim.finish("rel-1-s0-0")
    states = {
        "rel-1-s0-0": StepJobState(status="succeeded", node="auto-1"),
        "rel-1-s1-0": StepJobState(status="approval_required", reason="critical on production"),
    }
    view = shown(sim.view(), states)
    build, deploy, verify = view.steps
    assert (build.nodes, build.jobs) == (["auto-1"], [StepJob(job_id="rel-1-s0-0", node="auto-1")])
    note = "job rel-1-s1-0 is held for approval (critical on production): nexus approve rel-1-s1-0 (or nexus deny rel-1-s1-0)"
    assert (deploy.status, deploy.reason, deploy.nodes) == ("running", note, ["prod-1"])
    assert view.reason == f"step deploy: {note}"
    assert (verify.batch, verify.reason) == (-1, None)
    queued = shown(sim.view(), {"rel-1-s1-0": StepJobState(status="queued", reason="node 'prod-1' is not heard from")})
    assert queued.steps[1].reason == "job rel-1-s1-0 is queued: node 'prod-1' is not heard from"
    placed = shown(sim.view(), {"rel-1-s1-0": StepJobState(status="assigned", node="prod-1")})
    assert (placed.steps[1].reason, placed.reason) == (None, None)


def test_a_planned_job_never_requested_is_not_listed_as_sent_to_its_node() -> None:
    """max_parallel 2 on three nodes, the first two rejected: the step fails before the third job
    is requested. `nexus pipeline show` and the API listed it anyway, on its node."""
    sim = Sim(spec(step("deploy", nodes=["w1", "w2", "w3"], max_parallel=2)))
    sim.settle()
    sim.finish("rel-1-s0-0", "rejected", "node 'w1' is not registered")
    sim.finish("rel-1-s0-1", "rejected", "node 'w2' is not registered")
    view = sim.view()
    assert view.steps[0].status == "failed" and len(view.steps[0].jobs) == 3  # the plan, as folded
    deploy = requested_only(view, sim.jobs.keys()).steps[0]
    assert [j.job_id for j in deploy.jobs] == ["rel-1-s0-0", "rel-1-s0-1"]
    assert deploy.reason is not None and deploy.reason.startswith(view.steps[0].reason or "?")
    assert deploy.reason.endswith("; 1 job(s) not started (w3)")
    assert requested_only(view, [j.job_id for j in view.steps[0].jobs]) == view


@pytest.mark.parametrize("pid", ["rel-1", "p" * 64])
def test_step_jobs_are_known_by_their_shape(pid: str) -> None:
    assert all(of_pipeline(pid, step_job_id(pid, 2, n, role, 1)) for n in (0, 11) for role in ("run", "health_check", "rollback"))
    assert not of_pipeline(pid, "other-s0-0") and not of_pipeline(pid, f"{pid}-x") and not of_pipeline("rel", "rel-1-s0-0")
