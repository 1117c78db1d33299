"""The codec: every event round-trips, external payloads decode, bad payloads give DecodeError."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from schemas import codec, export, subjects
from schemas.envelope import SCHEMA_VERSION
from schemas.errors import DecodeError, NexusError
from schemas.events import (
    ApiCalled,
    Event,
    JobAccepted,
    JobApprovalRequired,
    JobApproved,
    JobAssigned,
    JobCancel,
    JobCancelled,
    JobCancelRequested,
    JobDenied,
    JobDispatch,
    JobExited,
    JobFailed,
    JobLost,
    JobQueued,
    JobRejected,
    JobRequested,
    JobRolledBack,
    JobStarted,
    JobSucceeded,
    JobTested,
    JobTestRequested,
    JobTimedOut,
    JobValidated,
    NodeDrained,
    NodeHeartbeat,
    NodeLost,
    NodeRegistered,
    NodeUndrained,
)
from schemas.rpc import QueryRequest, QueryResult
from schemas.trust import TrustAnnounced, TrustCheckpoint
from schemas.values import (
    CommandTest,
    ExitCodeTest,
    FileExistsTest,
    Finding,
    HttpOkTest,
    JobTest,
    OutputContainsTest,
    StrictJobTest,
    TestResult,
)

T0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
REQUESTED = subjects.job("j1", "requested")

SAMPLES: list[Event] = [
    JobRequested(
        ts=T0,
        command="echo hello",
        tool="bash",
        node="web-001",
        labels={"zone": "eu"},
        working_dir="/srv",
        env={"A": "1"},
        timeout_s=30.0,
        priority=5,
        tests=[ExitCodeTest(expected=0), OutputContainsTest(pattern="hello", negate=False)],
        parent="j0",
        metadata={"s": "x", "i": 1, "f": 1.5, "b": True, "n": None},
        requested_by="alice",
    ),
    JobRejected(ts=T0, code="invalid_payload", reason="bad", raw='{"x":'),
    JobQueued(ts=T0, reason="all full"),
    JobAssigned(ts=T0, node="web-001", attempt=2, candidates=["web-001", "web-002"], reason="least loaded"),
    JobDispatch(
        ts=T0,
        attempt=1,
        tool="bash",
        command="echo hi",
        argv=["bash", "-c", "echo hi"],
        working_dir="/tmp",
        env={"K": "V"},
        timeout_s=5.0,
    ),
    JobAccepted(ts=T0, node="web-001", attempt=1, instance="inst-1"),
    JobStarted(ts=T0, node="web-001", attempt=1, pid=4242),
    JobExited(
        ts=T0,
        node="web-001",
        attempt=1,
        exit_code=None,
        signal=9,
        duration_ms=1200,
        output_bytes=10,
        chunks=2,
        killed_by="timeout",
        error=None,
    ),
    JobSucceeded(ts=T0, attempt=1, exit_code=0),
    JobFailed(ts=T0, attempt=1, reason="exit code 3", exit_code=3),
    JobTimedOut(ts=T0, attempt=1, timeout_s=5.0),
    JobCancelRequested(ts=T0, requested_by="bob", reason="oops"),
    JobValidated(
        ts=T0,
        severity="critical",
        warnings=[Finding(type="destructive_command", severity="critical", message="rm -rf /")],
        suggestions=["scope it"],
        duration_ms=1.5,
        approval_needed=True,
    ),
    JobTested(
        ts=T0,
        attempt=1,
        passed=False,
        results=[TestResult(type="exit_code", passed=False, expected="0", actual="3")],
    ),
    JobTestRequested(ts=T0, tests=[FileExistsTest(path="dist/index.html")], requested_by="carol"),
    JobRolledBack(ts=T0, rollback_job="j2"),
    JobApprovalRequired(ts=T0, reason="critical on prod", approvers=["alice"]),
    JobApproved(ts=T0, by="alice", reason="change 42"),
    JobDenied(ts=T0, by="alice", reason="not today"),
    JobCancel(ts=T0, attempt=1),
    JobCancelled(ts=T0, reason="cancelled while running"),
    JobLost(ts=T0, node="web-001", attempt=1, reason="heartbeat expired"),
    NodeRegistered(ts=T0, tools=["bash", "python3"], labels={"zone": "eu"}, max_jobs=4, hostname="h", version="0.1"),
    NodeLost(ts=T0, reason="no heartbeat", last_seen=T0 - timedelta(seconds=30)),
    NodeDrained(ts=T0, reason="kernel upgrade", by="ops"),
    NodeUndrained(ts=T0, by="ops"),
    ApiCalled(ts=T0, user="alice", role="operator", method="POST", path="/api/v1/jobs", status=201, allowed=True),
    TrustAnnounced(ts=T0, jwt="eyJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln"),
    TrustCheckpoint(ts=T0, upto_seq=1000, chain="0" * 64),
]


def subject_for(ev: Event) -> str:
    family, kind = codec.event_type(ev).split(".", 1)
    if family == "node":
        return subjects.node("web-001", kind)
    if family == "api":
        return subjects.api("r-1", kind)
    if family == "trust":
        return subjects.trust("UABC", kind)
    if kind == "dispatch":
        return subjects.dispatch("j1", "web-001")
    if kind == "cancel":
        return subjects.cancel("j1", "web-001")
    return subjects.job("j1", kind)


# ---------------------------------------------------------------- round trips


def test_samples_cover_every_event_type_in_the_union() -> None:
    # Pipeline events have their own samples in test_pipeline.py.
    job_and_node = {t for t in codec.EVENT_TYPES if not t.startswith("pipeline.")}
    assert {codec.event_type(ev) for ev in SAMPLES} == job_and_node
    assert set(codec.EVENT_TYPES.values()) == set(typing.get_args(Event))
    assert len(SAMPLES) == len(job_and_node)


@pytest.mark.parametrize("ev", SAMPLES, ids=lambda ev: codec.event_type(ev))
def test_round_trip_every_event_type(ev: Event) -> None:
    data = codec.encode(ev)
    assert codec.decode(subject_for(ev), data) == ev
    obj = json.loads(data)
    assert obj["type"] == codec.event_type(ev)
    assert obj["v"] == SCHEMA_VERSION == 1
    assert obj["ts"] == "2026-11-24T10:00:00Z"


def test_event_type_agrees_with_the_struct_tag() -> None:
    assert codec.event_type(JobExited(node="n1", attempt=1)) == "job.exited"
    assert codec.EVENT_TYPES["job.requested"] is JobRequested
    assert codec.EVENT_TYPES["node.lost"] is NodeLost


def test_offset_timestamps_decode_to_the_same_instant() -> None:
    ev = codec.decode(REQUESTED, b'{"command": "x", "ts": "2026-11-24T12:00:00+02:00"}')
    assert ev.ts == T0
    assert ev.ts is not None and ev.ts.utcoffset() == timedelta(hours=2)


# ---------------------------------------------------------------- external contract


def test_minimal_external_payload_decodes_with_defaults() -> None:
    ev = codec.decode(REQUESTED, b'{"command": "echo hi"}')
    assert ev == JobRequested(command="echo hi")
    assert isinstance(ev, JobRequested)
    assert ev.tool == "bash"
    assert ev.v == 1
    assert ev.ts is None
    assert ev.node is None
    assert ev.labels == {} and ev.env == {} and ev.tests == [] and ev.metadata == {}
    assert ev.timeout_s is None and ev.priority == 0


def test_design_example_payload_decodes() -> None:
    data = (
        b'{"type": "job.requested", "v": 1, "ts": "2026-11-24T10:00:00Z",'
        b' "tool": "bash", "command": "echo hello", "node": "web-001"}'
    )
    assert codec.decode(REQUESTED, data) == JobRequested(ts=T0, command="echo hello", node="web-001")


def test_type_disagreeing_with_subject_is_a_decode_error_with_subject_and_bytes() -> None:
    data = b'{"type": "job.exited", "command": "echo hi"}'
    with pytest.raises(DecodeError) as info:
        codec.decode(REQUESTED, data)
    err = info.value
    assert isinstance(err, NexusError)
    assert err.subject == REQUESTED
    assert err.data == data
    assert "job.exited" in err.reason
    assert REQUESTED in str(err)


def test_a_valid_event_on_another_kinds_subject_is_refused() -> None:
    data = codec.encode(JobSucceeded(ts=T0, attempt=1))
    with pytest.raises(DecodeError):
        codec.decode(subjects.job("j1", "failed"), data)


def test_unknown_fields_are_ignored() -> None:
    data = b'{"command": "x", "from_the_future": {"nested": [1, 2]}, "another": null}'
    assert codec.decode(REQUESTED, data) == JobRequested(command="x")


def test_on_the_bus_a_tests_unknown_key_is_ignored_where_a_person_writes_it_refused() -> None:
    """DESIGN §4: unknown fields are ignored on the bus, in tests too; what a person writes (a
    tests file, an API body: StrictJobTest) refuses them, a misspelt `negate` flipping a test."""
    data = b'{"command": "x", "tests": [{"type": "output_contains", "pattern": "error", "negat": true}]}'
    ev = codec.decode(REQUESTED, data)
    assert isinstance(ev, JobRequested) and ev.tests == [OutputContainsTest(pattern="error")]
    with pytest.raises(msgspec.ValidationError, match="unknown field `negat`"):
        msgspec.convert([{"type": "output_contains", "pattern": "error", "negat": True}], list[StrictJobTest])
    strict = msgspec.convert([{"type": "file_exists", "path": "x"}], list[StrictJobTest])
    plain = [FileExistsTest(path="x")]
    assert codec.encode(JobRequested(command="x", tests=strict)) == codec.encode(JobRequested(command="x", tests=plain))


def test_old_event_without_new_fields_still_decodes() -> None:
    data = b'{"type": "job.exited", "v": 1, "ts": "2026-11-24T10:00:00Z", "node": "n1", "attempt": 1}'
    ev = codec.decode(subjects.job("j1", "exited"), data)
    assert ev == JobExited(ts=T0, node="n1", attempt=1)


@pytest.mark.parametrize(
    ("subject", "payload"),
    [
        pytest.param(REQUESTED, b'{"command": "x", "ts": "2026-11-24T10:00:00"}', id="requested-ts"),
        pytest.param(
            subjects.node("n1", "lost"), b'{"reason": "r", "last_seen": "2026-11-24T10:00:00"}', id="node-last-seen"
        ),
    ],
)
def test_naive_timestamps_are_refused(subject: str, payload: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode(subject, payload)
    assert "timezone" in info.value.reason


@pytest.mark.parametrize(
    ("subject", "payload", "fragment"),
    [
        pytest.param(REQUESTED, b'{"command":', "truncated", id="truncated-json"),
        pytest.param(REQUESTED, b"not json", "JSON", id="garbage"),
        pytest.param(REQUESTED, b"", "truncated", id="empty-bytes"),
        pytest.param(REQUESTED, b"\xff\xfe", "", id="binary"),
        pytest.param(REQUESTED, b"[]", "object", id="array"),
        pytest.param(REQUESTED, b"{}", "command", id="missing-command"),
        pytest.param(REQUESTED, b'{"command": 5}', "$.command", id="int-command"),
        pytest.param(REQUESTED, b'{"command": "x", "timeout_s": "10"}', "$.timeout_s", id="str-timeout"),
        pytest.param(REQUESTED, b'{"command": "x", "timeout_s": 0}', "$.timeout_s", id="zero-timeout"),
        pytest.param(REQUESTED, b'{"command": "x", "labels": ["a"]}', "$.labels", id="list-labels"),
        pytest.param(REQUESTED, b'{"command": "x", "node": "a.b"}', "$.node", id="dotted-node"),
        pytest.param(REQUESTED, b'{"command": "x", "v": "1"}', "$.v", id="str-version"),
        pytest.param(REQUESTED, b'{"command": "x", "ts": "yesterday"}', "$.ts", id="bad-ts"),
        pytest.param(REQUESTED, b'{"command": "x", "type": null}', "$.type", id="null-type"),
        pytest.param(subjects.job("j1", "exited"), b'{"node": "n1", "attempt": "one"}', "$.attempt", id="exited"),
        pytest.param(
            subjects.job("j1", "exited"), b'{"node": "n1", "attempt": 1, "killed_by": "oom"}', "$.killed_by", id="kb"
        ),
        pytest.param(subjects.job("j1", "bogus"), b"{}", "unknown event type 'job.bogus'", id="unknown-kind"),
        pytest.param(subjects.pipeline("p1", "started"), b"{}", "pipeline.started", id="no-pipeline-events"),
        pytest.param(subjects.node("n1", "bogus"), b"{}", "node.bogus", id="unknown-node-kind"),
        pytest.param("foo.bar", b"{}", "not of the form", id="foreign-subject"),
        pytest.param("nexus.out.j1.1", b"{}", "not of the form", id="output-subject"),
        pytest.param("nexus.evt.job.a b.requested", b'{"command": "x"}', "invalid job id", id="bad-id"),
        pytest.param("nexus.evt.job.j1.dispatch", b"{}", "node id", id="dispatch-without-node"),
    ],
)
def test_bad_payloads_and_subjects_give_decode_error_with_reason(subject: str, payload: bytes, fragment: str) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode(subject, payload)
    err = info.value
    assert err.subject == subject
    assert err.data == payload
    assert err.reason
    assert fragment in err.reason


@pytest.mark.parametrize(
    ("subject", "payload"),
    [
        pytest.param(REQUESTED, b'{"command": "x", "node": "web\\n"}', id="requested-node"),
        pytest.param(REQUESTED, b'{"command": "x", "parent": "j0\\n"}', id="requested-parent"),
        pytest.param(subjects.job("j1", "assigned"), b'{"node": "n1\\n"}', id="assigned-node"),
    ],
)
def test_id_fields_refuse_a_trailing_newline(subject: str, payload: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode(subject, payload)


# ---------------------------------------------------------------- job tests union


def test_tests_list_decodes_into_the_tagged_test_union() -> None:
    data = json.dumps(
        {
            "command": "make",
            "tests": [
                {"type": "exit_code", "expected": 3},
                {"type": "exit_code"},
                {"type": "output_contains", "pattern": "ok$", "negate": True},
                {"type": "file_exists", "path": "/tmp/x"},
                {"type": "http_ok", "url": "http://localhost/"},
                {"type": "command", "command": "test -f x", "timeout_s": 3},
            ],
        }
    ).encode()
    ev = codec.decode(REQUESTED, data)
    assert isinstance(ev, JobRequested)
    expected: list[JobTest] = [
        ExitCodeTest(expected=3),
        ExitCodeTest(expected=0),
        OutputContainsTest(pattern="ok$", stream="stdout", negate=True),
        FileExistsTest(path="/tmp/x"),
        HttpOkTest(url="http://localhost/", timeout_s=5.0),
        CommandTest(command="test -f x", timeout_s=3.0),
    ]
    assert ev.tests == expected
    assert [type(t) for t in ev.tests] == [type(t) for t in expected]


@pytest.mark.parametrize(
    "tests",
    [
        pytest.param([{"type": "nope"}], id="unknown-tag"),
        pytest.param([{"expected": 0}], id="missing-tag"),
        pytest.param([{"type": "file_exists"}], id="missing-field"),
        pytest.param([{"type": "output_contains", "pattern": "x", "stream": "stderr"}], id="bad-stream"),
    ],
)
def test_bad_tests_are_decode_errors(tests: list[dict[str, object]]) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode(REQUESTED, json.dumps({"command": "x", "tests": tests}).encode())
    assert "$.tests[0]" in info.value.reason


# ---------------------------------------------------------------- heartbeats and rpc


def test_heartbeat_round_trips() -> None:
    hb = NodeHeartbeat(
        node="web-001",
        ts=T0,
        tools=["bash", "git"],
        labels={"zone": "eu"},
        max_jobs=3,
        active_jobs=1,
        hostname="web-001.local",
        version="0.1.0",
        interval_s=1.5,
        instance="abc",
        running=["j1"],
    )
    assert codec.decode_heartbeat(codec.encode(hb)) == hb


def test_minimal_heartbeat_gets_defaults() -> None:
    hb = codec.decode_heartbeat(b'{"node": "n1", "ts": "2026-11-24T10:00:00Z", "unknown": 1}')
    assert hb == NodeHeartbeat(node="n1", ts=T0)
    assert hb.max_jobs == 1 and hb.tools == [] and hb.interval_s == 2.0


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b'{"node": "n1", "ts": "2026-11-24T10:00:00"}', id="naive-ts"),
        pytest.param(b'{"node": "n1"}', id="missing-ts"),
        pytest.param(b'{"node": "a.b", "ts": "2026-11-24T10:00:00Z"}', id="bad-node"),
        pytest.param(b"{", id="truncated"),
    ],
)
def test_bad_heartbeats_give_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode_heartbeat(payload)
    assert info.value.subject == subjects.NODES_BUCKET
    assert info.value.data == payload
    assert info.value.reason


def test_query_messages_round_trip_and_encode_odd_values_as_strings() -> None:
    req = QueryRequest(sql="SELECT 1", params=[1, "a"])
    assert codec.decode_query_request(codec.encode(req)) == req
    res = QueryResult(columns=["d"], rows=[[T0.date()], [UTC]], checkpoint=7)
    back = codec.decode_query_result(codec.encode(res))
    assert back.columns == ["d"]
    assert back.rows == [["2026-11-24"], [str(UTC)]]
    assert back.checkpoint == 7
    with pytest.raises(DecodeError) as info:
        codec.decode_query_request(b'{"params": []}')
    assert info.value.subject == subjects.RPC_QUERY


# ---------------------------------------------------------------- JSON schema


def _defs_by_tag(schema: dict[str, typing.Any]) -> dict[str, str]:
    out = {}
    for name, definition in schema["$defs"].items():
        tag = definition.get("properties", {}).get("type", {}).get("enum")
        if tag:
            (value,) = tag
            out[value] = name
    return out


def test_json_schema_contains_every_event_tag() -> None:
    schema = export.json_schema()
    tags = _defs_by_tag(schema)
    assert set(codec.EVENT_TYPES) <= set(tags)
    for tag, cls in codec.EVENT_TYPES.items():
        assert tags[tag] == cls.__name__
    refs = {ref["$ref"].rsplit("/", 1)[1] for ref in schema["oneOf"]}
    assert refs == {cls.__name__ for cls in codec.EVENT_TYPES.values()}
    assert {"exit_code", "output_contains", "file_exists", "http_ok", "command"} <= set(tags)
    assert "NodeHeartbeat" in schema["$defs"]
    assert schema["$schema"].startswith("https://json-schema.org/")


def test_json_schema_carries_docstrings_and_id_patterns() -> None:
    defs = export.json_schema()["$defs"]
    assert "idempotency key" in defs["JobRequested"]["description"]
    assert "command" in defs["JobRequested"]["required"]
    node = defs["JobRequested"]["properties"]["node"]
    assert {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}(?!\\n)$"} in node["anyOf"]


def test_export_main_prints_the_schema_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    export.main()
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(msgspec.json.encode(export.json_schema()))


def _answer(rows: int, width: int) -> QueryResult:
    return QueryResult(columns=["n", "text"], rows=[[n, "x" * width] for n in range(rows)], checkpoint=7)


def test_a_query_answer_that_fits_one_message_is_one_part() -> None:
    (only,) = codec.encode_query_result(_answer(10, 10), in_parts=True)
    assert codec.decode_query_result(only) == _answer(10, 10)


def test_a_big_query_answer_goes_in_parts_each_within_one_message_and_joins_in_order() -> None:
    answer = _answer(3_000, 500)  # ~1.5 MB
    parts = codec.encode_query_result(answer, in_parts=True, part_bytes=256 * 1024)
    assert len(parts) > 5 and all(len(p) <= 256 * 1024 for p in parts)
    decoded = [codec.decode_query_result(p) for p in parts]
    assert [(d.part, d.parts) for d in decoded] == [(i, len(parts)) for i in range(1, len(parts) + 1)]
    assert codec.join_query_results(decoded) == answer


def test_parts_missing_or_out_of_order_are_refused() -> None:
    decoded = [codec.decode_query_result(p) for p in codec.encode_query_result(_answer(3_000, 500), in_parts=True, part_bytes=256 * 1024)]
    for broken in (decoded[1:], decoded[:-1], [decoded[1], decoded[0], *decoded[2:]]):
        with pytest.raises(ValueError, match="incomplete or out of order"):
            codec.join_query_results(broken)


def test_a_big_answer_to_a_client_that_takes_one_message_is_an_error_saying_what_to_do() -> None:
    (only,) = codec.encode_query_result(_answer(3_000, 500), in_parts=False, part_bytes=256 * 1024)
    error = codec.decode_query_result(only).error
    assert error is not None and "add a LIMIT" in error


def test_a_row_too_big_for_any_message_is_an_error_naming_it() -> None:
    answer = QueryResult(columns=["text"], rows=[["short"], ["x" * 300_000]])
    (only,) = codec.encode_query_result(answer, in_parts=True, part_bytes=256 * 1024)
    error = codec.decode_query_result(only).error
    assert error is not None and "row 2" in error


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (rb'{"command": "echo \ud800"}', (18, "\\ud800")),
        (rb'{"command": "\udc00 x"}', (13, "\\udc00")),
        (rb'{"command": "\ud83d\ud83d\ude00"}', (13, "\\ud83d")),
        (rb'{"command": "\ud83d\ude00 and \\ud800"}', None),  # a pair, and an escaped backslash before "ud800"
        (rb'{"command": "\u00e9"}', None),
    ],
)
def test_a_lone_surrogate_escape_is_found_and_named(data: bytes, found: tuple[int, str] | None) -> None:
    assert codec.lone_surrogate(data) == found
    if found is not None:
        with pytest.raises(DecodeError) as caught:
            codec.decode(subjects.job("j1", "requested"), data)
        assert f"lone UTF-16 surrogate escape {found[1]} (byte {found[0]})" in caught.value.reason
