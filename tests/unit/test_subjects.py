"""Subject builders and parser (DESIGN.md section 3)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from schemas import subjects
from schemas.errors import InvalidId, InvalidSubject, NexusError

BAD_IDS = [
    pytest.param("", id="empty"),
    pytest.param("a.b", id="dot"),
    pytest.param("a b", id="space"),
    pytest.param("*", id="star"),
    pytest.param(">", id="gt"),
    pytest.param("a*", id="star-suffix"),
    pytest.param("x" * 65, id="65-chars"),
    pytest.param("j1\n", id="trailing-newline"),
    pytest.param("é", id="non-ascii"),
]

ID_BUILDERS = [
    pytest.param(lambda i: subjects.job(i, "requested"), id="job"),
    pytest.param(subjects.job_all, id="job_all"),
    pytest.param(lambda i: subjects.dispatch(i, "n1"), id="dispatch-job"),
    pytest.param(lambda i: subjects.dispatch("j1", i), id="dispatch-node"),
    pytest.param(lambda i: subjects.cancel(i, "n1"), id="cancel-job"),
    pytest.param(lambda i: subjects.cancel("j1", i), id="cancel-node"),
    pytest.param(subjects.agent_filters, id="agent_filters"),
    pytest.param(lambda i: subjects.pipeline(i, "started"), id="pipeline"),
    pytest.param(lambda i: subjects.node(i, "registered"), id="node"),
    pytest.param(lambda i: subjects.output(i, 1), id="output"),
    pytest.param(lambda i: subjects.fact(i, "exited"), id="fact"),
    pytest.param(lambda i: subjects.fact_under_node("nexus.evt.job.j1.exited", i), id="fact-node"),
    pytest.param(subjects.output_all, id="output_all"),
]


# ---------------------------------------------------------------- builders


def test_builders_produce_the_design_shapes() -> None:
    assert subjects.job("j1", "requested") == "nexus.evt.job.j1.requested"
    assert subjects.job_all("j1") == "nexus.evt.job.j1.>"
    assert subjects.dispatch("j1", "web-001") == "nexus.evt.job.j1.dispatch.web-001"
    assert subjects.cancel("j1", "web-001") == "nexus.evt.job.j1.cancel.web-001"
    assert subjects.pipeline("p_1", "started") == "nexus.evt.pipeline.p_1.started"
    assert subjects.node("web-001", "lost") == "nexus.evt.node.web-001.lost"
    assert subjects.output("j1", 2) == "nexus.out.j1.2"
    assert subjects.output_all("j1") == "nexus.out.j1.>"
    assert subjects.fact("j1", "exited") == "nexus.evt.job.j1.exited"  # DESIGN §3: no node in it
    assert subjects.parse("nexus.evt.job.j1.exited").node is None
    # Under the node: agents whose credentials predate DESIGN §3's subject, and logs they wrote.
    assert subjects.fact_under_node(subjects.fact("j1", "exited"), "n1") == "nexus.evt.job.j1.exited.n1"
    assert subjects.parse("nexus.evt.job.j1.exited.n1").node == "n1"
    with pytest.raises(InvalidSubject):
        subjects.fact("j1", "requested")


def test_agent_filters_cover_its_dispatches_and_cancels() -> None:
    assert subjects.agent_filters("n1") == ["nexus.evt.job.*.dispatch.n1", "nexus.evt.job.*.cancel.n1"]


def test_stream_names_and_wildcards_are_fixed() -> None:
    assert subjects.EVENTS_STREAM == "NEXUS_EVENTS"
    assert subjects.OUTPUT_STREAM == "NEXUS_OUTPUT"
    assert subjects.NODES_BUCKET == "nexus-nodes"
    assert subjects.EVENTS_ALL == "nexus.evt.>"
    assert subjects.OUTPUT_ALL == "nexus.out.>"


@pytest.mark.parametrize("good", ["a", "A-z_09", "x" * 64, "web-001", "_", "-"])
def test_valid_ids_are_accepted(good: str) -> None:
    assert subjects.is_valid_id(good)
    assert subjects.check_id(good) == good
    assert subjects.job(good, "requested") == f"nexus.evt.job.{good}.requested"


@pytest.mark.parametrize("bad", BAD_IDS)
def test_invalid_ids_are_rejected(bad: str) -> None:
    assert not subjects.is_valid_id(bad)
    with pytest.raises(InvalidId) as info:
        subjects.check_id(bad, "job id")
    assert info.value.value == bad
    assert info.value.what == "job id"
    assert isinstance(info.value, NexusError)
    assert "job id" in str(info.value)


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("build", ID_BUILDERS)
def test_every_builder_validates_its_ids(build: Callable[[str], object], bad: str) -> None:
    with pytest.raises(InvalidId):
        build(bad)


def test_invalid_id_error_names_what_was_wrong() -> None:
    with pytest.raises(InvalidId) as info:
        subjects.dispatch("j1", "bad node")
    assert info.value.what == "node id"
    assert info.value.value == "bad node"


# ---------------------------------------------------------------- parse


@pytest.mark.parametrize(
    ("subject", "family", "ident", "kind", "node", "type_"),
    [
        ("nexus.evt.job.j1.requested", "job", "j1", "requested", None, "job.requested"),
        ("nexus.evt.job.j1.exited", "job", "j1", "exited", None, "job.exited"),
        ("nexus.evt.job.j1.dispatch.web-001", "job", "j1", "dispatch", "web-001", "job.dispatch"),
        ("nexus.evt.job.j1.cancel.n_2", "job", "j1", "cancel", "n_2", "job.cancel"),
        ("nexus.evt.pipeline.p1.started", "pipeline", "p1", "started", None, "pipeline.started"),
        ("nexus.evt.node.web-001.registered", "node", "web-001", "registered", None, "node.registered"),
        ("nexus.evt.node.web-001.lost", "node", "web-001", "lost", None, "node.lost"),
        ("nexus.evt.api.r-1a2b-c3.called", "api", "r-1a2b-c3", "called", None, "api.called"),
    ],
)
def test_parse_event_subjects(subject: str, family: str, ident: str, kind: str, node: str | None, type_: str) -> None:
    ref = subjects.parse(subject)
    assert (ref.family, ref.id, ref.kind, ref.node) == (family, ident, kind, node)
    assert ref.type == type_


def test_parse_is_the_inverse_of_the_builders() -> None:
    built = [
        subjects.job("j-9", "succeeded"),
        subjects.dispatch("j-9", "n1"),
        subjects.cancel("j-9", "n1"),
        subjects.pipeline("p", "finished"),
        subjects.node("n1", "registered"),
        subjects.api("r-1", "called"),
    ]
    rebuilt = []
    for s in built:
        ref = subjects.parse(s)
        if ref.node is not None:
            rebuilt.append(f"nexus.evt.{ref.family}.{ref.id}.{ref.kind}.{ref.node}")
        else:
            rebuilt.append(f"nexus.evt.{ref.family}.{ref.id}.{ref.kind}")
    assert rebuilt == built


@pytest.mark.parametrize(
    ("subject", "fragment"),
    [
        pytest.param("", "not of the form", id="empty"),
        pytest.param("nexus.evt.job.j1", "not of the form", id="no-kind"),
        pytest.param("nexus.out.j1.1.x", "not of the form", id="output-stream"),
        pytest.param("other.evt.job.j1.requested", "not of the form", id="wrong-root"),
        pytest.param("nexus.rpc.query", "not of the form", id="rpc"),
        pytest.param("nexus.evt.widget.w1.created", "unknown family", id="unknown-family"),
        pytest.param("nexus.evt.job.*.requested", "invalid job id", id="wildcard-id"),
        pytest.param("nexus.evt.job..requested", "invalid job id", id="empty-id"),
        pytest.param("nexus.evt.job." + "x" * 65 + ".requested", "invalid job id", id="long-id"),
        pytest.param("nexus.evt.node.>.lost", "invalid node id", id="gt-node-id"),
        pytest.param("nexus.evt.job.j1.dispatch", "dispatch needs exactly one node id", id="dispatch-no-node"),
        pytest.param("nexus.evt.job.j1.cancel", "cancel needs exactly one node id", id="cancel-no-node"),
        pytest.param("nexus.evt.job.j1.dispatch.n1.x", "dispatch needs exactly one node id", id="dispatch-extra"),
        pytest.param("nexus.evt.job.j1.dispatch.*", "dispatch needs exactly one node id", id="dispatch-star"),
        pytest.param("nexus.evt.job.j1.cancel.", "cancel needs exactly one node id", id="cancel-empty-node"),
        pytest.param("nexus.evt.job.j1.requested.extra", "too many tokens", id="extra-token"),
        pytest.param("nexus.evt.node.n1.registered.x", "too many tokens", id="node-extra-token"),
    ],
)
def test_parse_rejects_bad_shapes(subject: str, fragment: str) -> None:
    with pytest.raises(InvalidSubject) as info:
        subjects.parse(subject)
    assert info.value.subject == subject
    assert fragment in info.value.reason
    assert isinstance(info.value, NexusError)


@pytest.mark.parametrize("subject", ["nexus.evt.job.j1.>", "nexus.evt.job.j1.*", "nexus.evt.job.j1."])
def test_parse_rejects_wildcard_or_empty_kind(subject: str) -> None:
    with pytest.raises(InvalidSubject):
        subjects.parse(subject)


def test_entity_of_reads_any_subject_under_an_entity_leniently() -> None:
    ent = subjects.entity_of("nexus.evt.job.j1.BAD.kind")
    assert ent is not None and (ent.family, ent.id, ent.kind) == ("job", "j1", "BAD")
    assert subjects.entity_of("nexus.out.j1.1") is None
    assert subjects.entity_filter("nexus.evt.job.j1.dispatch.n1") == "nexus.evt.job.j1.>"
    assert subjects.entity_filter("nexus.evt.pipeline.p1.requested") == "nexus.evt.pipeline.p1.>"


def test_output_attempt() -> None:
    assert subjects.output_attempt(subjects.output("j1", 3)) == 3
    assert subjects.output_attempt("nexus.out.j1.3.n1") == 3  # releases that put the node in the subject
    assert subjects.output_attempt("nexus.out.j1.3") == 3
    # A chunk of no attempt (never counted), not an error: an agent may publish on these.
    assert subjects.output_attempt("nexus.out.j1.x.n1") == subjects.output_attempt("nexus.out.j1.x") == 0


@pytest.mark.parametrize(
    ("subject", "inbox"),
    [
        ("_INBOX.abc.def", True),
        ("_INBOX_NODE.web-1.x", True),
        ("_INBOX", False),
        ("_INBOX.", False),
        ("_INBOX.*", False),
        ("_INBOX.>", False),
        ("nexus.evt.job.j1.validated", False),
        ("$KV.nexus-keys.orchestrator", False),
        ("nexus.out.j1.1.web-1", False),
        ("_INBOXES.x", False),
    ],
)
def test_answers_go_to_inboxes_only(subject: str, inbox: bool) -> None:
    assert subjects.is_reply_inbox(subject) is inbox
