"""Admission of a job: refused, held for approval, or free to run. Pure.

One function for every place that answers the question: the orchestrator's
phase 1, `nexus validate` and `POST /api/v1/jobs/validate`. The targets are
the label sets of the nodes the job could land on (`targets`), so node
selectors count the same everywhere: a job whose selectors can only match
production nodes needs approval whether or not a node id was named.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import msgspec

from orchestrator.core.policy import Policy


class Admission(msgspec.Struct, frozen=True, kw_only=True):
    """`denied` (with its `reason`) or whether an approver must release the job first."""

    denied: Literal["permission_denied", "policy_denied"] | None = None
    reason: str | None = None
    approval_needed: bool = False


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """What admission needs to know of a node: its labels, its tools, whether it is live."""

    labels: Mapping[str, str]
    tools: Sequence[str]
    live: bool


def targets(
    requested_node: str | None, selectors: Mapping[str, str], tool: str, nodes: Mapping[str, Candidate]
) -> list[dict[str, str]]:
    """Label sets of the nodes the job could land on: the named node's, else every live node
    with the tool whose labels match the selectors, else the selectors themselves."""
    if requested_node is not None:
        node = nodes.get(requested_node)
        return [dict(node.labels) if node is not None else {}]
    found = [
        dict(n.labels)
        for n in nodes.values()
        if n.live and tool in n.tools and all(n.labels.get(k) == v for k, v in selectors.items())
    ]
    return found or [dict(selectors)]


def admit(
    policy: Policy,
    *,
    user: str | None,
    command: str,
    tool: str,
    severity: str | None,
    targets: Iterable[Mapping[str, str]],
    selectors: Mapping[str, str],
) -> Admission:
    """The policy's answer for this job: permission, deny rules, then approval on production."""
    if not policy.may_submit(user):
        return Admission(denied="permission_denied", reason=f"user {user!r} may not submit jobs")
    label_sets = list(targets)
    denial = policy.denial(command, tool, label_sets)
    if denial is not None:
        return Admission(denied="policy_denied", reason=denial)
    production = any(policy.is_production(t) for t in label_sets) or policy.is_production(selectors)
    return Admission(approval_needed=policy.needs_approval(severity, production))
