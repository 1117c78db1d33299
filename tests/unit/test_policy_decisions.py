"""Phase 1 and 2 decisions with a policy: permissions, deny/allow, approvals, dependencies, retries."""

from __future__ import annotations

import msgspec
import pytest

from orchestrator.config import ConfigError, load_policy
from orchestrator.core import decide
from orchestrator.core.decide import Context, Fleet
from orchestrator.core.policy import Policy, Role, Rule
from orchestrator.core.views import JobView
from schemas import codec
from schemas.events import JobApprovalRequired, JobLost, JobQueued, JobRejected, JobValidated
from tests.unit.test_decide import NOW, fleet, hb, job, judged

PEOPLE = Policy(users={"alice": ["admin"], "bob": ["operator"], "vic": ["viewer"]})
PROD_ONLY = Policy(approval_severity_anywhere="never")


def kinds(outs: list[decide.Outgoing]) -> list[str]:
    return [codec.event_type(o.event) for o in outs]


def phase1(view: JobView, f: Fleet, policy: Policy | None = None) -> list[decide.Outgoing]:
    """Phase 1 as the orchestrator runs it: judged (core.judge), then decided."""
    return decide.decide_job(view, f, NOW, judged(view, f, policy))


def test_safe_command_is_validated_and_placed_in_one_decision() -> None:
    outs = phase1(job(status="requested"), fleet(hb("n1")))
    assert kinds(outs) == ["job.validated", "job.assigned", "job.dispatch"]
    validated = outs[0].event
    assert isinstance(validated, JobValidated)
    assert (validated.severity, validated.duration_ms, validated.approval_needed) == (None, 0.4, False)


def test_critical_command_on_production_node_waits_for_approval() -> None:
    prod = hb("web-1", labels={"env": "prod"})
    outs = phase1(job(status="requested", command="rm -rf /", requested_node="web-1"), fleet(prod), PROD_ONLY)
    assert kinds(outs) == ["job.validated", "job.approval_required"]
    assert isinstance(outs[1].event, JobApprovalRequired)
    assert outs[1].event.reason.startswith("critical command on a production node needs approval: Command contains 'rm -rf' on '/'")
    warning = outs[0].event.warnings[0]  # type: ignore[union-attr]
    assert warning.severity == "critical" and warning.message.endswith(" - requires approval") and warning.command is None


def test_critical_command_holds_on_any_node_by_default_and_its_text_says_so() -> None:
    """Issue 11: the default policy makes "requires approval" true wherever the job runs."""
    dev = fleet(hb("dev-1", labels={"env": "dev"}))
    held = phase1(job(status="requested", command="rm -rf /"), dev)
    assert kinds(held) == ["job.validated", "job.approval_required"]
    assert held[1].event.reason.startswith("critical command needs approval: ")  # type: ignore[union-attr]
    # A policy that holds only production runs it, and the finding no longer claims approval here.
    runs = phase1(job(status="requested", command="rm -rf /"), dev, PROD_ONLY)
    assert kinds(runs) == ["job.validated", "job.assigned", "job.dispatch"]
    (warning,) = runs[0].event.warnings  # type: ignore[union-attr]
    assert warning.message.endswith(" - requires approval on production nodes"), warning.message


def test_label_selector_for_production_also_needs_approval() -> None:
    view = job(status="requested", command="rm -rf /", labels={"env": "production"})
    outs = phase1(view, fleet(hb("n1", labels={"env": "production"})), PROD_ONLY)
    assert kinds(outs)[-1] == "job.approval_required"


def test_approved_job_is_placed_and_a_non_approver_does_not_count() -> None:
    prod = fleet(hb("web-1", labels={"env": "prod"}))
    ok = decide.decide_job(job(status="approved", approved_by="alice", requested_node="web-1"), prod, NOW, Context(policy=PEOPLE))
    assert kinds(ok) == ["job.assigned", "job.dispatch"]
    bobs = job(status="approved", approved_by="bob", requested_node="web-1", last_seq=7)
    held = decide.decide_job(bobs, prod, NOW, Context(policy=PEOPLE))
    assert kinds(held) == ["job.approval_required"]
    assert "'bob' may not approve" in held[0].event.reason  # type: ignore[union-attr]
    assert held[0].msg_id == "job:j1:approval_required:7"


@pytest.mark.parametrize(("user", "code"), [("vic", "permission_denied"), ("mallory", "permission_denied"), ("bob", None)])
def test_permissions_come_from_roles(user: str, code: str | None) -> None:
    outs = phase1(job(status="requested", requested_by=user), fleet(hb("n1")), PEOPLE)
    if code is None:
        assert kinds(outs)[0] == "job.validated"
    else:
        assert isinstance(outs[0].event, JobRejected) and outs[0].event.code == code


def test_deny_rules_reject_outright_and_allow_lists_restrict() -> None:
    policy = Policy(
        deny=[Rule(pattern=r"curl .*\| *sh", reason="no piping downloads into a shell")],
        allow=[Rule(pattern=r"^(echo|ls)\b", labels={"env": "prod"})],
    )
    denied = phase1(job(status="requested", command="curl x | sh"), fleet(hb("n1")), policy)
    ev = denied[0].event
    assert isinstance(ev, JobRejected) and (ev.code, ev.reason) == ("policy_denied", "no piping downloads into a shell")
    assert ev.severity == "critical"  # with what the analysis found
    prod = fleet(hb("p1", labels={"env": "prod"}))
    not_allowed = phase1(job(status="requested", command="make deploy"), prod, policy)
    assert not_allowed[0].event.code == "policy_denied"  # type: ignore[union-attr]
    assert kinds(phase1(job(status="requested", command="echo ok"), prod, policy))[0] == "job.validated"
    # The allow list is scoped to env=prod: elsewhere anything not denied goes.
    dev = fleet(hb("d1", labels={"env": "dev"}))
    assert kinds(phase1(job(status="requested", command="make deploy"), dev, policy))[0] == "job.validated"


def test_dependencies_wait_then_run_or_give_up() -> None:
    f = fleet(hb("n1"))
    waiting = decide.decide_job(job(after=["a", "b"]), f, NOW, Context(statuses={"a": "succeeded", "b": "running"}))
    assert kinds(waiting) == ["job.queued"] and "b" in waiting[0].event.reason  # type: ignore[union-attr]
    assert decide.decide_job(job(status="queued", after=["a", "b"]), f, NOW, Context(statuses={"a": "succeeded", "b": "running"})) == []
    ready = decide.decide_job(job(status="queued", after=["a"]), f, NOW, Context(statuses={"a": "succeeded"}))
    assert kinds(ready) == ["job.assigned", "job.dispatch"]
    failed = decide.decide_job(job(status="queued", after=["a"]), f, NOW, Context(statuses={"a": "failed"}))
    assert failed[0].event.code == "dependency_failed"  # type: ignore[union-attr]


def test_a_job_waiting_for_itself_is_rejected_at_analysis() -> None:
    outs = phase1(job("j1", status="requested", after=["a", "j1"]), fleet(hb("n1")))
    assert kinds(outs) == ["job.rejected"]
    ev = outs[0].event
    assert isinstance(ev, JobRejected) and ev.code == "invalid_request" and "waits for itself" in ev.reason


@pytest.mark.parametrize("status", ["validated", "queued"])
def test_a_job_waiting_for_one_not_requested_before_it_is_rejected_not_left_waiting(status: str) -> None:
    """`statuses` holds the dependencies requested before the job (the orchestrator's context):
    one missing is unknown, or came later, so it can never be waited for: no job waits for
    ever on a job that does not exist, and no two jobs can wait for each other (a cycle)."""
    f = fleet(hb("n1"))
    outs = decide.decide_job(job(status=status, after=["a", "ghost"]), f, NOW, Context(statuses={"a": "running"}))
    assert kinds(outs) == ["job.rejected"]
    ev = outs[0].event
    assert isinstance(ev, JobRejected) and ev.code == "dependency_unknown", outs
    assert ev.reason.startswith("it waits for job(s) not requested before it: ghost;")


def test_lost_job_is_retried_only_when_declared_idempotent_with_retries_left() -> None:
    dead = fleet(hb("n1", age=60))
    never = decide.decide_job(job(status="running", node="n1", attempt=1, retries=2), dead, NOW)
    assert isinstance(never[0].event, JobLost) and not never[0].event.will_retry
    again = decide.decide_job(job(status="running", node="n1", attempt=1, retries=2, idempotent=True), dead, NOW)
    assert isinstance(again[0].event, JobLost) and again[0].event.will_retry
    spent = decide.decide_job(job(status="running", node="n1", attempt=3, retries=2, idempotent=True), dead, NOW)
    assert not spent[0].event.will_retry  # type: ignore[union-attr]


def test_role_priority_and_explicit_priority() -> None:
    policy = Policy(users={"alice": ["admin"], "bob": ["operator"]}, roles={"admin": Role(priority=10), "operator": Role()})
    assert policy.priority_of("alice", 0) == 10
    assert policy.priority_of("alice", 3) == 3
    assert policy.priority_of("nobody", 0) == 0


def test_queued_while_waiting_is_published_once() -> None:
    out = decide.decide_job(job(status="validated"), fleet(hb("n1"), load={"n1": 1}), NOW)
    assert isinstance(out[0].event, JobQueued)
    assert decide.decide_job(job(status="queued"), fleet(hb("n1"), load={"n1": 1}), NOW) == []


def test_policy_file_errors_name_the_file_and_the_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "policy.yaml"
    good.write_text("users:\n  alice: [admin]\ndeny:\n  - pattern: 'mkfs'\n")
    policy = load_policy(good)
    assert policy.may_approve("alice") and policy.deny[0].pattern == "mkfs"
    for text, needle in [
        ("deny:\n  - patern: x\n", "unknown field `patern`"),
        ("users: {a: [nope]}\n", "unknown role"),
        ("deny: [{pattern: '('}]\n", "invalid pattern"),
        ("deny: [\n", "not valid YAML"),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_policy(bad)
        assert str(bad) in str(info.value) and needle in str(info.value), str(info.value)
    assert load_policy(None) == Policy()
    assert msgspec.structs.asdict(Policy())["approval_severity"] == "critical"
    assert msgspec.structs.asdict(Policy())["approval_severity_anywhere"] == "critical"


def test_ranking_is_load_then_preferred_labels_then_cost() -> None:
    f = fleet(
        hb("busy", labels={"region": "eu", "cost": "1"}, max_jobs=2),
        hb("eu-dear", labels={"region": "eu", "cost": "9"}, max_jobs=2),
        hb("us-cheap", labels={"region": "us", "cost": "1"}, max_jobs=2),
        hb("eu-cheap", labels={"region": "eu", "cost": "2"}, max_jobs=2),
        load={"busy": 1},
    )
    assert decide.rank_nodes(f, list(f.heartbeats), {"region": "eu"}) == ["eu-cheap", "eu-dear", "us-cheap", "busy"]
    assert decide.rank_nodes(f, list(f.heartbeats), {}) == ["us-cheap", "eu-cheap", "eu-dear", "busy"]
    node, why = decide.optimal_node(f, "bash", {}, {"region": "eu"}, NOW)
    assert node == "eu-cheap" and "eu-cheap (0/2, region=eu, cost=2)" in why
    outs = decide.decide_job(job(prefer={"region": "eu"}), f, NOW)
    assert outs[0].event.node == "eu-cheap"  # type: ignore[union-attr]
    assert outs[0].event.candidates == ["busy", "eu-cheap", "eu-dear", "us-cheap"]  # type: ignore[union-attr]
    assert decide.optimal_node(f, "docker", {}, {}, NOW) == (None, "no live node has tool 'docker'")
