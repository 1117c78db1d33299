"""Bad input from a foreign publisher, against a real stack (DESIGN §8: a clear error, nothing lost):
requests no process can take and dependency cycles are rejected with the reason and never reach
an agent; control characters in what was published never reach the operator's terminal raw."""

from __future__ import annotations

import json

from orchestrator.client import new_job_id
from schemas import subjects
from schemas.events import JobDispatch
from tests.conftest import Stack


async def _publish(stack: Stack, job_id: str, payload: dict[str, object]) -> None:
    """As any NATS client would: a plain core-NATS publish of the JSON."""
    await stack.client.bus.nc.publish(subjects.job(job_id, "requested"), json.dumps(payload).encode())  # type: ignore[attr-defined]


async def _rejected(stack: Stack, job_id: str) -> tuple[str, str]:
    """The job's rejection (code, reason), once it has ended rejected, having never been dispatched."""
    row = await stack.wait_job(job_id)
    assert row["status"] == "rejected", row
    assert not any(isinstance(r.event, JobDispatch) for r in await stack.client.history(job_id))
    [(code, reason)] = (
        await stack.client.query(
            "SELECT payload->>'code', payload->>'reason' FROM events WHERE job_id = ? AND type = 'job.rejected'", [job_id]
        )
    ).rows
    return code, reason


async def test_requests_no_process_can_take_are_rejected_with_the_reason(stack: Stack) -> None:
    cases = {
        "echo \x00 nul": ({}, "the command holds a NUL byte"),
        "true": ({"env": {"A=B": "1", "": "2"}}, "env name 'A=B' holds '='"),
        "   ": ({}, "the command is empty"),
        "": ({}, "the command is empty"),
    }
    ids = {}
    for command, (extra, _said) in cases.items():
        ids[command] = new_job_id()
        await _publish(stack, ids[command], {"command": command, **extra})
    for command, (_extra, said) in cases.items():
        code, reason = await _rejected(stack, ids[command])
        assert code == "invalid_request" and reason.startswith(said), (command, reason)
    [(total, failed)] = (await stack.client.query("SELECT total_validations, validation_failures FROM metrics_analysis")).rows
    assert (total, failed) == (len(cases), len(cases))  # verdicts of the analysis phase, each a failure
    status, out, err = await stack.nexus("validate", "--", "")
    assert status == 1 and b"the command is empty" in out + err


async def test_jobs_waiting_for_themselves_or_each_other_are_rejected_not_left_waiting(stack: Stack) -> None:
    await _publish(stack, "cyc-self", {"command": "echo self", "after": ["cyc-self"]})
    assert (await _rejected(stack, "cyc-self"))[0] == "invalid_request"

    await _publish(stack, "cyc-a", {"command": "echo a", "after": ["cyc-b"]})
    await _publish(stack, "cyc-b", {"command": "echo b", "after": ["cyc-a"]})
    for job_id, other in (("cyc-a", "cyc-b"), ("cyc-b", "cyc-a")):
        code, reason = await _rejected(stack, job_id)
        assert (code, reason.split(";")[0]) == ("dependency_cycle", f"dependency cycle: {job_id} -> {other} -> {job_id}")


async def test_escape_sequences_in_published_text_reach_no_terminal_raw(stack: Stack) -> None:
    job_id = new_job_id()
    await _publish(stack, job_id, {"command": "echo \x1b[2J\x1b]0;PWNED\x07 hidden #\r\x1b[2Kcommand  echo [bold]x[/bold]"})
    await stack.wait_job(job_id)  # it ran (`;` in the OSC ends the echo: PWNED is no command)
    for verb in (["jobs"], ["show", job_id], ["history", job_id], ["sql", f"SELECT command FROM jobs WHERE job_id = '{job_id}'"]):
        code, out, err = await stack.nexus(*verb)
        assert code == 0, (verb, err)
        assert b"\x1b" not in out + err and b"\x07" not in out + err and b"\r" not in out + err, (verb, out)
        assert b"echo \\x1b[2J\\x1b]0;PWNED\\x07 hidden" in out, (verb, out)
        assert b"[bold]x[/bold]" in out, (verb, out)  # shown as written, not taken for markup
    code, out, _err = await stack.nexus("show", job_id, "--json")
    assert code == 0 and json.loads(out)["command"].startswith("echo \x1b[2J")  # --json gives the data as it is
