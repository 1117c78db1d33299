"""core.authorship.refusal for node facts (accepted, started, exited; DESIGN §9). Pure.

They are on DESIGN §3's `nexus.evt.job.<job>.<kind>`, which names no node, so any agent may
publish one about any job: it counts only signed by the agent of the node it names (and the
job's fold then only from the node the attempt is on). Agents whose credentials predate that
subject publish under their node (`.<kind>.<node>`): there the subject's node is the one.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrator.core.authorship import refusal
from schemas import codec, subjects
from schemas.envelope import Envelope
from schemas.events import JobAccepted, JobExited, JobStarted
from schemas.records import Author, Record

AGENT_N1 = Author(key="UN1", name="n1", role="agent", node="n1")
AGENT_N2 = Author(key="UN2", name="n2", role="agent", node="n2")
ADMIN = Author(key="UA", name="orchestrator", role="admin", service=True)
SUBMITTER = Author(key="US", name="sam", role="submitter")
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
FACTS = [
    JobAccepted(node="n1", attempt=1, instance="i"),
    JobStarted(node="n1", attempt=1, pid=4),
    JobExited(node="n1", attempt=1, exit_code=0),
]


def _rec(subject: str, event: Envelope, author: Author | None) -> Record:
    raw = codec.encode(event)
    return Record(seq=5, subject=subject, stream_ts=NOW, raw=raw, event=codec.decode(subject, raw), author=author)


def _why(subject: str, event: Envelope, author: Author | None, problem: str | None = None) -> str:
    return refusal(_rec(subject, event, author), problem=problem, enforcing=True) or ""


def _kind(event: Envelope) -> str:
    return {JobAccepted: "accepted", JobStarted: "started", JobExited: "exited"}[type(event)]


@pytest.mark.parametrize("fact", FACTS, ids=_kind)
def test_a_fact_signed_by_the_agent_of_the_node_it_names_counts(fact: Envelope) -> None:
    subject = subjects.fact("j1", _kind(fact))
    assert refusal(_rec(subject, fact, AGENT_N1), problem=None, enforcing=True) is None
    assert refusal(_rec(subject, fact, ADMIN), problem=None, enforcing=True) is None
    # Under the node (older agents' credentials): the same.
    assert refusal(_rec(subjects.fact_under_node(subject, "n1"), fact, AGENT_N1), problem=None, enforcing=True) is None


@pytest.mark.parametrize("fact", FACTS, ids=_kind)
def test_another_nodes_agent_cannot_speak_for_a_node(fact: Envelope) -> None:
    subject = subjects.fact("j1", _kind(fact))
    why = refusal(_rec(subject, fact, AGENT_N2), problem=None, enforcing=True)
    assert why == f"job.{_kind(fact)} for node 'n1' signed by the agent of 'n2': refused"
    # Under its own node, naming another in the payload: the subject's node is the one it may speak for
    # (the fold then refuses the mismatch, core.reducer); under another's node: refused.
    assert refusal(_rec(subjects.fact_under_node(subject, "n2"), fact, AGENT_N2), problem=None, enforcing=True) is None
    assert "signed by the agent of 'n2'" in _why(subjects.fact_under_node(subject, "n1"), fact, AGENT_N2)


def test_unsigned_or_by_anyone_but_an_agent_or_admin_is_refused_and_a_bad_signature_always() -> None:
    subject, fact = subjects.fact("j1", "exited"), FACTS[2]
    assert "unsigned job.exited" in _why(subject, fact, None)
    assert "only the node's agent" in _why(subject, fact, SUBMITTER)
    assert refusal(_rec(subject, fact, None), problem=None, enforcing=False) is None  # a log without identities
    assert _why(subject, fact, AGENT_N1, problem="signature does not verify") == "signature does not verify: refused"


def test_a_fact_that_does_not_decode_names_no_node_and_counts_for_no_agent() -> None:
    rec = Record(seq=5, subject=subjects.fact("j1", "exited"), stream_ts=NOW, raw=b"{garbage", event=None, author=AGENT_N1)
    assert "signed by the agent of 'n1'" in (refusal(rec, problem=None, enforcing=True) or "")
