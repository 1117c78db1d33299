"""The orchestrator's own signed decisions, copied and published again while the job runs.

A signature covers the subject and the payload, not the message id, so anyone allowed to publish
on a job's decision subjects can store a byte-exact copy of an older `assigned` or `dispatch`
under a new id. The copy carries a genuine orchestrator signature; what makes it no decision is
where it stands: after the job moved on to its node. It is refused (kept with the reason), the
job is not taken back a step, and the agent's exit still counts (attack review).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from orchestrator.client import new_job_id
from schemas import subjects
from tests.conftest import wait_for
from tests.integration.test_bus_auth import Up, _issue, _row, connect, up  # noqa: F401  (`up`: the stack fixture)

pytestmark = pytest.mark.timeout(180)


async def _status(up: Up, job_id: str) -> str | None:  # noqa: F811
    code, out = await up.nexus("sql", f"SELECT status FROM jobs WHERE job_id = '{job_id}'", "--json")
    assert code == 0, out
    rows = json.loads(out)
    return str(rows[0]["status"]) if rows else None


async def test_an_older_decision_published_again_is_refused_and_the_job_ends(up: Up, tmp_path: Path) -> None:  # noqa: F811
    go = tmp_path / "go"
    job_id = new_job_id()
    code, out = await up.nexus("submit", "--id", job_id, "--node", up.node, "--", f"while [ ! -e {go} ]; do sleep 0.1; done")
    assert code == 0, out
    await wait_for(lambda: _running(up, job_id), 60, what="the job running")

    nc = await connect(up, up.creds / "admin.creds")
    try:
        js = nc.jetstream()
        for subject in (subjects.job(job_id, "assigned"), subjects.dispatch(job_id, up.node)):
            older = await js.get_last_msg(subjects.EVENTS_STREAM, subject, direct=True)
            # Its signature headers as they are; the server's own (msg id, expected sequence) new.
            signed = {k: v for k, v in (older.headers or {}).items() if k.startswith("Nexus-")}
            headers = {**signed, "Nats-Msg-Id": f"copy-{uuid.uuid4().hex}"}
            ack = await js.publish(subject, older.data or b"", headers=headers)
            assert not ack.duplicate  # stored: the server has no reason to refuse it
    finally:
        await nc.close()

    for kind in ("job.assigned", "job.dispatch"):
        (error,) = await _row(up, f"SELECT error FROM events WHERE job_id = '{job_id}' AND type = '{kind}' AND error IS NOT NULL")
        assert "cannot follow status running: refused" in str(error), error
    assert await _status(up, job_id) == "running"
    go.touch()
    await wait_for(lambda: _ended(up, job_id), 60, what="the job to end")
    assert await _status(up, job_id) == "succeeded"
    assert await up.stored(subjects.dispatch(job_id, up.node)) == 2  # the copy is kept, with its reason


async def _running(up: Up, job_id: str) -> bool:  # noqa: F811
    return await _status(up, job_id) == "running"


async def _ended(up: Up, job_id: str) -> bool:  # noqa: F811
    return await _status(up, job_id) in ("succeeded", "failed", "lost")


async def test_a_copy_of_another_users_test_request_is_refused(up: Up, tmp_path: Path) -> None:  # noqa: F811
    # A submitter re-publishes alice's signed `test_requested` (same bytes, new msg id): it must
    # not run her tests' commands again in her name.
    alice, mallory = await _issue(up, "submitter", "alice-t"), await _issue(up, "submitter", "mallory-t")
    ran = tmp_path / "ran"
    job_id = new_job_id()
    code, out = await up.nexus("run", "--id", job_id, "--node", up.node, "--", "true", creds=alice)
    assert code == 0, out
    tests = tmp_path / "tests.yaml"
    tests.write_text(f"- type: command\n  command: echo x >> {ran}\n")
    code, out = await up.nexus("test", job_id, "-f", str(tests), creds=alice)
    assert code == 0, out
    assert ran.read_text() == "x\n"

    nc = await connect(up, mallory)
    try:
        js = nc.jetstream()
        older = await js.get_last_msg(subjects.EVENTS_STREAM, subjects.job(job_id, "test_requested"), direct=True)
        signed = {k: v for k, v in (older.headers or {}).items() if k.startswith("Nexus-")}
        await js.publish(older.subject or "", older.data or b"", headers={**signed, "Nats-Msg-Id": f"copy-{uuid.uuid4().hex}"})
    finally:
        await nc.close()
    (error,) = await _row(up, f"SELECT error FROM events WHERE job_id = '{job_id}' AND type = 'job.test_requested' AND error IS NOT NULL")
    assert error == "a copy of a test request already taken: refused"
    code, out = await up.nexus("sql", f"SELECT count(*) AS n FROM events WHERE job_id = '{job_id}' AND type = 'job.tested'", "--json")
    assert code == 0 and json.loads(out)[0]["n"] == 1, out
    assert ran.read_text() == "x\n"  # the command ran once
