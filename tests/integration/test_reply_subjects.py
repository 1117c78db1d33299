"""Attack: a reader picks the reply subject of a query, and the orchestrator's signed answer
lands where it says (review of 2026-12-06).

A viewer (read only) sent `nexus.rpc.query` with `reply="nexus.evt.job.<held job>.validated"`:
the orchestrator answered there, signed, the stream stored the answer as its own
`job.validated` (no approval needed), and the held critical job ran unapproved. An answer
to `$KV.nexus-keys.orchestrator` overwrote the sealing key. Answers now go to inboxes only.
"""

from __future__ import annotations

import json
from pathlib import Path

import nats
import pytest

from orchestrator.client import new_job_id
from schemas import subjects
from tests.conftest import wait_for
from tests.integration.test_bus_auth import Up, _issue, _row, up  # noqa: F401 (the `nexus up` fixture)

pytestmark = pytest.mark.timeout(180)

FORGED_REPLIES = [
    "nexus.evt.job.{job}.validated",
    "nexus.evt.job.{job}.cancelled",
    "$KV.nexus-keys.orchestrator",
    "nexus.out.{job}.1",
]


async def test_a_query_answered_to_a_reply_subject_outside_the_inboxes_is_not_sent(up: Up) -> None:  # noqa: F811
    job_id = new_job_id()
    code, out = await up.nexus("submit", "--id", job_id, "--", "$NEXUS_UNSET_PROGRAM")  # critical, held, harmless
    assert code == 0, out
    await _row(up, f"SELECT status FROM jobs WHERE job_id = '{job_id}' AND status = 'approval_required'")
    before = await up.stored(f"nexus.evt.job.{job_id}.>")
    keys = await up.admin.js.key_value("nexus-keys")
    key_before = (await keys.get("orchestrator")).value

    viewer = await _issue(up, "viewer", "mallory")
    nc = await nats.connect(up.url, user_credentials=str(viewer))
    try:
        query = json.dumps({"sql": "SELECT 1"}).encode()
        for reply in FORGED_REPLIES:
            await nc.publish(subjects.RPC_QUERY, query, reply=reply.format(job=job_id))
        # A real question after them, on an inbox: answered (the orchestrator took all of them).
        answer = await nc.request(subjects.RPC_QUERY, query, timeout=30)
        assert json.loads(answer.data)["rows"] == [[1]]
    finally:
        await nc.close()
    # The CLI's own query starts a process after that: time enough for a stray answer to be stored.
    row = await _row(up, f"SELECT status, approved_by FROM jobs WHERE job_id = '{job_id}'")
    assert row == ["approval_required", None], row
    assert await up.stored(f"nexus.evt.job.{job_id}.>") == before
    output = await up.admin.js.stream_info(subjects.OUTPUT_STREAM, subjects_filter=f"nexus.out.{job_id}.>")
    assert not output.state.subjects, output.state.subjects
    assert (await keys.get("orchestrator")).value == key_before
    # The sealing key still works: a secret goes sealed, not refused as "would be published in clear".
    code, out = await up.nexus("run", "-q", "--secret", "MY_TOKEN", "--", "true", env={"MY_TOKEN": "abcdefgh"})
    assert code == 0, out


async def test_a_readers_push_consumer_delivering_into_the_log_leaves_no_gap_in_the_record(up: Up, tmp_path: Path) -> None:  # noqa: F811
    # A viewer may read the log: it makes a push consumer on NEXUS_OUTPUT whose deliver subject
    # is an event subject it listens on. The server delivers, NEXUS_EVENTS captures the delivery,
    # and stores it under the output chunk's own subject (outside `nexus.evt.>`).
    code, out = await up.nexus("run", "-q", "--id", "chunked", "--", "echo", "some output")
    assert (code, out) == (0, "some output\n")
    viewer = await _issue(up, "viewer", "bob")
    nc = await nats.connect(up.url, user_credentials=str(viewer))
    try:
        last = (await up.admin.js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
        sink = await nc.subscribe("nexus.evt.job.bobgap.x")
        config = {
            "filter_subject": "nexus.out.chunked.>",
            "deliver_subject": "nexus.evt.job.bobgap.x",
            "deliver_policy": "last",
            "ack_policy": "none",
        }
        made = await nc.request(
            "$JS.API.CONSUMER.CREATE.NEXUS_OUTPUT", json.dumps({"stream_name": "NEXUS_OUTPUT", "config": config}).encode(), timeout=10
        )
        assert "error" not in json.loads(made.data), made.data
        await sink.next_msg(timeout=10)

        async def stored() -> int | None:
            now = (await up.admin.js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
            return now if now > last else None

        injected = await wait_for(stored, 30, what="the delivery stored in NEXUS_EVENTS")
    finally:
        await nc.close()
    # The orchestrator records it (rejected, with its reason): no gap at that sequence.
    row = await _row(up, f"SELECT seq, subject, error FROM events WHERE seq = {injected}")
    assert row[0] == injected and str(row[1]).startswith("nexus.out.chunked.") and row[2], row
    code, report = await _audit(up)
    assert code == 0 and report["ok"], report["problems"]
    assert injected in [r["seq"] for r in report["rejected"]]
    # And a reader that waits for the last sequence (here: a replay) gets there, also while that
    # delivery is the newest message of the log.
    code, out = await up.nexus("replay", "--db", str(tmp_path / "replay.duckdb"))
    assert code == 0, out
    code, report = await _audit(up, "--db", str(tmp_path / "replay.duckdb"))
    assert code == 0 and report["ok"], report["problems"]


async def _audit(up: Up, *args: str) -> tuple[int, dict[str, object]]:  # noqa: F811
    code, out = await up.nexus("audit", "verify", "--json", *args)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, out
    return code, json.loads(lines[-1])
