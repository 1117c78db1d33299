"""Bad input from a foreign publisher, against a real stack (DESIGN §8: a clear error, nothing lost):
requests no process can take, dependencies on jobs that are not there (or a cycle) are rejected with the reason and never reach
an agent; control characters in what was published never reach the operator's terminal raw."""

from __future__ import annotations

import json

from orchestrator.client import new_job_id
from schemas import subjects
from schemas.events import JobDispatch
from tests.conftest import Stack
from tests.integration.api_support import assert_problem, serve_api


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


async def test_the_api_refuses_at_submit_what_the_analysis_would_reject(stack: Stack) -> None:
    """400 `invalid-body` with the analysis' own reason for jobs (422 `invalid-template` with the
    line for pipeline steps), and nothing stored (they were answered 201 and rejected later);
    validate says invalid with that reason."""
    bodies = [
        ({"command": "  \t"}, "the command is empty"),
        ({"command": "echo \x00 nul"}, "the command holds a NUL byte"),
        ({"command": "true", "workingDir": "/tmp/\x00"}, "the working directory holds a NUL byte"),
        ({"command": "true", "env": {"A=B": "1"}}, "env name 'A=B' holds '='"),
        ({"command": "true", "env": {"": "1"}}, "an env entry has an empty name"),
        ({"command": "true", "secretEnv": {"TOKEN": "x\x00y"}}, "the value of env 'TOKEN' holds a NUL byte"),
        ({"command": "true", "tests": [{"type": "command", "command": "test \x00"}]}, "a test command holds a NUL byte"),
        ({"command": "true", "jobId": "self-wait", "after": ["self-wait"]}, "the job waits for itself"),
    ]
    async with serve_api(stack.client) as http:
        for body, said in bodies:
            resp = await http.post("/api/v1/jobs", json=body)
            assert_problem(resp, 400, "invalid-body", said)
            if "jobId" not in body and "secretEnv" not in body:  # fields a job has, not an analysis
                check = (await http.post("/api/v1/jobs/validate", json=body)).json()
                assert check["valid"] is False and check["invalid"].startswith(said), (body, check)
        step = {"id": "s", "command": "true"}
        steps = [({"working_dir": "/\x00"}, "step 's': the working directory holds"), ({"env": {"A=B": "1"}}, "step 's': env name 'A=B'")]
        steps.append(({"rollback": "undo \x00"}, "step 's': the rollback holds a NUL byte"))
        for change, said in steps:
            template = json.dumps({"name": "bad", "steps": [step | change]})
            resp = await http.post("/api/v1/pipelines", json={"template": template, "pipelineId": "bad-pipeline"})
            assert_problem(resp, 422, "invalid-template", f"template:1: {said}")  # a template error: with its line
        assert (await http.post("/api/v1/jobs/validate", json={"command": "echo fine"})).json()["invalid"] is None
    assert await stack.client.bus.last_seq(subject="nexus.evt.job.>") == 0
    assert await stack.client.bus.last_seq(subject="nexus.evt.pipeline.>") == 0


async def test_validate_says_invalid_what_submit_refuses(stack: Stack) -> None:
    """A command too long to publish, or with a lone surrogate escape, is invalid with a reason
    that says so, at `nexus validate` as at submit (a review found `valid`, then a failed publish)."""
    status, out, err = await stack.nexus("validate", "--", "echo " + "x" * 70_000)
    assert status == 1 and b"a job's command may be at most 65,536" in out + err, out + err
    async with serve_api(stack.client) as http:
        for path in ("/api/v1/jobs/validate", "/api/v1/jobs"):
            resp = await http.post(path, content=b'{"command": "echo \\ud800"}', headers={"content-type": "application/json"})
            assert_problem(resp, 400, "invalid-body", "lone UTF-16 surrogate")
    assert await stack.client.bus.last_seq(subject="nexus.evt.job.>") == 0


async def test_the_api_refuses_a_chosen_job_id_shaped_like_a_pipeline_step_s(stack: Stack) -> None:
    """Stored first, such a job would count for the step when the orchestrator asks for it."""
    async with serve_api(stack.client) as http:
        for job_id in ("rel-s0-0", "rel-s2-hc-1-3", "rel-s2-rb-3"):
            resp = await http.post("/api/v1/jobs", json={"command": "echo squat", "jobId": job_id})
            assert_problem(resp, 400, "invalid-job-id", "pipeline step")
            assert await stack.client.bus.last_seq(subject=subjects.job_all(job_id)) == 0
        assert (await http.post("/api/v1/jobs", json={"command": "true", "jobId": "rel-s0"})).status_code == 201


async def test_jobs_waiting_for_themselves_each_other_or_nothing_are_rejected_not_left_waiting(stack: Stack) -> None:
    await _publish(stack, "cyc-self", {"command": "echo self", "after": ["cyc-self"]})
    assert (await _rejected(stack, "cyc-self"))[0] == "invalid_request"

    await _publish(stack, "dep-ghost", {"command": "echo ghost", "after": ["no-such-job"]})
    code, reason = await _rejected(stack, "dep-ghost")
    assert (code, reason.split(";")[0]) == ("dependency_unknown", "it waits for job(s) not requested before it: no-such-job")

    # A cycle: the first names one requested after it, so it can never wait for it; the second
    # then waits for one that ended without succeeding. Neither waits for ever, nor runs.
    await _publish(stack, "cyc-a", {"command": "echo a", "after": ["cyc-b"]})
    await _publish(stack, "cyc-b", {"command": "echo b", "after": ["cyc-a"]})
    code, reason = await _rejected(stack, "cyc-a")
    assert (code, reason.split(";")[0]) == ("dependency_unknown", "it waits for job(s) not requested before it: cyc-b")
    assert await _rejected(stack, "cyc-b") == ("dependency_failed", "job(s) it depends on did not succeed: cyc-a")
    # Requested late, the job it named does not count either, and runs on its own account only.
    await _publish(stack, "no-such-job", {"command": "true"})
    assert (await stack.wait_job("no-such-job"))["status"] == "succeeded"
    assert (await stack.wait_job("dep-ghost"))["status"] == "rejected"


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
