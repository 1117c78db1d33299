"""The job state machine: the status enum, frozen views, and every job event kind handled."""

from __future__ import annotations

import typing
from datetime import UTC, datetime

import msgspec
import pytest

from orchestrator.core.job_fold import evolve_job
from orchestrator.core.views import ON_NODE, PLACEABLE, TERMINAL, JobStatus, JobView
from schemas.events import JobApprovalRequired, JobApproved, JobAssigned, JobDenied, JobEvent, JobRequested

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_statuses_are_their_stored_strings() -> None:
    assert JobStatus.TIMED_OUT == "timed_out"
    assert msgspec.json.encode(JobView(job_id="j", status=JobStatus.QUEUED, command="x")).startswith(b'{"job_id":"j","status":"queued"')
    assert msgspec.json.decode(b'{"job_id":"j","status":"lost","command":"x"}', type=JobView).status is JobStatus.LOST


def test_the_enum_owns_the_status_sets() -> None:
    assert {"rejected", "denied", "succeeded", "failed", "timed_out", "cancelled", "lost"} == TERMINAL
    assert {"validated", "approved", "queued"} == PLACEABLE
    assert {"assigned", "dispatched", "accepted", "running"} == ON_NODE
    assert not TERMINAL & PLACEABLE and not TERMINAL & ON_NODE and not PLACEABLE & ON_NODE
    # A view built by hand with a plain string still answers.
    assert JobView(job_id="j", status="running", command="x").on_node  # type: ignore[arg-type]


def test_views_are_frozen() -> None:
    view = JobView(job_id="j", status=JobStatus.REQUESTED, command="x")
    with pytest.raises(AttributeError):
        view.status = JobStatus.QUEUED  # type: ignore[misc]


def _sample(kind: type[msgspec.Struct]) -> msgspec.Struct:
    """The smallest instance of an event kind: required fields from a JSON sample."""
    required = {f.name: f.type for f in msgspec.structs.fields(kind) if f.required}
    samples: dict[str, object] = {}
    for name, tp in required.items():
        while typing.get_origin(tp) is typing.Annotated:  # bounded types (schemas.limits)
            tp = typing.get_args(tp)[0]
        origin = typing.get_origin(tp)
        if tp is int or name in ("attempt", "exit_code"):
            samples[name] = 1
        elif tp is bool:
            samples[name] = False
        elif origin is list:
            samples[name] = []
        elif origin is dict:
            samples[name] = {}
        else:
            samples[name] = "n1"
    return msgspec.convert(samples, kind, strict=False)


@pytest.mark.parametrize("kind", typing.get_args(JobEvent), ids=lambda k: k.__name__)
def test_every_job_event_kind_folds_on_a_live_and_on_a_finished_job(kind: type[msgspec.Struct]) -> None:
    ev = _sample(kind)
    live, _ = evolve_job(None, "j", JobRequested(command="x"), NOW, 1)
    assert live is not None
    nxt, _ = evolve_job(live, "j", ev, NOW, 2)  # type: ignore[arg-type]
    assert nxt is not None and nxt.last_seq == 2
    done = msgspec.structs.replace(live, status=JobStatus.SUCCEEDED)
    after, _ = evolve_job(done, "j", ev, NOW, 3)  # type: ignore[arg-type]
    assert after is not None and after.terminal and after.last_seq == 3


@pytest.mark.parametrize(
    ("deciders", "by", "status"),
    [
        (None, "anyone", JobStatus.DENIED),
        (["alice", "bob"], "alice", JobStatus.DENIED),
        (["alice"], "mallory", JobStatus.APPROVAL_REQUIRED),
        ([], "alice", JobStatus.APPROVAL_REQUIRED),
    ],
)
def test_a_denial_counts_only_from_those_the_policy_let_decide_when_it_held_the_job(
    deciders: list[str] | None, by: str, status: JobStatus
) -> None:
    from schemas.events import JobApprovalRequired, JobDenied

    job, _ = evolve_job(None, "j", JobRequested(command="rm -rf /srv"), NOW, 1)
    held, _ = evolve_job(job, "j", JobApprovalRequired(reason="critical", approvers=["ops"], deciders=deciders), NOW, 2)
    assert held is not None and held.deciders == deciders
    after, note = evolve_job(held, "j", JobDenied(by=by, reason="no"), NOW, 3)
    assert after is not None and after.status is status
    assert (note is None) == (status is JobStatus.DENIED)
    if note is not None:
        assert note.startswith(f"{by!r} may not deny this job") and "ignored" in note


def test_who_may_decide_is_listed_from_the_policy() -> None:
    from orchestrator.core.policy import Policy, Role

    assert Policy().deciders() is None  # no approvers, no users: anyone with the approver role
    roles = {"ops": Role(submit=True, approve=True), "dev": Role(submit=True)}
    assert Policy(users={"ann": ["ops"], "dan": ["dev"]}, roles=roles).deciders() == ["ann"]
    assert Policy(approvers=["ops", "zoe"], users={"ann": ["ops"], "dan": ["dev"]}, roles=roles).deciders() == ["ann", "ops", "zoe"]


def test_a_decision_on_a_job_not_waiting_for_one_is_ignored_with_a_note() -> None:
    """Review: an approval after a cancel changed nothing, yet its row had no note, so
    metrics_analysis counted it among the approvals."""
    job = JobView(job_id="j", status=JobStatus.CANCELLED, command="x", finished_at=NOW)
    for ev in (JobApproved(by="bob"), JobDenied(by="bob")):
        after, note = evolve_job(job, "j", ev, NOW, 9)
        assert after is not None and after.status == JobStatus.CANCELLED and after.last_seq == 9
        assert note is not None and "not waiting for approval (cancelled)" in note
    held = JobView(job_id="j", status=JobStatus.APPROVAL_REQUIRED, command="x")
    after, note = evolve_job(held, "j", JobApproved(by="bob"), NOW, 9)
    assert note is None and after is not None and (after.status, after.approved_by) == (JobStatus.APPROVED, "bob")


def test_a_copy_of_a_test_request_already_taken_is_refused() -> None:
    # Attack review: a submitter re-published another user's signed test_requested (same bytes,
    # new msg id) and the tests' commands ran again in that user's name.
    from schemas.events import JobTestRequested
    from schemas.values import ExitCodeTest

    at = datetime(2026, 12, 6, tzinfo=UTC)
    done = JobView(job_id="j1", status=JobStatus.SUCCEEDED, command="true")
    asked = JobTestRequested(ts=at, tests=[ExitCodeTest(expected=0)], requested_by="alice")
    first, note = evolve_job(done, "j1", asked, at, 10)
    assert note is None and first is not None and first.retest_job == "j1-t10"
    answered = msgspec.structs.replace(first, retest=[], retest_job=None, retest_by=None)  # its `tested` came
    again, note = evolve_job(answered, "j1", asked, at, 20)
    assert note == "a copy of a test request already taken: refused" and again is not None and again.retest == []
    later = msgspec.structs.replace(asked, ts=datetime(2026, 12, 6, 0, 1, tzinfo=UTC))  # a new request
    fresh, note = evolve_job(answered, "j1", later, at, 30)
    assert note is None and fresh is not None and fresh.retest_job == "j1-t30"


def test_test_requests_without_their_own_time_are_all_taken() -> None:
    from schemas.events import JobTestRequested
    from schemas.values import ExitCodeTest

    done = JobView(job_id="j1", status=JobStatus.SUCCEEDED, command="true")
    asked = JobTestRequested(tests=[ExitCodeTest(expected=0)])  # a foreign client's, no `ts`
    first, _ = evolve_job(done, "j1", asked, datetime(2026, 12, 6, tzinfo=UTC), 10)
    assert first is not None
    again, note = evolve_job(msgspec.structs.replace(first, retest=[]), "j1", asked, datetime(2026, 12, 6, tzinfo=UTC), 20)
    assert note is None and again is not None and again.retest_job == "j1-t20"


def test_an_approval_that_did_not_count_names_no_approver_once_the_job_is_held_again() -> None:
    """Audit: `nexus approve` by an admin not among the approvers was refused (held again), then
    an approver denied it, and the record said `approved_by: admin` on a denied job."""
    held = JobView(job_id="j", status=JobStatus.APPROVAL_REQUIRED, command="x")
    approved, _ = evolve_job(held, "j", JobApproved(by="admin"), NOW, 9)
    assert approved is not None and approved.approved_by == "admin"
    again, _ = evolve_job(approved, "j", JobApprovalRequired(reason="'admin' may not approve this job"), NOW, 10)
    assert again is not None and (again.status, again.approved_by) == (JobStatus.APPROVAL_REQUIRED, None)
    denied, _ = evolve_job(again, "j", JobDenied(by="carol"), NOW, 11)
    assert denied is not None and (denied.status, denied.approved_by) == (JobStatus.DENIED, None)


def test_a_kill_sent_to_a_lost_attempt_is_not_the_retrys() -> None:
    """After `lost` the orchestrator sends the attempt a kill (`cancel_sent`); the retry's own
    cancel must still go out when asked: a new assignment starts with no kill sent."""
    retried = JobView(job_id="j", status=JobStatus.VALIDATED, command="x", node="n1", attempt=1, cancel_sent=True)  # lost, will retry
    again, _ = evolve_job(retried, "j", JobAssigned(node="n2", attempt=2, candidates=["n2"], reason="retry"), NOW, 12)
    assert again is not None and (again.attempt, again.cancel_sent) == (2, False)
