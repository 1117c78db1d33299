"""Decisions: placement, verdicts, cancel, lost jobs and node liveness, against a fixed `now`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core import decide, planner, reducer
from orchestrator.core.decide import Fleet
from orchestrator.core.job_fold import evolve_job
from orchestrator.core.judge import judge, submission_of
from orchestrator.core.policy import Policy, Rule
from orchestrator.core.views import JobView, NodeView
from schemas import codec, subjects
from schemas.envelope import Outgoing
from schemas.events import (
    JobAccepted,
    JobAssigned,
    JobCancel,
    JobCancelled,
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
    JobTestRequested,
    JobTimedOut,
    JobValidated,
    NodeHeartbeat,
    NodeLost,
    NodeRegistered,
)
from schemas.limits import DISPATCH_TTL_S
from schemas.records import Record
from schemas.secrets import MASK
from schemas.values import ExitCodeTest, FileExistsTest

NOW = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
TTL = 10.0


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def hb(
    node: str,
    *,
    tools: Iterable[str] = ("bash",),
    labels: dict[str, str] | None = None,
    max_jobs: int = 1,
    age: float = 0.0,
    instance: str = "",
) -> NodeHeartbeat:
    return NodeHeartbeat(
        node=node, ts=ago(age), tools=list(tools), labels=labels or {}, max_jobs=max_jobs, instance=instance
    )


def fleet(
    *beats: NodeHeartbeat, load: dict[str, int] | None = None, views: Iterable[str] | None = None, registered: float = 60.0
) -> Fleet:
    names = [b.node for b in beats] if views is None else list(views)
    return Fleet(
        views={n: NodeView(node_id=n, tools=["bash", "sh"], registered_at=ago(registered)) for n in names},
        heartbeats={b.node: b for b in beats},
        load=dict(load or {}),
        ttl_s=TTL,
    )


def job(job_id: str = "j1", status: str = "validated", **kw: Any) -> JobView:
    return JobView(job_id=job_id, status=status, command=kw.pop("command", "echo hi"), **kw)  # type: ignore[arg-type]


def judged(view: JobView, f: Fleet, policy: Policy | None = None, **kw: Any) -> decide.Context:
    """The context the orchestrator builds for a requested job: the one verdict (core.judge) on it."""
    policy = policy or Policy()
    verdict = judge(submission_of(view), policy, decide.candidates(f, NOW))
    return decide.Context(policy=policy, review=decide.Review(judgement=verdict, duration_ms=0.4), **kw)


def exited(**kw: Any) -> JobView:
    kw.setdefault("node", "n1")
    kw.setdefault("attempt", 1)
    return job(status="exited", **kw)


def only(outs: list[Outgoing]) -> Outgoing:
    assert len(outs) == 1, outs
    return outs[0]


def rejection(outs: list[Outgoing]) -> JobRejected:
    out = only(outs)
    assert isinstance(out.event, JobRejected)
    assert out.subject == "nexus.evt.job.j1.rejected"
    assert out.msg_id == "job:j1:rejected:0"
    assert out.event.ts == NOW
    return out.event


def assigned_node(outs: list[Outgoing]) -> str:
    assert len(outs) == 2, outs
    assert isinstance(outs[0].event, JobAssigned)
    assert isinstance(outs[1].event, JobDispatch)
    return outs[0].event.node


# ---------------------------------------------------------------- placement: rejections


def test_explicit_unknown_node_is_rejected() -> None:
    ev = rejection(decide.decide_job(job(requested_node="n9"), fleet(hb("n1")), NOW))
    assert ev.code == "unknown_node"
    assert "n9" in ev.reason


def test_a_node_whose_agent_stopped_gets_no_new_job_but_keeps_what_it_holds() -> None:
    """Its last heartbeat says it stopped (a restart): a job placed there in the heartbeat's last
    seconds waited, then was declared lost with the node. Now it goes elsewhere, or waits."""
    stopping = msgspec.structs.replace(hb("n1"), stopped=True)
    f = fleet(stopping, hb("n2"))
    assert assigned_node(decide.decide_job(job(), f, NOW)) == "n2"
    pinned = only(decide.decide_job(job(requested_node="n1"), f, NOW))
    assert isinstance(pinned.event, JobQueued) and "waiting" in pinned.event.reason
    # What was dispatched to it before is not declared lost while the heartbeat is fresh: a
    # restarted agent takes it from its consumer.
    assert decide.decide_job(job(status="dispatched", node="n1", attempt=1), f, NOW) == []


def test_a_drained_node_gets_no_new_job_and_jobs_asked_for_on_it_wait_until_it_is_undrained() -> None:
    """DESIGN §3's `node.drained`: an operator took the node out of placement (maintenance). It
    beats on, so the jobs that need it wait for it (never rejected for its silence), saying why."""
    f = fleet(hb("n1"), hb("n2"))
    f.views["n1"] = msgspec.structs.replace(f.views["n1"], drained=True)
    assert assigned_node(decide.decide_job(job(), f, NOW)) == "n2"
    pinned = only(decide.decide_job(job(requested_node="n1"), f, NOW))
    assert isinstance(pinned.event, JobQueued)
    assert pinned.event.reason == "node 'n1' is drained (no new jobs); waiting until it is undrained"
    queued = job(requested_node="n1", status="queued", reason=pinned.event.reason)
    assert decide.decide_job(queued, f, NOW) == []  # said once
    # The only node with the tool drained: wait for it, not for a heartbeat's grace.
    alone = fleet(hb("n1"))
    alone.views["n1"] = msgspec.structs.replace(alone.views["n1"], drained=True)
    waiting = only(decide.decide_job(job(), alone, NOW))
    assert isinstance(waiting.event, JobQueued) and "(drained: n1)" in waiting.event.reason
    assert "after its last heartbeat" not in waiting.event.reason
    # A drained node the job's selector does not match is no reason to wait for it (audit: the
    # reason named an unrelated drained node and left out the grace the job was then rejected at).
    db_down = fleet(hb("n1"), hb("db-1", labels={"role": "db"}, age=TTL + 1))  # the db node's agent stopped a moment ago
    db_down.views["n1"] = msgspec.structs.replace(db_down.views["n1"], drained=True)
    other = only(decide.decide_job(job(labels={"role": "db"}), db_down, NOW))
    assert isinstance(other.event, JobQueued) and "drained" not in other.event.reason, other.event.reason
    assert "after its last heartbeat, then the job is rejected" in other.event.reason
    # What it already runs is its own: not lost, not moved.
    assert decide.decide_job(job(status="running", node="n1", attempt=1), f, NOW) == []
    # Undrained: it takes jobs again.
    f.views["n1"] = msgspec.structs.replace(f.views["n1"], drained=False)
    assert assigned_node(decide.decide_job(queued, f, NOW)) == "n1"


@pytest.mark.parametrize(
    "f",
    [
        pytest.param(fleet(hb("n1", age=TTL + 0.001)), id="stale-heartbeat"),
        pytest.param(fleet(views=["n1"]), id="registered-without-heartbeat"),
        pytest.param(fleet(hb("n1", age=Fleet.offline_grace_s)), id="silent-for-the-whole-grace"),
    ],
)
def test_explicit_known_but_offline_node_makes_the_job_wait(f: Fleet) -> None:
    # Issue 9: a node merely not heard from (a broker restart) must not fail its jobs.
    out = only(decide.decide_job(job(requested_node="n1"), f, NOW))
    assert isinstance(out.event, JobQueued)
    assert "n1" in out.event.reason and "waiting" in out.event.reason
    assert f"at most {Fleet.offline_grace_s:g}s after its last heartbeat" in out.event.reason
    assert decide.decide_job(job(requested_node="n1", status="queued"), f, NOW) == []


@pytest.mark.parametrize(
    "f",
    [
        pytest.param(fleet(hb("n1", age=Fleet.offline_grace_s + 0.001)), id="silent-past-the-grace"),
        pytest.param(fleet(views=["n1"], registered=3600), id="registered-long-ago-never-heard"),
    ],
)
@pytest.mark.parametrize("status", ["validated", "queued"])
def test_a_job_stops_waiting_for_a_node_gone_past_the_grace(f: Fleet, status: str) -> None:
    # Review: a job pinned to a node gone for good waited for ever, contrary to docs/state.md.
    ev = rejection(decide.decide_job(job(requested_node="n1", status=status), f, NOW))
    assert ev.code == "node_offline"
    assert "node 'n1' is offline: not heard from since" in ev.reason and f"{Fleet.offline_grace_s:g}s" in ev.reason


def test_a_job_stops_waiting_when_every_capable_node_is_gone_past_the_grace() -> None:
    f = fleet(hb("n1", tools=["python3"], age=Fleet.offline_grace_s + 1), hb("n2"))
    ev = rejection(decide.decide_job(job(tool="python3"), f, NOW))
    assert ev.code == "no_capable_node" and "heard from lately" in ev.reason


def test_no_job_is_rejected_for_a_gone_node_while_the_orchestrator_warms_up() -> None:
    f = fleet(hb("n1", age=3600))
    f.warming_until = NOW + timedelta(seconds=1)
    assert decide.decide_job(job(requested_node="n1"), f, NOW) == []


def test_heartbeat_exactly_ttl_old_is_still_live() -> None:
    outs = decide.decide_job(job(requested_node="n1"), fleet(hb("n1", age=TTL)), NOW)
    assert assigned_node(outs) == "n1"


def test_explicit_node_without_the_tool_is_rejected() -> None:
    ev = rejection(decide.decide_job(job(requested_node="n1", tool="python3"), fleet(hb("n1")), NOW))
    assert ev.code == "tool_missing"
    assert "python3" in ev.reason and "n1" in ev.reason


@pytest.mark.parametrize(
    ("f", "j"),
    [
        pytest.param(fleet(), job(), id="empty-fleet"),
        pytest.param(fleet(hb("n1"), hb("n2")), job(tool="python3"), id="nobody-has-the-tool"),
        pytest.param(fleet(hb("n1", labels={"zone": "eu"})), job(labels={"zone": "us"}), id="labels-mismatch"),
        pytest.param(fleet(hb("n1")), job(labels={"gpu": "yes"}), id="label-absent"),
    ],
)
def test_no_capable_node_is_rejected(f: Fleet, j: JobView) -> None:
    ev = rejection(decide.decide_job(j, f, NOW))
    assert ev.code == "no_capable_node"
    assert repr(j.tool) in ev.reason
    if j.labels:
        assert "labels" in ev.reason


def test_only_capable_node_not_heard_from_makes_the_job_wait() -> None:
    f = fleet(hb("n1", tools=["python3"], age=60), hb("n2"))
    out = only(decide.decide_job(job(tool="python3"), f, NOW))
    assert isinstance(out.event, JobQueued)
    assert "waiting" in out.event.reason


def test_nothing_placeable_is_rejected_before_asking_for_approval() -> None:
    # Issue 9: approving a job no node can take dead-ends in `rejected`; say so at once.
    view, f = job(status="requested", command="rm -rf /", labels={"env": "prod"}), fleet(hb("n1"))
    assert rejection(decide.decide_job(view, f, NOW, judged(view, f))).code == "no_capable_node"


def test_a_requested_job_is_not_decided_before_it_is_judged() -> None:
    assert decide.decide_job(job(status="requested"), fleet(hb("n1")), NOW) == []


def test_a_dispatch_over_the_size_limit_is_rejected_at_analysis() -> None:
    env = {f"V{i}": "x" * 16000 for i in range(40)}  # each value within limits, the sum is not
    view, f = job(status="requested", env=env), fleet(hb("n1"))
    ev = rejection(decide.decide_job(view, f, NOW, judged(view, f)))
    assert ev.code == "too_large"


def test_a_rejection_by_the_analysis_carries_what_it_found() -> None:
    """Review: a job refused by a deny rule read 'Severity: none / No findings' while the analysis
    had found `critical remote_code`: the rejection kept only code and reason."""
    policy = Policy(deny=[Rule(pattern=r"curl .*\| *sh", reason="no piping the web into a shell")])
    view, f = job(status="requested", command="curl http://x | sh"), fleet(hb("n1"))
    ev = rejection(decide.decide_job(view, f, NOW, judged(view, f, policy)))
    assert (ev.code, ev.severity) == ("policy_denied", "critical")
    assert "remote_code" in {w.type for w in ev.warnings} and all(w.command is None for w in ev.warnings)
    after, note = evolve_job(job(status="requested"), "j1", ev, NOW, 5)
    assert note is None and after is not None and (after.status, after.severity, after.warnings) == ("rejected", "critical", ev.warnings)


# ---------------------------------------------------------------- placement: choice


def test_label_selector_filters_candidates() -> None:
    f = fleet(
        hb("a", labels={"zone": "eu"}),
        hb("b", labels={"zone": "us", "disk": "ssd"}),
        hb("c", labels={"zone": "us"}, tools=["sh"]),
    )
    outs = decide.decide_job(job(labels={"zone": "us"}), f, NOW)
    assert assigned_node(outs) == "b"
    assert outs[0].event.candidates == ["b"]  # type: ignore[union-attr]


def test_least_loaded_wins() -> None:
    f = fleet(hb("a", max_jobs=2), hb("b", max_jobs=2), load={"a": 1})
    assert assigned_node(decide.decide_job(job(), f, NOW)) == "b"


def test_least_loaded_is_relative_to_capacity() -> None:
    # a: 2 of 8 busy (25%), b: 1 of 2 busy (50%)
    f = fleet(hb("a", max_jobs=8), hb("b", max_jobs=2), load={"a": 2, "b": 1})
    assert assigned_node(decide.decide_job(job(), f, NOW)) == "a"


def test_ties_are_broken_by_name() -> None:
    f = fleet(hb("zeta"), hb("alpha"), hb("mid"))
    outs = decide.decide_job(job(), f, NOW)
    assert assigned_node(outs) == "alpha"
    ev = outs[0].event
    assert isinstance(ev, JobAssigned)
    assert ev.candidates == ["alpha", "mid", "zeta"]
    assert ev.reason == "least loaded, then preferred labels, then cost: alpha (0/1) over mid (0/1), zeta (0/1)"


def test_dead_nodes_are_not_candidates() -> None:
    f = fleet(hb("a", age=TTL + 1), hb("b"))
    outs = decide.decide_job(job(), f, NOW)
    assert assigned_node(outs) == "b"
    assert outs[0].event.candidates == ["b"]  # type: ignore[union-attr]


def test_explicit_node_is_used_even_if_busier() -> None:
    f = fleet(hb("a", max_jobs=4), hb("b", max_jobs=4), load={"a": 3})
    outs = decide.decide_job(job(requested_node="a"), f, NOW)
    assert assigned_node(outs) == "a"
    assert outs[0].event.reason == "requested node"  # type: ignore[union-attr]


def test_all_full_is_queued_once() -> None:
    f = fleet(hb("a"), hb("b", max_jobs=2), load={"a": 1, "b": 2})
    out = only(decide.decide_job(job(), f, NOW))
    assert isinstance(out.event, JobQueued)
    assert out.subject == "nexus.evt.job.j1.queued"
    assert out.msg_id == "job:j1:queued:0"
    assert out.event.ts == NOW
    assert "all 2 capable node(s)" in out.event.reason
    assert decide.decide_job(job(status="queued"), f, NOW) == []
    assert f.load == {"a": 1, "b": 2}


def test_explicit_full_node_is_queued() -> None:
    f = fleet(hb("a"), hb("b"), load={"a": 1})
    out = only(decide.decide_job(job(requested_node="a"), f, NOW))
    assert isinstance(out.event, JobQueued)


def test_zero_capacity_node_never_takes_a_job() -> None:
    f = fleet(hb("a", max_jobs=0))
    assert isinstance(only(decide.decide_job(job(), f, NOW)).event, JobQueued)


def test_queued_job_is_placed_when_capacity_frees() -> None:
    f = fleet(hb("a"))
    assert assigned_node(decide.decide_job(job(status="queued"), f, NOW)) == "a"


def test_assignment_subjects_events_and_msg_ids() -> None:
    j = job(
        "j7",
        command="make -j4",
        tool="sh",
        working_dir="/src",
        env={"CC": "gcc"},
        timeout_s=30.0,
    )
    outs = decide.decide_job(j, fleet(hb("n1", tools=["bash", "sh"])), NOW)
    assert [(o.subject, o.msg_id) for o in outs] == [
        ("nexus.evt.job.j7.assigned", "job:j7:assigned:1"),
        ("nexus.evt.job.j7.dispatch.n1", "job:j7:dispatch:1"),
    ]
    assert outs[0].event == JobAssigned(
        ts=NOW, node="n1", attempt=1, candidates=["n1"], reason="least loaded, then preferred labels, then cost: n1 (0/1)"
    )
    assert outs[1].event == JobDispatch(
        ts=NOW,
        attempt=1,
        tool="sh",
        command="make -j4",
        argv=["sh", "-c", "make -j4"],
        working_dir="/src",
        env={"CC": "gcc"},
        timeout_s=30.0,
        expires_at=NOW + timedelta(seconds=DISPATCH_TTL_S),  # signed: the agent refuses it after that
    )
    # Every subject and payload must survive the codec, as the bus will encode them.
    for o in outs:
        assert codec.decode(o.subject, codec.encode(o.event)) == o.event


def test_next_attempt_numbers_the_ids() -> None:
    outs = decide.decide_job(job("j2", status="queued", attempt=2), fleet(hb("n1")), NOW)
    assert [o.msg_id for o in outs] == ["job:j2:assigned:3", "job:j2:dispatch:3"]
    assert outs[0].event.attempt == 3  # type: ignore[union-attr]
    assert outs[1].event.attempt == 3  # type: ignore[union-attr]


def test_decisions_are_deterministic() -> None:
    def run() -> list[Outgoing]:
        return decide.decide_job(job(), fleet(hb("a"), hb("b")), NOW)

    assert run() == run()


@pytest.mark.parametrize(
    ("tool", "argv"),
    [
        ("bash", ["bash", "-c", "ls"]),
        ("sh", ["sh", "-c", "ls"]),
        ("zsh", ["zsh", "-c", "ls"]),
        ("python3", ["bash", "-c", "ls"]),
        ("kubectl", ["bash", "-c", "ls"]),
    ],
)
def test_argv_for(tool: str, argv: list[str]) -> None:
    assert decide.argv_for(tool, "ls") == argv


def test_load_is_counted_so_a_loop_never_exceeds_max_jobs() -> None:
    f = fleet(hb("a", max_jobs=2), hb("b", max_jobs=2), hb("c", max_jobs=1, tools=["sh"]))
    placed: list[str] = []
    queued = 0
    for i in range(7):
        outs = decide.decide_job(job(f"j{i}"), f, NOW)
        if isinstance(outs[0].event, JobQueued):
            queued += 1
        else:
            placed.append(assigned_node(outs))
    assert placed == ["a", "b", "a", "b"]
    assert queued == 3
    assert f.load == {"a": 2, "b": 2}


# ---------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    ("view", "expected", "kind"),
    [
        pytest.param(exited(exit_code=0), JobSucceeded(ts=NOW, attempt=1, exit_code=0), "succeeded", id="exit-0"),
        pytest.param(
            exited(exit_code=3),
            JobFailed(ts=NOW, attempt=1, reason="exit code 3", exit_code=3),
            "failed",
            id="exit-3",
        ),
        pytest.param(
            exited(exit_code=None, signal=9, killed_by="timeout", timeout_s=2.0),
            JobTimedOut(ts=NOW, attempt=1, timeout_s=2.0),
            "timed_out",
            id="timeout",
        ),
        pytest.param(
            exited(exit_code=0, killed_by="timeout"),
            JobTimedOut(ts=NOW, attempt=1),
            "timed_out",
            id="timeout-wins-over-exit-0",
        ),
        pytest.param(
            exited(exit_code=None, signal=15, killed_by="cancel"),
            JobCancelled(ts=NOW, reason="cancelled while running"),
            "cancelled",
            id="cancel",
        ),
        pytest.param(
            exited(exit_code=None, reason="bash: not found"),
            JobFailed(ts=NOW, attempt=1, reason="bash: not found"),
            "failed",
            id="error",
        ),
        pytest.param(
            exited(exit_code=None, signal=9),
            JobFailed(ts=NOW, attempt=1, reason="killed by signal 9"),
            "failed",
            id="signal",
        ),
        pytest.param(
            exited(exit_code=None),
            JobFailed(ts=NOW, attempt=1, reason="did not exit normally"),
            "failed",
            id="no-exit-code",
        ),
        pytest.param(
            exited(exit_code=3, tests=[ExitCodeTest(expected=3)]),
            JobSucceeded(ts=NOW, attempt=1, exit_code=3),
            "succeeded",
            id="expected-3",
        ),
        pytest.param(
            exited(exit_code=0, tests=[ExitCodeTest(expected=3)]),
            JobFailed(ts=NOW, attempt=1, reason="exit code 0, expected 3", exit_code=0),
            "failed",
            id="expected-3-got-0",
        ),
        pytest.param(
            exited(exit_code=4, attempt=2),
            JobFailed(ts=NOW, attempt=2, reason="exit code 4", exit_code=4),
            "failed",
            id="attempt-2",
        ),
    ],
)
def test_verdict_after_exit(view: JobView, expected: object, kind: str) -> None:
    outs = decide.decide_job(view, fleet(hb("n1")), NOW)
    if view.tests:  # the test phase's results come first
        tested, *outs = outs
        assert isinstance(tested.event, JobTested) and tested.event.passed == (kind == "succeeded")
    out = only(outs)
    if isinstance(expected, JobFailed) and view.tests:
        assert out.event.reason.startswith("tests failed: exit_code")  # type: ignore[union-attr]
        return
    assert out.event == expected
    assert out.subject == f"nexus.evt.job.j1.{kind}"
    assert out.msg_id == f"job:j1:{kind}:{view.attempt}"


@pytest.mark.parametrize(
    ("view", "actual"),
    [
        pytest.param(
            job(status="cancelled", exited_at=NOW, signal=15, killed_by="cancel"),
            "no exit code (killed by signal 15, cancelled)",
            id="cancelled-while-running",
        ),
        pytest.param(
            job(status="timed_out", exited_at=NOW, signal=9, killed_by="timeout"),
            "no exit code (killed by signal 9, timed out)",
            id="timed-out",
        ),
        pytest.param(job(status="failed", exited_at=NOW, signal=11), "no exit code (killed by signal 11)", id="signal"),
        pytest.param(job(status="failed", exited_at=NOW, reason="bash: not found"), "no exit code (bash: not found)", id="not-started"),
        pytest.param(job(status="cancelled"), "no exit code (the job never exited: cancelled)", id="never-ran"),
        pytest.param(job(status="succeeded", exited_at=NOW, exit_code=0), "0", id="exit-0"),
    ],
)
def test_a_later_exit_code_test_says_why_there_is_no_exit_code(view: JobView, actual: str) -> None:
    """Not Python's `None`: the CLI and the API show this `actual` as it is."""
    asked = msgspec.structs.replace(view, node="n1", attempt=1, retest=[ExitCodeTest(expected=0)])
    (out,) = decide.decide_job(asked, fleet(hb("n1")), NOW)
    assert isinstance(out.event, JobTested)
    assert [(r.actual, r.passed) for r in out.event.results] == [(actual, actual == "0")]


def test_verdict_does_not_need_a_live_node() -> None:
    assert isinstance(only(decide.decide_job(exited(exit_code=0), fleet(), NOW)).event, JobSucceeded)


def fold_to_exit(exit_event: JobExited) -> JobView:
    """A job folded from its real history: decided placement, agent facts, then `exit_event`."""
    f = fleet(hb("n1", instance="i1"))
    jobs: dict[str, JobView] = {}
    seq = 0

    def apply(subject: str, ev: Any) -> None:
        nonlocal seq
        seq += 1
        r = Record(seq=seq, subject=subject, stream_ts=NOW, raw=codec.encode(ev), event=ev)
        applied = reducer.apply(jobs, {}, r)
        assert applied.row.error is None
        assert applied.job is not None
        jobs[applied.job.job_id] = applied.job

    apply(subjects.job("j1", "requested"), JobRequested(command="sleep 100"))
    for out in decide.decide_job(jobs["j1"], f, NOW):
        apply(out.subject, out.event)
    apply(subjects.job("j1", "validated"), JobValidated())  # (the service's analysis, not decide_job's)
    # Facts count only after the dispatch of their attempt to their node.
    apply(subjects.job("j1", "assigned"), JobAssigned(node="n1", attempt=1))
    apply(subjects.dispatch("j1", "n1"), JobDispatch(attempt=1, tool="bash", command="sleep 100", argv=["bash", "-c", "sleep 100"]))
    apply(subjects.fact("j1", "accepted"), JobAccepted(node="n1", attempt=1, instance="i1"))
    apply(subjects.fact("j1", "started"), JobStarted(node="n1", attempt=1, pid=1))
    apply(subjects.fact("j1", "exited"), exit_event)
    return jobs["j1"]


def test_folded_history_exit_3_fails_with_exit_code_reason() -> None:
    view = fold_to_exit(JobExited(node="n1", attempt=1, exit_code=3))
    ev = only(decide.decide_job(view, fleet(hb("n1")), NOW)).event
    assert ev == JobFailed(ts=NOW, attempt=1, reason="exit code 3", exit_code=3)


def test_folded_history_start_error_fails_with_the_error() -> None:
    view = fold_to_exit(JobExited(node="n1", attempt=1, error="cannot exec: no such file"))
    ev = only(decide.decide_job(view, fleet(hb("n1")), NOW)).event
    assert ev == JobFailed(ts=NOW, attempt=1, reason="cannot exec: no such file")


@pytest.mark.parametrize(
    ("exit_event", "reason"),
    [
        pytest.param(JobExited(node="n1", attempt=1, signal=9), "killed by signal 9", id="signal"),
        pytest.param(JobExited(node="n1", attempt=1), "did not exit normally", id="no-exit-code"),
    ],
)
def test_folded_history_signal_death_fails_with_the_signal(exit_event: JobExited, reason: str) -> None:
    view = fold_to_exit(exit_event)
    ev = only(decide.decide_job(view, fleet(hb("n1")), NOW)).event
    assert ev == JobFailed(ts=NOW, attempt=1, reason=reason)


# ---------------------------------------------------------------- cancel


@pytest.mark.parametrize("status", ["requested", "queued"])
def test_cancel_before_dispatch_cancels(status: str) -> None:
    out = only(decide.decide_job(job(status=status, cancel_requested=True), fleet(hb("n1")), NOW))
    assert out.event == JobCancelled(ts=NOW, reason="cancelled before it was dispatched")
    assert (out.subject, out.msg_id) == ("nexus.evt.job.j1.cancelled", "job:j1:cancelled:0")


@pytest.mark.parametrize("status", ["assigned", "dispatched"])
def test_cancel_before_the_agent_accepted_ends_the_job_at_once(status: str) -> None:
    view = job(status=status, node="n1", attempt=1, cancel_requested=True)
    kill, cancelled = decide.decide_job(view, fleet(hb("n1")), NOW)
    assert kill.event == JobCancel(ts=NOW, attempt=1) and kill.subject == "nexus.evt.job.j1.cancel.n1"
    assert isinstance(cancelled.event, JobCancelled) and cancelled.subject == "nexus.evt.job.j1.cancelled"


@pytest.mark.parametrize("status", ["accepted", "running"])
def test_cancel_on_node_sends_one_cancel_to_the_agent(status: str) -> None:
    view = job(status=status, node="n1", attempt=1, cancel_requested=True)
    out = only(decide.decide_job(view, fleet(hb("n1")), NOW))
    assert out.event == JobCancel(ts=NOW, attempt=1)
    assert out.subject == "nexus.evt.job.j1.cancel.n1"
    assert out.msg_id == "job:j1:cancel:1"
    sent = msgspec.structs.replace(view, cancel_sent=True)
    assert decide.decide_job(sent, fleet(hb("n1")), NOW) == []


def test_cancel_sent_to_a_vanished_node_ends_lost() -> None:
    view = job(status="running", node="n1", attempt=1, cancel_requested=True, cancel_sent=True)
    assert isinstance(decide.decide_job(view, fleet(hb("n1", age=TTL + 1)), NOW)[0].event, JobLost)


def test_cancel_after_exit_still_gives_the_verdict() -> None:
    view = exited(exit_code=0, cancel_requested=True)
    assert isinstance(only(decide.decide_job(view, fleet(hb("n1")), NOW)).event, JobSucceeded)


@pytest.mark.parametrize("status", ["rejected", "succeeded", "failed", "timed_out", "cancelled", "lost"])
def test_terminal_jobs_get_no_decision(status: str) -> None:
    view = job(status=status, node="n1", attempt=1, cancel_requested=True, exit_code=1)
    assert decide.decide_job(view, fleet(), NOW) == []


# ---------------------------------------------------------------- lost jobs


@pytest.mark.parametrize("status", ["assigned", "dispatched", "accepted", "running"])
@pytest.mark.parametrize(
    "f",
    [
        pytest.param(fleet(hb("n1", age=TTL + 0.5)), id="expired"),
        pytest.param(fleet(views=["n1"]), id="no-heartbeat"),
    ],
)
def test_job_on_a_silent_node_is_lost(status: str, f: Fleet) -> None:
    view = job(status=status, node="n1", attempt=2)
    out, *kill = decide.decide_job(view, f, NOW)
    assert isinstance(out.event, JobLost)
    assert (out.event.node, out.event.attempt, out.event.ts) == ("n1", 2, NOW)
    assert "heartbeats" in out.event.reason
    assert (out.subject, out.msg_id) == ("nexus.evt.job.j1.lost", "job:j1:lost:2")
    # Then a kill for that attempt (audit: a paused agent, back, ran it beside its retry elsewhere);
    # an attempt only assigned was never dispatched: nothing to kill.
    if status == "assigned":
        assert kill == []
    else:
        assert [(k.subject, k.msg_id, k.event.attempt) for k in kill] == [("nexus.evt.job.j1.cancel.n1", "job:j1:cancel:2", 2)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", ["accepted", "running"])
def test_agent_restart_under_a_running_job_is_lost(status: str) -> None:
    view = job(status=status, node="n1", attempt=1, instance="boot-1")
    out, kill = decide.decide_job(view, fleet(hb("n1", instance="boot-2")), NOW)
    assert isinstance(out.event, JobLost) and isinstance(kill.event, JobCancel)
    assert "restarted" in out.event.reason


@pytest.mark.parametrize(
    ("status", "job_instance", "hb_instance"),
    [
        pytest.param("running", "boot-1", "boot-1", id="same-instance"),
        pytest.param("running", "", "boot-2", id="agent-gave-no-instance"),
        pytest.param("dispatched", "", "boot-2", id="dispatched"),
    ],
)
def test_live_node_keeps_its_job(status: str, job_instance: str, hb_instance: str) -> None:
    view = job(status=status, node="n1", attempt=1, instance=job_instance)
    assert decide.decide_job(view, fleet(hb("n1", instance=hb_instance)), NOW) == []


# ---------------------------------------------------------------- nodes


def node_view(**kw: Any) -> NodeView:
    kw.setdefault("node_id", "n1")
    kw.setdefault("tools", ["bash"])
    kw.setdefault("last_seq", 12)
    return NodeView(**kw)


def test_decide_node_registers_a_new_node() -> None:
    beat = NodeHeartbeat(
        node="n1", ts=ago(1), tools=["bash", "git"], labels={"zone": "eu"}, max_jobs=3, hostname="h", version="0.2"
    )
    out = only(planner.decide_node(None, beat, NOW, TTL, since=ago(100)))
    assert out.event == NodeRegistered(
        ts=NOW, tools=["bash", "git"], labels={"zone": "eu"}, max_jobs=3, hostname="h", version="0.2"
    )
    assert (out.subject, out.msg_id) == ("nexus.evt.node.n1.registered", "node:n1:registered:0")


@pytest.mark.parametrize(
    "beat",
    [
        pytest.param(hb("n1", tools=["bash", "git"]), id="tool-added"),
        pytest.param(hb("n1", tools=[]), id="tools-removed"),
        pytest.param(hb("n1", labels={"zone": "us"}), id="labels"),
        pytest.param(hb("n1", max_jobs=4), id="max_jobs"),
    ],
)
def test_decide_node_re_registers_on_changed_capabilities(beat: NodeHeartbeat) -> None:
    out = only(planner.decide_node(node_view(), beat, NOW, TTL, since=ago(100)))
    assert isinstance(out.event, NodeRegistered)
    assert (out.event.tools, out.event.labels, out.event.max_jobs) == (beat.tools, beat.labels, beat.max_jobs)
    assert out.msg_id == "node:n1:registered:12"


def test_decide_node_re_registers_a_lost_node_that_came_back() -> None:
    out = only(planner.decide_node(node_view(status="lost"), hb("n1"), NOW, TTL, since=ago(100)))
    assert isinstance(out.event, NodeRegistered)


def test_decide_node_is_quiet_when_nothing_changed() -> None:
    view = node_view(tools=["git", "bash"], labels={"zone": "eu"}, max_jobs=2)
    beat = hb("n1", tools=["bash", "git"], labels={"zone": "eu"}, max_jobs=2, age=TTL)
    assert planner.decide_node(view, beat, NOW, TTL, since=ago(100)) == []


def test_decide_node_declares_a_silent_node_lost() -> None:
    beat = hb("n1", age=TTL + 0.001)
    out = only(planner.decide_node(node_view(), beat, NOW, TTL, since=ago(100)))
    assert out.event == NodeLost(ts=NOW, reason="no heartbeat for more than 10s", last_seen=beat.ts)
    assert (out.subject, out.msg_id) == ("nexus.evt.node.n1.lost", "node:n1:lost:12")


def test_silence_we_have_not_read_yet_is_not_counted() -> None:
    """Behind the stored heartbeats by `lag_s` (an overloaded orchestrator, 5,000 nodes), a
    node may have beaten in that time: it is lost only once silent for the TTL beyond it."""
    beat = hb("n1", age=TTL + 3)
    assert isinstance(only(planner.decide_node(node_view(), beat, NOW, TTL, since=ago(100))).event, NodeLost)
    assert planner.decide_node(node_view(), beat, NOW, TTL, since=ago(100), lag_s=4) == []
    assert isinstance(only(planner.decide_node(node_view(), beat, NOW, TTL, since=ago(100), lag_s=2)).event, NodeLost)
    # Its job is not lost either, and the same holds for every liveness question.
    running = job(status="running", node="n1", attempt=1)
    behind = Fleet(views={}, heartbeats={"n1": beat}, ttl_s=TTL, lag_s=4)
    assert behind.is_live("n1", NOW) and decide.decide_job(running, behind, NOW) == []
    assert not fleet(beat).is_live("n1", NOW)


def test_silence_after_the_store_was_last_known_to_take_writes_is_not_counted() -> None:
    """`heard_until`: the last probe that found the heartbeat store taking writes was sent 2 s
    ago (a leader died since; the next probe answers only after its timeout). A node silent for
    TTL + 1 s by the clock has been silent for only TTL - 1 s of storable time."""
    beat = hb("n1", age=TTL + 1)
    assert planner.decide_node(node_view(), beat, NOW, TTL, since=ago(100), heard_until=ago(2)) == []
    assert isinstance(only(planner.decide_node(node_view(), beat, NOW, TTL, since=ago(100), heard_until=ago(0.5))).event, NodeLost)
    assert isinstance(only(planner.decide_node(node_view(), beat, NOW, TTL, since=ago(100))).event, NodeLost)


def test_decide_node_without_any_heartbeat_waits_a_full_ttl_after_start() -> None:
    assert planner.decide_node(node_view(), None, NOW, TTL, since=ago(TTL)) == []
    out = only(planner.decide_node(node_view(), None, NOW, TTL, since=ago(TTL + 1)))
    assert out.event == NodeLost(ts=NOW, reason="no heartbeat for more than 10s", last_seen=None)


def test_decide_node_does_not_declare_lost_before_since_plus_ttl() -> None:
    # An old heartbeat (e.g. from the KV snapshot) but the orchestrator has only just started.
    beat = hb("n1", age=600)
    assert planner.decide_node(node_view(), beat, NOW, TTL, since=ago(5)) == []
    assert planner.decide_node(node_view(), beat, NOW, TTL, since=ago(TTL)) == []
    assert isinstance(only(planner.decide_node(node_view(), beat, NOW, TTL, since=ago(TTL + 1))).event, NodeLost)


@pytest.mark.parametrize(
    ("view", "beat"),
    [
        pytest.param(None, None, id="never-seen"),
        pytest.param(None, hb("n1", age=TTL + 1), id="stale-unregistered"),
        pytest.param(node_view(status="lost"), hb("n1", age=TTL + 1), id="already-lost"),
        pytest.param(node_view(status="lost"), None, id="already-lost-no-beat"),
    ],
)
def test_decide_node_does_nothing_for_unknown_or_already_lost(view: NodeView | None, beat: NodeHeartbeat | None) -> None:
    assert planner.decide_node(view, beat, NOW, TTL, since=ago(100)) == []


# ---------------------------------------------------------------- property


NAMES = ["a", "b", "c", "d", "e"]
TOOLS = ["bash", "sh", "python3"]
LABELS = st.dictionaries(st.sampled_from(["zone", "gpu"]), st.sampled_from(["eu", "us", "yes"]), max_size=2)

node_st = st.fixed_dictionaries(
    {
        "tools": st.lists(st.sampled_from(TOOLS), unique=True, max_size=3),
        "labels": LABELS,
        "max_jobs": st.integers(0, 3),
        "load": st.integers(0, 4),
        "age": st.sampled_from([0.0, 5.0, TTL, TTL + 1, 100.0]),
    }
)
job_st = st.fixed_dictionaries(
    {
        "tool": st.sampled_from(TOOLS),
        "labels": LABELS,
        "node": st.none() | st.sampled_from([*NAMES, "zz"]),
        "status": st.sampled_from(["requested", "validated", "queued"]),
    }
)


@settings(max_examples=300, deadline=None, database=None)
@given(nodes=st.dictionaries(st.sampled_from(NAMES), node_st, max_size=5), jobs=st.lists(job_st, max_size=15))
def test_placement_never_overfills_or_mismatches(nodes: dict[str, dict[str, Any]], jobs: list[dict[str, Any]]) -> None:
    beats = [
        hb(n, tools=spec["tools"], labels=spec["labels"], max_jobs=spec["max_jobs"], age=spec["age"])
        for n, spec in nodes.items()
    ]
    initial = {n: spec["load"] for n, spec in nodes.items()}
    f = fleet(*beats, load=initial)
    placed: Counter[str] = Counter()
    for i, spec in enumerate(jobs):
        view = job(f"j{i}", status=spec["status"], tool=spec["tool"], labels=spec["labels"], requested_node=spec["node"])
        outs = decide.decide_job(view, f, NOW, judged(view, f) if spec["status"] == "requested" else None)
        if spec["status"] == "requested":  # analysis first, then placement in the same decision
            assert codec.event_type(outs[0].event) in ("job.validated", "job.rejected")
            if codec.event_type(outs[0].event) == "job.validated":
                outs = outs[1:]
        kinds = [codec.event_type(o.event) for o in outs]
        assert kinds in ([], ["job.rejected"], ["job.queued"], ["job.assigned", "job.dispatch"])
        if kinds == []:
            assert spec["status"] == "queued"
        if kinds != ["job.assigned", "job.dispatch"]:
            continue
        chosen = assigned_node(outs)
        placed[chosen] += 1
        beat = f.heartbeats[chosen]
        assert spec["tool"] in beat.tools
        assert f.is_live(chosen, NOW)
        assert outs[1].subject == subjects.dispatch(f"j{i}", chosen)
        if spec["node"] is None:
            assert all(beat.labels.get(k) == v for k, v in spec["labels"].items())
        else:
            assert chosen == spec["node"]
    for n, count in placed.items():
        assert initial[n] + count <= nodes[n]["max_jobs"]
    assert f.load == {n: initial[n] + placed[n] for n in nodes}


def test_an_assigned_job_whose_dispatch_never_reached_the_log_gets_it_again() -> None:
    # Issue 9: a publish failure between `assigned` and `dispatch` left the job holding a slot forever.
    view = job(status="assigned", node="n1", attempt=1, last_seq=7)
    out = only(decide.decide_job(view, fleet(hb("n1")), NOW))
    assert isinstance(out.event, JobDispatch)
    assert (out.subject, out.msg_id) == (subjects.dispatch("j1", "n1"), "job:j1:dispatch:1")
    assert out.event.attempt == 1


def test_unplaceable_reads_each_node_as_its_heartbeat_else_its_registration() -> None:
    # n1 registered with bash and sh but beats with docker only; n2 is registered, never heard from.
    f = fleet(hb("n1", tools=["docker"]), views=["n1", "n2"])
    assert decide.unplaceable(job(tool="docker"), f) is None
    assert decide.unplaceable(job(tool="sh"), f) is None  # n2's registration has it: it may come back
    assert decide.unplaceable(job(tool="sh", requested_node="n1"), f) == ("tool_missing", "tool 'sh' is not installed on node 'n1'")
    assert decide.unplaceable(job(tool="sh", requested_node="n3"), f) == ("unknown_node", "node 'n3' is not registered")
    assert decide.unplaceable(job(tool="zsh"), f) == ("no_capable_node", "no node has tool 'zsh'")


def test_a_job_pinned_to_a_node_without_its_labels_is_rejected() -> None:
    f = fleet(hb("us1", labels={"region": "us"}))
    view = job(status="requested", requested_node="us1", labels={"region": "eu"})
    assert decide.unplaceable(view, f) == ("no_capable_node", "node 'us1' does not have the labels region=eu (it has region=us)")
    ev = rejection(decide.decide_job(view, f, NOW, judged(view, f)))
    assert ev.code == "no_capable_node" and "region=eu" in ev.reason


def test_the_verification_job_of_a_test_run_names_who_asked_for_it() -> None:
    # Review: `<job>-tN` had no requester, so `nexus metrics --by user` counted it as (unknown).
    done = job(status="succeeded", node="n1", attempt=1, exit_code=0, last_seq=9)
    asked = JobTestRequested(ts=NOW, tests=[FileExistsTest(path="/etc/hostname")], requested_by="alice")
    view, note = evolve_job(done, "j1", asked, NOW, 10)
    assert view is not None and note is None
    out = only(decide.decide_job(view, fleet(hb("n1")), NOW))
    assert isinstance(out.event, JobRequested) and out.subject == subjects.job("j1-t10", "requested")
    assert (out.event.requested_by, out.event.node, out.event.parent) == ("alice", "n1", "j1")


def test_the_verification_job_runs_where_the_job_ran_without_its_secrets() -> None:
    # Review: `nexus test JOB --expect-file f1` looked in the agent's directory, not the job's working_dir.
    env = {"OUT": "dist", "API_TOKEN": MASK}
    done = job(status="succeeded", node="n1", attempt=1, exit_code=0, last_seq=9, working_dir="/srv/app", env=env, secrets=["API_TOKEN"])
    asked = JobTestRequested(ts=NOW, tests=[FileExistsTest(path="f1")], requested_by="alice")
    view, _ = evolve_job(done, "j1", asked, NOW, 10)
    assert view is not None
    out = only(decide.decide_job(view, fleet(hb("n1")), NOW))
    assert isinstance(out.event, JobRequested)
    assert (out.event.working_dir, out.event.env) == ("/srv/app", {"OUT": "dist"})


def test_a_verification_job_that_never_ran_says_why_in_the_result() -> None:
    """Audit: `nexus test` printed "no result from the agent" when the policy had rejected the
    verification job (a deny rule on its test command)."""
    done = job(status="succeeded", node="n1", attempt=1, exit_code=0, last_seq=9)
    asked = JobTestRequested(ts=NOW, tests=[FileExistsTest(path="/etc/hostname")], requested_by="alice")
    view, _ = evolve_job(done, "j1", asked, NOW, 10)
    assert view is not None and view.retest_job is not None
    refused = job(job_id=view.retest_job, status="rejected", reason="Test command: no whoami anywhere")
    tested = only(decide.decide_job(view, fleet(hb("n1")), NOW, decide.Context(verification=refused)))
    assert isinstance(tested.event, JobTested) and not tested.event.passed
    said = tested.event.results[0].actual
    assert said == f"no result: the verification job {view.retest_job} was rejected (Test command: no whoami anywhere)", said
