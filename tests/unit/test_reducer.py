"""The reducer: a deterministic fold of log records into job and node views.

The golden history in golden/lifecycle.jsonl is replayed against the snapshot in
golden/lifecycle.expected.json. After an intended change of the fold, review the
diff of `python tests/unit/test_reducer.py > tests/unit/golden/lifecycle.expected.json`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from orchestrator.core import reducer
from orchestrator.core.reducer import Applied, EventRow
from orchestrator.core.views import JobView, NodeView
from schemas import codec, subjects
from schemas.errors import DecodeError
from schemas.events import (
    Event,
    JobAccepted,
    JobAssigned,
    JobCancel,
    JobCancelled,
    JobCancelRequested,
    JobDispatch,
    JobExited,
    JobFailed,
    JobLost,
    JobQueued,
    JobRejected,
    JobRequested,
    JobStarted,
    JobSucceeded,
    JobTimedOut,
    JobValidated,
    NodeLost,
    NodeRegistered,
)
from schemas.records import Author, Record
from schemas.values import ExitCodeTest

GOLDEN = Path(__file__).parent / "golden"
T0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stream_ts(seq: int) -> datetime:
    # The server's clock, deliberately different from any event ts used below.
    return at(1000 + seq)


def rec(seq: int, subject: str, event: Event) -> Record:
    """A record as the server stores it: stamped when the publish arrived, which in these
    histories is the publisher's own `ts` when it gave one (the record uses the server's)."""
    return Record(seq=seq, subject=subject, stream_ts=event.ts or stream_ts(seq), raw=codec.encode(event), event=event)


def test_the_record_keeps_the_servers_time_not_the_payloads() -> None:
    backdated = JobRequested(ts=datetime(2001, 1, 1, tzinfo=UTC), command="echo hi")
    r = Record(seq=1, subject=subjects.job("j1", "requested"), stream_ts=at(5), raw=codec.encode(backdated), event=backdated)
    a = Fold().apply(r)
    assert a.job is not None and (a.job.requested_at, a.row.ts) == (at(5), at(5))


def test_a_job_remembers_the_verified_role_of_its_first_request_only() -> None:
    mallory = Author(key="UM", name="mallory", role="submitter")
    orchestrator = Author(key="UA", name="orchestrator", role="admin", service=True)
    first = msgspec.structs.replace(rec(1, subjects.job("p-s1-0", "requested"), JobRequested(command="echo HIJACKED")), author=mallory)
    ours = msgspec.structs.replace(rec(2, subjects.job("p-s1-0", "requested"), JobRequested(command="echo legit")), author=orchestrator)
    f = Fold().all([first, ours])
    held = f.jobs["p-s1-0"]
    assert (held.requester, held.requester_role, held.command) == ("mallory", "submitter", "echo HIJACKED")
    unsigned = Fold().all([rec(1, subjects.job("j1", "requested"), JobRequested(command="echo hi"))])
    assert (unsigned.jobs["j1"].requester, unsigned.jobs["j1"].requester_role) == (None, None)


class Fold:
    """The projection's bookkeeping, without a store."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobView] = {}
        self.nodes: dict[str, NodeView] = {}
        self.rows: list[EventRow] = []

    def apply(self, r: Record) -> Applied:
        applied = reducer.apply(self.jobs, self.nodes, r)
        self.rows.append(applied.row)
        if applied.job is not None:
            self.jobs[applied.job.job_id] = applied.job
        if applied.node is not None:
            self.nodes[applied.node.node_id] = applied.node
        return applied

    def all(self, records: Iterable[Record]) -> Fold:
        for r in records:
            self.apply(r)
        return self


def lifecycle(job_id: str = "j1", node: str = "n1") -> list[Record]:
    j = job_id
    return [
        rec(1, subjects.job(j, "requested"), JobRequested(ts=at(1), command="echo hi", labels={"zone": "eu"})),
        rec(2, subjects.job(j, "assigned"), JobAssigned(ts=at(2), node=node, attempt=1, candidates=[node])),
        rec(
            3,
            subjects.dispatch(j, node),
            JobDispatch(attempt=1, tool="bash", command="echo hi", argv=["bash", "-c", "echo hi"]),
        ),
        rec(4, subjects.job(j, "accepted"), JobAccepted(ts=at(4), node=node, attempt=1, instance="i-1")),
        rec(5, subjects.job(j, "started"), JobStarted(ts=at(5), node=node, attempt=1, pid=99)),
        rec(
            6,
            subjects.job(j, "exited"),
            JobExited(ts=at(6), node=node, attempt=1, exit_code=0, duration_ms=850, output_bytes=3, chunks=1),
        ),
        rec(7, subjects.job(j, "succeeded"), JobSucceeded(ts=at(7), attempt=1)),
    ]


def started(job_id: str = "j1") -> Fold:
    return Fold().all(lifecycle(job_id)[:5])


# ---------------------------------------------------------------- lifecycle


def test_full_lifecycle_record_by_record() -> None:
    records = lifecycle()
    f = Fold()

    a = f.apply(records[0])
    assert a.node is None
    assert a.job == JobView(
        job_id="j1",
        status="requested",
        command="echo hi",
        tool="bash",
        labels={"zone": "eu"},
        requested_at=at(1),
        first_seq=1,
        last_seq=1,
    )
    assert a.row == EventRow(
        seq=1,
        subject="nexus.evt.job.j1.requested",
        type="job.requested",
        ts=at(1),
        job_id="j1",
        node_id=None,
        pipeline_id=None,
        payload=records[0].raw.decode(),
        error=None,
    )

    a = f.apply(records[1])
    assert a.job is not None
    assert (a.job.status, a.job.node, a.job.attempt, a.job.assigned_at) == ("assigned", "n1", 1, at(2))
    assert (a.job.first_seq, a.job.last_seq) == (1, 2)
    assert (a.row.type, a.row.job_id, a.row.node_id, a.row.ts) == ("job.assigned", "j1", "n1", at(2))

    a = f.apply(records[2])  # dispatch carries no ts: the stream's timestamp stands in
    assert a.job is not None and a.job.status == "dispatched"
    assert a.row.ts == stream_ts(3)
    assert (a.row.type, a.row.subject, a.row.node_id) == ("job.dispatch", "nexus.evt.job.j1.dispatch.n1", "n1")
    assert json.loads(a.row.payload)["argv"] == ["bash", "-c", "echo hi"]

    a = f.apply(records[3])
    assert a.job is not None
    assert (a.job.status, a.job.instance, a.job.accepted_at) == ("accepted", "i-1", at(4))

    a = f.apply(records[4])
    assert a.job is not None
    assert (a.job.status, a.job.started_at) == ("running", at(5))
    assert not a.job.terminal

    a = f.apply(records[5])
    assert a.job is not None
    assert (a.job.status, a.job.exit_code, a.job.duration_ms, a.job.output_bytes, a.job.chunks) == (
        "exited",
        0,
        850,
        3,
        1,
    )
    assert a.job.exited_at == at(6)
    assert a.job.finished_at is None

    a = f.apply(records[6])
    assert a.job is not None
    assert (a.job.status, a.job.finished_at, a.job.last_seq) == ("succeeded", at(7), 7)
    assert a.job.terminal
    assert (a.row.type, a.row.node_id, a.row.error) == ("job.succeeded", "n1", None)

    assert [r.seq for r in f.rows] == list(range(1, 8))
    assert all(r.error is None for r in f.rows)
    assert all(r.payload == x.raw.decode() for r, x in zip(f.rows, records, strict=True))


def test_apply_does_not_mutate_the_views_it_is_given() -> None:
    f = started()
    before = msgspec.structs.replace(f.jobs["j1"])
    snapshot = msgspec.to_builtins(before)
    reducer.apply(f.jobs, f.nodes, rec(6, subjects.job("j1", "exited"), JobExited(node="n1", attempt=1, exit_code=1)))
    assert msgspec.to_builtins(f.jobs["j1"]) == snapshot


def test_requested_copies_every_field() -> None:
    ev = JobRequested(
        ts=at(0),
        command="make",
        tool="python3",
        node="n2",
        labels={"a": "b"},
        working_dir="/w",
        env={"K": "V"},
        timeout_s=9.5,
        priority=3,
        tests=[ExitCodeTest(expected=2)],
        parent="p0",
        metadata={"k": 1},
        requested_by="ci",
    )
    job = Fold().apply(rec(5, subjects.job("jx", "requested"), ev)).job
    assert job is not None
    assert (job.tool, job.requested_node, job.node, job.working_dir, job.timeout_s, job.priority) == (
        "python3",
        "n2",
        None,
        "/w",
        9.5,
        3,
    )
    assert (job.labels, job.env, job.tests, job.parent, job.metadata, job.requested_by) == (
        {"a": "b"},
        {"K": "V"},
        [ExitCodeTest(expected=2)],
        "p0",
        {"k": 1},
        "ci",
    )
    assert (job.first_seq, job.last_seq) == (5, 5)


# ---------------------------------------------------------------- bad input


def test_duplicate_requested_is_ignored_with_a_note() -> None:
    f = started()
    view = f.jobs["j1"]
    a = f.apply(rec(6, subjects.job("j1", "requested"), JobRequested(ts=at(6), command="rm -rf /")))
    assert a.row.error is not None and "duplicate" in a.row.error
    assert (a.row.type, a.row.job_id) == ("job.requested", "j1")
    # Only the cursor moves (decisions use the job's last subject sequence); nothing else changes.
    assert a.job == msgspec.structs.replace(view, last_seq=6)
    assert a.job is not view
    assert view.last_seq == 5
    assert (f.jobs["j1"].command, f.jobs["j1"].status, f.jobs["j1"].requested_at) == ("echo hi", "running", at(1))


@pytest.mark.parametrize(
    ("subject", "event"),
    [
        (subjects.job("ghost", "assigned"), JobAssigned(node="n1")),
        (subjects.job("ghost", "exited"), JobExited(node="n1", attempt=1, exit_code=0)),
        (subjects.job("ghost", "succeeded"), JobSucceeded(attempt=1)),
        (subjects.cancel("ghost", "n1"), JobCancel(attempt=1)),
    ],
)
def test_events_for_unknown_jobs_are_noted(subject: str, event: Event) -> None:
    f = Fold()
    a = f.apply(rec(1, subject, event))
    assert a.job is None and a.node is None
    assert a.row.error is not None and "unknown job" in a.row.error
    assert a.row.job_id == "ghost"
    assert a.row.type == codec.event_type(event)
    assert f.jobs == {}


def test_undecodable_record_becomes_an_events_row_with_its_error() -> None:
    raw = b'{"command": 5}'
    subject = subjects.job("jbad", "requested")
    with pytest.raises(DecodeError) as info:
        codec.decode(subject, raw)
    r = Record(seq=3, subject=subject, stream_ts=stream_ts(3), raw=raw, error=info.value.reason)
    a = Fold().apply(r)
    assert a.job is None and a.node is None
    assert a.row == EventRow(
        seq=3,
        subject=subject,
        type="job.requested",
        ts=stream_ts(3),
        job_id="jbad",
        node_id=None,
        pipeline_id=None,
        payload='{"command": 5}',
        error=info.value.reason,
    )


def test_undecodable_bytes_are_kept_readable_in_the_row() -> None:
    r = Record(seq=1, subject=subjects.job("j1", "requested"), stream_ts=T0, raw=b"\xff{", error="bad utf-8")
    row = Fold().apply(r).row
    assert row.payload == "\ufffd{"
    assert row.error == "bad utf-8"


def test_record_on_a_foreign_subject_is_an_invalid_row() -> None:
    r = Record(seq=9, subject="nexus.evt.job.j1", stream_ts=T0, raw=b"{}")
    row = Fold().apply(r).row
    assert (row.type, row.job_id, row.node_id, row.pipeline_id) == ("invalid", None, None, None)
    assert row.error == "subject is not a Nexus event subject"


def test_pipeline_subject_row_names_the_pipeline() -> None:
    subject = subjects.pipeline("p1", "started")
    r = Record(seq=2, subject=subject, stream_ts=T0, raw=b"{}", error="unknown event type 'pipeline.started'")
    row = Fold().apply(r).row
    assert (row.type, row.pipeline_id, row.job_id) == ("pipeline.started", "p1", None)


def test_rejected_on_an_unknown_job_creates_a_rejected_view() -> None:
    f = Fold()
    bad = Record(seq=1, subject=subjects.job("j9", "requested"), stream_ts=stream_ts(1), raw=b"{", error="truncated")
    f.apply(bad)
    ev = JobRejected(ts=at(2), code="invalid_payload", reason="payload does not decode: truncated", raw="{")
    a = f.apply(rec(2, subjects.job("j9", "rejected"), ev))
    assert a.row.error is None
    assert a.job == JobView(
        job_id="j9",
        status="rejected",
        command="",
        reason="payload does not decode: truncated",
        requested_at=at(2),
        finished_at=at(2),
        first_seq=2,
        last_seq=2,
    )
    assert a.job.terminal


# ---------------------------------------------------------------- terminal paths


def test_terminal_states_are_sticky() -> None:
    f = Fold().all(lifecycle())
    done = f.jobs["j1"]
    late: list[tuple[str, Event]] = [
        (subjects.job("j1", "started"), JobStarted(node="n1", attempt=1, pid=1)),
        (subjects.job("j1", "exited"), JobExited(node="n1", attempt=1, exit_code=1)),
        (subjects.job("j1", "assigned"), JobAssigned(node="n2", attempt=2)),
        (subjects.job("j1", "queued"), JobQueued(reason="full")),
        (subjects.dispatch("j1", "n2"), JobDispatch(attempt=2, tool="bash", command="x", argv=[])),
        (subjects.job("j1", "accepted"), JobAccepted(node="n2", attempt=2)),
    ]
    for seq, (subject, ev) in enumerate(late, start=8):
        a = f.apply(rec(seq, subject, ev))
        assert a.row.error == "event after the job ended, ignored"
        assert a.job == msgspec.structs.replace(done, last_seq=seq), ev
    assert f.jobs["j1"].status == "succeeded"
    assert msgspec.structs.replace(f.jobs["j1"], last_seq=done.last_seq) == done
    assert done.status == "succeeded" and done.last_seq == 7


@pytest.mark.parametrize(
    ("kind", "event"),
    [
        ("failed", JobFailed(ts=at(50), attempt=1, reason="late")),
        ("lost", JobLost(ts=at(50), node="n1", attempt=1, reason="late")),
        ("cancelled", JobCancelled(ts=at(50))),
        ("timed_out", JobTimedOut(ts=at(50), attempt=1)),
        ("rejected", JobRejected(ts=at(50), code="x", reason="late")),
    ],
)
def test_a_second_verdict_does_not_overwrite_the_first(kind: str, event: Event) -> None:
    f = Fold().all(lifecycle())
    done = f.jobs["j1"]
    a = f.apply(rec(8, subjects.job("j1", kind), event))
    job = f.jobs["j1"]
    assert (job.status, job.finished_at, job.reason) == ("succeeded", at(7), done.reason)
    assert msgspec.structs.replace(job, last_seq=7) == done
    assert a.row.type == f"job.{kind}"


def test_timed_out_path() -> None:
    f = started()
    f.apply(rec(6, subjects.job("j1", "exited"), JobExited(ts=at(6), node="n1", attempt=1, signal=9, killed_by="timeout")))
    assert (f.jobs["j1"].status, f.jobs["j1"].killed_by, f.jobs["j1"].signal) == ("exited", "timeout", 9)
    f.apply(rec(7, subjects.job("j1", "timed_out"), JobTimedOut(ts=at(7), attempt=1, timeout_s=2.5)))
    job = f.jobs["j1"]
    assert (job.status, job.reason, job.finished_at) == ("timed_out", "timed out after 2.5s", at(7))


def test_timed_out_without_a_limit_has_a_plain_reason() -> None:
    f = started()
    f.apply(rec(6, subjects.job("j1", "timed_out"), JobTimedOut(ts=at(6), attempt=1)))
    assert (f.jobs["j1"].status, f.jobs["j1"].reason) == ("timed_out", "timed out")


def test_cancelled_while_running_path() -> None:
    f = started()
    f.apply(rec(6, subjects.job("j1", "cancel_requested"), JobCancelRequested(ts=at(6), requested_by="bob")))
    assert (f.jobs["j1"].status, f.jobs["j1"].cancel_requested, f.jobs["j1"].cancel_sent) == ("running", True, False)
    a = f.apply(rec(7, subjects.cancel("j1", "n1"), JobCancel(ts=at(7), attempt=1)))
    assert a.row.node_id == "n1"
    assert (f.jobs["j1"].cancel_sent, f.jobs["j1"].status) == (True, "running")
    f.apply(rec(8, subjects.job("j1", "exited"), JobExited(ts=at(8), node="n1", attempt=1, killed_by="cancel")))
    f.apply(rec(9, subjects.job("j1", "cancelled"), JobCancelled(ts=at(9), reason="cancelled while running")))
    job = f.jobs["j1"]
    assert (job.status, job.reason, job.finished_at, job.killed_by) == (
        "cancelled",
        "cancelled while running",
        at(9),
        "cancel",
    )


def test_cancelled_while_queued_path() -> None:
    f = Fold().all(lifecycle()[:1])
    f.apply(rec(2, subjects.job("j1", "queued"), JobQueued(ts=at(2), reason="all full")))
    assert (f.jobs["j1"].status, f.jobs["j1"].reason) == ("queued", "all full")
    f.apply(rec(3, subjects.job("j1", "cancel_requested"), JobCancelRequested(ts=at(3))))
    f.apply(rec(4, subjects.job("j1", "cancelled"), JobCancelled(ts=at(4))))
    assert (f.jobs["j1"].status, f.jobs["j1"].reason, f.jobs["j1"].node) == ("cancelled", "cancelled", None)


def test_lost_path() -> None:
    f = started()
    f.apply(rec(6, subjects.job("j1", "lost"), JobLost(ts=at(6), node="n1", attempt=1, reason="heartbeat expired")))
    job = f.jobs["j1"]
    assert (job.status, job.reason, job.finished_at, job.node, job.exit_code) == (
        "lost",
        "heartbeat expired",
        at(6),
        "n1",
        None,
    )


def test_failed_path_after_exit_code_3() -> None:
    f = started()
    f.apply(rec(6, subjects.job("j1", "exited"), JobExited(ts=at(6), node="n1", attempt=1, exit_code=3)))
    f.apply(rec(7, subjects.job("j1", "failed"), JobFailed(ts=at(7), attempt=1, reason="exit code 3", exit_code=3)))
    job = f.jobs["j1"]
    assert (job.status, job.reason, job.exit_code, job.finished_at) == ("failed", "exit code 3", 3, at(7))


def test_exit_with_error_records_the_error_as_reason() -> None:
    f = started()
    f.apply(rec(6, subjects.job("j1", "exited"), JobExited(ts=at(6), node="n1", attempt=1, error="no such tool")))
    assert (f.jobs["j1"].status, f.jobs["j1"].reason, f.jobs["j1"].exit_code) == ("exited", "no such tool", None)


def test_rejected_before_assignment() -> None:
    f = Fold().all(lifecycle()[:1])
    f.apply(rec(2, subjects.job("j1", "rejected"), JobRejected(ts=at(2), code="unknown_node", reason="no n9")))
    assert (f.jobs["j1"].status, f.jobs["j1"].reason, f.jobs["j1"].finished_at) == ("rejected", "no n9", at(2))


# ---------------------------------------------------------------- nodes


def test_a_drain_outlasts_registrations_until_undrained() -> None:
    from schemas.events import NodeDrained, NodeUndrained

    f = Fold()
    f.apply(rec(1, subjects.node("n1", "registered"), NodeRegistered(ts=at(1), tools=["bash"])))
    a = f.apply(rec(2, subjects.node("n1", "drained"), NodeDrained(ts=at(2), reason="kernel upgrade", by="ops")))
    assert a.node is not None
    assert (a.node.drained, a.node.drained_at, a.node.drain_reason, a.node.status) == (True, at(2), "kernel upgrade", "online")
    assert (a.row.type, a.row.node_id) == ("node.drained", "n1")
    # Its agent restarting (registered again) or the node lost and back: still drained.
    f.apply(rec(3, subjects.node("n1", "lost"), NodeLost(ts=at(3), reason="no heartbeat")))
    a = f.apply(rec(4, subjects.node("n1", "registered"), NodeRegistered(ts=at(4), tools=["bash"])))
    assert a.node is not None and a.node.drained and a.node.status == "online"
    a = f.apply(rec(5, subjects.node("n1", "undrained"), NodeUndrained(ts=at(5), by="ops")))
    assert a.node is not None and (a.node.drained, a.node.drained_at, a.node.drain_reason) == (False, None, None)


def test_node_registered_then_lost_then_back() -> None:
    f = Fold()
    reg = NodeRegistered(ts=at(1), tools=["bash"], labels={"zone": "eu"}, max_jobs=2, hostname="h1", version="0.1")
    a = f.apply(rec(1, subjects.node("n1", "registered"), reg))
    assert a.job is None
    assert a.node == NodeView(
        node_id="n1",
        status="online",
        tools=["bash"],
        labels={"zone": "eu"},
        max_jobs=2,
        hostname="h1",
        version="0.1",
        registered_at=at(1),
        last_seq=1,
    )
    assert (a.row.type, a.row.node_id, a.row.job_id) == ("node.registered", "n1", None)

    a = f.apply(rec(2, subjects.node("n1", "lost"), NodeLost(ts=at(2), reason="no heartbeat", last_seen=at(1))))
    assert a.node is not None
    assert (a.node.status, a.node.lost_at, a.node.last_seq, a.node.tools) == ("lost", at(2), 2, ["bash"])
    assert a.node.last_seen == at(1)  # the last heartbeat known outlives the heartbeat (review: "never")
    assert a.row.type == "node.lost"

    back = NodeRegistered(ts=at(3), tools=["bash", "git"], max_jobs=1)
    a = f.apply(rec(3, subjects.node("n1", "registered"), back))
    assert a.node is not None
    assert (a.node.status, a.node.lost_at, a.node.tools, a.node.labels, a.node.registered_at) == (
        "online",
        None,
        ["bash", "git"],
        {},
        at(3),
    )


def test_a_node_lost_without_its_heartbeat_keeps_its_registration_as_the_last_sign() -> None:
    # Review: after an orchestrator restart a lost node read "Last heartbeat: never".
    f = Fold()
    f.apply(rec(1, subjects.node("n1", "registered"), NodeRegistered(ts=at(1), tools=["bash"])))
    a = f.apply(rec(2, subjects.node("n1", "lost"), NodeLost(ts=at(2), reason="no heartbeat")))
    assert a.node is not None and a.node.last_seen == at(1)


def test_node_lost_for_an_unseen_node_creates_a_lost_view() -> None:
    a = Fold().apply(rec(4, subjects.node("n7", "lost"), NodeLost(ts=at(4), reason="gone")))
    assert a.node == NodeView(node_id="n7", status="lost", lost_at=at(4), last_seq=4)


def test_node_events_do_not_touch_jobs() -> None:
    f = started()
    jobs_before = dict(f.jobs)
    f.apply(rec(6, subjects.node("n1", "lost"), NodeLost(ts=at(6), reason="gone")))
    assert f.jobs == jobs_before


# ---------------------------------------------------------------- determinism


def mixed_history() -> list[Record]:
    recs = lifecycle("j1", "n1")
    recs.insert(0, rec(0, subjects.node("n1", "registered"), NodeRegistered(ts=at(0), tools=["bash"])))
    extra = [
        (subjects.job("j2", "requested"), JobRequested(command="false")),
        (subjects.job("j2", "queued"), JobQueued(reason="full")),
        (subjects.job("j2", "requested"), JobRequested(command="dup")),
        (subjects.job("j3", "exited"), JobExited(node="n1", attempt=1)),
        (subjects.node("n1", "lost"), NodeLost(reason="gone")),
        (subjects.job("j2", "cancel_requested"), JobCancelRequested()),
        (subjects.job("j2", "cancelled"), JobCancelled()),
    ]
    recs += [rec(seq, s, ev) for seq, (s, ev) in enumerate(extra, start=8)]
    recs.append(Record(seq=15, subject=subjects.job("j4", "requested"), stream_ts=T0, raw=b"?", error="bad"))
    return recs


def test_folding_the_same_records_twice_gives_equal_views_and_rows() -> None:
    first = Fold().all(mixed_history())
    second = Fold().all(mixed_history())
    assert first.jobs == second.jobs
    assert first.nodes == second.nodes
    assert first.rows == second.rows
    assert msgspec.json.encode(list(first.jobs.values())) == msgspec.json.encode(list(second.jobs.values()))
    # msgspec structs compare by value: the check above would catch a real difference.
    changed = msgspec.structs.replace(second.jobs["j1"], exit_code=1)
    assert changed != first.jobs["j1"]


def test_fold_is_independent_of_decode_path() -> None:
    # Records built from raw bytes (as the bus does) fold like records built from events.
    direct = Fold().all(lifecycle())
    via_bytes = Fold().all(
        Record(seq=r.seq, subject=r.subject, stream_ts=r.stream_ts, raw=r.raw, event=codec.decode(r.subject, r.raw))
        for r in lifecycle()
    )
    assert direct.jobs == via_bytes.jobs
    assert direct.rows == via_bytes.rows


# ---------------------------------------------------------------- golden history


def load_golden(name: str) -> list[Record]:
    records = []
    for line in (GOLDEN / f"{name}.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        payload = item["payload"]
        raw = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        ts = datetime.fromisoformat(item["stream_ts"])
        try:
            event = codec.decode(item["subject"], raw)
        except DecodeError as exc:
            records.append(Record(seq=item["seq"], subject=item["subject"], stream_ts=ts, raw=raw, error=exc.reason))
        else:
            records.append(Record(seq=item["seq"], subject=item["subject"], stream_ts=ts, raw=raw, event=event))
    return records


def snapshot(name: str) -> dict[str, Any]:
    f = Fold().all(load_golden(name))
    return {
        "jobs": {k: msgspec.to_builtins(v) for k, v in sorted(f.jobs.items())},
        "nodes": {k: msgspec.to_builtins(v) for k, v in sorted(f.nodes.items())},
        "events": [msgspec.to_builtins(r) for r in f.rows],
    }


def test_golden_lifecycle_history() -> None:
    expected = json.loads((GOLDEN / "lifecycle.expected.json").read_text())
    actual = json.loads(json.dumps(snapshot("lifecycle")))
    assert actual["nodes"] == expected["nodes"]
    for job_id in expected["jobs"].keys() | actual["jobs"].keys():
        assert actual["jobs"].get(job_id) == expected["jobs"].get(job_id), job_id
    assert actual["events"] == expected["events"]
    assert actual == expected


if __name__ == "__main__":
    print(json.dumps(snapshot("lifecycle"), indent=2, sort_keys=True))


@pytest.mark.parametrize(
    "subject",
    [
        "nexus.evt.job.j1.exited",  # a kind we know, a payload that does not decode
        "nexus.evt.job.j1.frobnicated",  # a kind we do not know
        "nexus.evt.job.j1.dispatch.n9",
        "nexus.evt.job.j1.BAD.kind",  # not even a valid subject, but inside the job's filter
    ],
)
def test_any_record_on_a_jobs_subjects_moves_its_last_seq(subject: str) -> None:
    # Issue 9: the server counts it in the job's last sequence; a view that did not
    # follow had every later decision refused as stale, and the job wedged for good.
    fold = Fold().all(lifecycle()[:2])
    garbage = Record(seq=3, subject=subject, stream_ts=stream_ts(3), raw=b'{"truncated": ', error="does not decode")
    applied = fold.apply(garbage)
    assert applied.row.error is not None
    assert applied.job is not None and applied.job.last_seq == 3
    assert applied.job.status == "assigned"  # nothing else changed


def test_garbage_on_a_nodes_subjects_moves_its_last_seq() -> None:
    fold = Fold()
    fold.nodes["n1"] = NodeView(node_id="n1", last_seq=1)
    applied = fold.apply(Record(seq=5, subject="nexus.evt.node.n1.registered", stream_ts=stream_ts(5), raw=b"\xff", error="bad"))
    assert applied.node is not None and applied.node.last_seq == 5


@pytest.mark.parametrize("copied", [1, 2, 3])  # assigned, dispatch, and a `validated` of another time
def test_an_older_decision_published_again_cannot_take_a_running_job_back(copied: int) -> None:
    # A copy of the orchestrator's own signed decision (same bytes, a new msg id) after the job
    # moved on: refused with the reason, and the agent's exit still counts (attack review).
    fold = started()
    older = [
        rec(10, subjects.job("j1", "validated"), JobValidated(ts=at(1))),
        *(rec(10, r.subject, r.event) for r in lifecycle()[1:3] if r.event is not None),
    ]
    copy = older[copied % 3]
    applied = fold.apply(copy)
    assert applied.row.error is not None and "cannot follow status running: refused" in applied.row.error
    assert fold.jobs["j1"].status == "running"
    fold.apply(lifecycle()[5])  # exited
    assert fold.jobs["j1"].status == "exited"


def test_a_dispatch_sent_again_before_acceptance_still_counts() -> None:
    # The orchestrator re-sends a dispatch whose publish it never saw acknowledged (decide._on_node).
    fold = Fold().all(lifecycle()[:3])
    again = fold.apply(rec(4, lifecycle()[2].subject, lifecycle()[2].event))  # type: ignore[arg-type]
    assert again.row.error is None and fold.jobs["j1"].status == "dispatched"
