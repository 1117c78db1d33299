"""A sealed secret copied out of the log, attacked the way a submitter with network access would.

Every submitter may read job requests, so it can copy another user's sealed env value into a
request of its own, and have the orchestrator open it and give it to a command it chose (`echo
$DB_PASSWORD | base64` beats the output mask). A value is sealed for its requester
(`sealed:v2:`), and the orchestrator opens it for no one else: the copy is rejected, unsigned
or signed, through nats-py or `nexus submit`, and the value reaches no node.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from orchestrator.client import new_job_id
from schemas import subjects
from tests.integration.test_bus_auth import Up, _issue, _row, connect, up  # noqa: F401  (`up`: the stack fixture)

pytestmark = pytest.mark.timeout(180)

SECRET = "hunter2-do-not-leak"


async def _request_env(stack: Up, creds: Path, job_id: str) -> dict[str, str]:
    """The env of job `job_id`'s request, read from the log as a submitter may."""
    nc = await connect(stack, creds)
    try:
        msg = await nc.jetstream().get_last_msg(subjects.EVENTS_STREAM, subjects.job(job_id, "requested"), direct=True)
        return dict(json.loads(msg.data)["env"])
    finally:
        await nc.close()


async def test_a_sealed_secret_copied_into_another_users_request_is_refused(up: Up) -> None:  # noqa: F811
    alice, mallory = await _issue(up, "submitter", "alice"), await _issue(up, "submitter", "mallory")
    mine = new_job_id()
    check = f'test "$DB_PASSWORD" = {SECRET}'
    code, out = await up.nexus("run", "--id", mine, "--env", f"DB_PASSWORD={SECRET}", "--", check, creds=alice)
    assert code == 0, out  # opened for her, on her job
    sealed = (await _request_env(up, mallory, mine))["DB_PASSWORD"]
    assert sealed.startswith("sealed:v2:") and SECRET not in sealed

    # Unsigned, straight on NATS; and signed, through the CLI (a sealed value is passed as it is).
    unsigned, signed = new_job_id(), new_job_id()
    nc = await connect(up, mallory)
    try:
        payload = {"command": "echo $DB_PASSWORD | base64", "node": up.node, "env": {"DB_PASSWORD": sealed}}
        await nc.jetstream().publish(subjects.job(unsigned, "requested"), json.dumps(payload).encode())
    finally:
        await nc.close()
    argv = ["submit", "--id", signed, "--env", f"DB_PASSWORD={sealed}", "--", "echo $DB_PASSWORD | base64"]
    code, out = await up.nexus(*argv, creds=mallory)
    assert await up.stored(subjects.job(signed, "requested")) == 1, out  # published (its verdict comes later)
    for job_id, who in ((unsigned, "no one (an unsigned request)"), (signed, "'mallory'")):
        status, rcode, reason = await _row(up, f"SELECT status, payload->>'code', payload->>'reason' FROM jobs JOIN events USING (job_id) "
                                               f"WHERE job_id = '{job_id}' AND type = 'job.rejected'")  # fmt: skip
        assert (status, rcode) == ("rejected", "secret_unreadable"), reason
        assert "sealed for 'alice'" in str(reason) and who in str(reason), reason
        assert await up.stored(subjects.job(job_id, "dispatch") + ".>") == 0  # it never reached a node
    leaked = base64.b64encode(SECRET.encode()).decode()
    code, out = await up.nexus("sql", "SELECT count(*) AS n FROM events WHERE type = 'job.exited'", "--json")
    assert code == 0 and json.loads(out)[0]["n"] == 1, out  # only alice's job ran
    assert SECRET not in out and leaked not in out
