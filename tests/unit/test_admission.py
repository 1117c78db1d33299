"""One admission (refused / held for approval / free) for `nexus validate`, the API's validate and (to come) the orchestrator."""

from __future__ import annotations

from orchestrator.core.admission import Admission, Candidate, admit, targets
from orchestrator.core.policy import Policy, Rule

FLEET = {
    "web-1": Candidate(labels={"env": "prod", "role": "web"}, tools=["bash"], live=True),
    "dev-1": Candidate(labels={"env": "dev", "role": "web"}, tools=["bash"], live=True),
    "old-1": Candidate(labels={"env": "prod", "role": "db"}, tools=["bash"], live=False),
}


def test_selectors_that_can_only_reach_production_need_approval_without_a_node_named() -> None:
    on = targets(None, {"env": "prod"}, "bash", FLEET)
    assert on == [{"env": "prod", "role": "web"}]
    said = admit(Policy(), user="ann", command="rm -rf /", tool="bash", severity="critical", targets=on, selectors={"env": "prod"})
    assert said == Admission(approval_needed=True)


def test_a_named_node_counts_and_unknown_nodes_or_no_match_fall_back_to_the_selectors() -> None:
    assert targets("dev-1", {"env": "prod"}, "bash", FLEET) == [{"env": "dev", "role": "web"}]
    assert targets("ghost", {}, "bash", FLEET) == [{}]
    assert targets(None, {"role": "db"}, "bash", FLEET) == [{"role": "db"}]  # the only db node is not live
    dev = admit(Policy(), user="ann", command="rm -rf /", tool="bash", severity="critical", targets=[{"env": "dev"}], selectors={})
    assert not dev.approval_needed


def test_permission_then_deny_rules_come_before_approval() -> None:
    people = Policy(users={"vic": ["viewer"]})
    assert admit(people, user="vic", command="true", tool="bash", severity=None, targets=[{}], selectors={}).denied == "permission_denied"
    rules = Policy(deny=[Rule(pattern=r"^shutdown\b", reason="no shutdowns")])
    said = admit(rules, user="ann", command="shutdown now", tool="bash", severity="critical", targets=[{"env": "prod"}], selectors={})
    assert (said.denied, said.reason, said.approval_needed) == ("policy_denied", "no shutdowns", False)
