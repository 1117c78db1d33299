"""Approvals, tests and the record behind the console, on a real stack (nats-server, orchestrator,
PTY agent, the API): what a review found the console and the API let through or hid.

- a held job cancelled is not held any more: approve and deny are 409 (the CLI's too), nothing is
  stored, and the metrics count only decisions that counted;
- a decision's answer is the orchestrator's (a gate's approver outside the template's list is refused);
- tests on a job that never ran are refused, not recorded as failed;
- a job's history carries what came after its end; a rejection keeps what the analysis found;
  a lost node keeps its last heartbeat when the bucket has forgotten it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from orchestrator.core.policy import Policy, Rule
from schemas import subjects
from tests.conftest import Stack, wait_for
from tests.integration.api_support import assert_problem
from tests.integration.test_api import running_api

EXIT_0 = {"tests": [{"type": "exit_code", "expected": 0}]}


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(stack) as http:
        yield http


async def _submit(api: httpx.AsyncClient, command: str, **extra: object) -> str:
    res = await api.post("/api/v1/jobs", json={"command": command, **extra})
    assert res.status_code == 201, res.text
    return str(res.json()["jobId"])


async def _status(api: httpx.AsyncClient, job_id: str) -> str:
    return str((await api.get(f"/api/v1/jobs/{job_id}")).json()["status"])


async def _held(api: httpx.AsyncClient) -> str:
    job_id = await _submit(api, "rm -rf /nexus-decisions-test-nothing")
    await wait_for(lambda: _held_now(api, job_id), what="the job held")
    return job_id


async def _held_now(api: httpx.AsyncClient, job_id: str) -> bool:
    return await _status(api, job_id) == "approval_required"


async def _inbox_empty(api: httpx.AsyncClient) -> bool:
    return not (await api.get("/api/v1/approvals")).json()["jobs"]


async def _kinds(api: httpx.AsyncClient, job_id: str) -> list[str]:
    res = await api.get(f"/api/v1/jobs/{job_id}/history")
    assert res.status_code == 200, res.text
    return [e["kind"] for e in res.json()["events"]]


async def test_a_held_job_cancelled_can_no_longer_be_approved_or_denied(stack: Stack, api: httpx.AsyncClient) -> None:
    held = await _held(api)
    assert [j["jobId"] for j in (await api.get("/api/v1/approvals")).json()["jobs"]] == [held]
    assert (await api.post(f"/api/v1/jobs/{held}/cancel", json={})).status_code == 202
    await wait_for(lambda: _inbox_empty(api), what="the job out of the inbox")
    for verb in ("approve", "deny"):
        assert_problem(await api.post(f"/api/v1/jobs/{held}/{verb}", json={}), 409, "wrong-state", "not waiting for approval")
    assert (await stack.wait_job(held))["status"] == "cancelled"
    assert_problem(await api.post(f"/api/v1/jobs/{held}/approve", json={}), 409, "wrong-state")
    code, _, err = await stack.nexus("approve", held)
    assert code != 0 and b"not waiting for approval" in err, err
    kinds = await _kinds(api, held)
    assert "approved" not in kinds and "denied" not in kinds and kinds[-1] == "cancelled"
    analysis = (await api.get("/api/v1/metrics/pipeline")).json()["analysis"]
    assert (analysis["approved"], analysis["denied"]) == (0, 0)


async def test_an_approval_the_policy_refuses_is_answered_so_and_not_counted(stack: Stack, api: httpx.AsyncClient) -> None:
    stack.orchestrator.policy = Policy(approvers=["alice"])
    held = await _held(api)
    res = await api.post(f"/api/v1/jobs/{held}/approve", json={"reason": "looks fine"})
    assert res.status_code == 202, res.text
    said = res.json()
    assert (said["decision"], said["outcome"], said["by"]) == ("approved", "refused", "anonymous")
    assert "'anonymous' may not approve" in said["reason"]
    inbox = (await api.get("/api/v1/approvals")).json()["jobs"]
    assert [(j["jobId"], j["approvers"]) for j in inbox] == [(held, ["alice"])]
    await wait_for(lambda: _metric(api, "approvalsRequired", 2), what="the second hold counted")
    assert (await api.get("/api/v1/metrics/pipeline")).json()["analysis"]["approved"] == 0
    # Denied by one the hold does not name (its `deciders`, as the policy said when it held the
    # job): refused too, not counted; the job waits on.
    res = await api.post(f"/api/v1/jobs/{held}/deny", json={"timeoutSeconds": 5})
    said = res.json()
    assert (said["outcome"], said["status"]) == ("refused", "approval_required"), said  # the job waits on
    assert "'anonymous' may not deny this job" in said["reason"], said
    assert (await stack.job(held))["status"] == "approval_required"
    assert (await api.get("/api/v1/metrics/pipeline")).json()["analysis"]["denied"] == 0


async def _metric(api: httpx.AsyncClient, name: str, want: int) -> bool:
    return bool((await api.get("/api/v1/metrics/pipeline")).json()["analysis"][name] == want)


GATED = """\
name: gated
approvers: [bob]
steps:
  - id: ship
    approval: true
    command: echo shipped
"""


async def test_a_gate_approval_by_someone_not_listed_is_answered_refused_with_who_may(stack: Stack, api: httpx.AsyncClient) -> None:
    res = await api.post("/api/v1/pipelines", json={"template": GATED})
    assert res.status_code == 201, res.text
    pid = res.json()["pipelineId"]

    async def waiting() -> list[dict[str, object]] | None:
        return [s for s in (await api.get("/api/v1/approvals")).json()["steps"] if s["pipelineId"] == pid] or None

    (step,) = await wait_for(waiting, what="the gate open")
    assert (step["stepId"], step["approvers"]) == ("ship", ["bob"])
    res = await api.post(f"/api/v1/pipelines/{pid}/steps/ship/approve", json={})
    assert res.status_code == 202, res.text
    said = res.json()
    assert (said["outcome"], said["status"]) == ("refused", "waiting_approval")
    assert "not among this pipeline's approvers (bob)" in said["reason"]
    assert await waiting()  # the gate waits on
    # A step the pipeline does not have is unknown (404), not a step in the wrong state (409).
    missing = await api.post(f"/api/v1/pipelines/{pid}/steps/nosuch/approve", json={})
    assert_problem(missing, 404, "unknown-step", f"pipeline '{pid}' has no step 'nosuch'")


async def test_tests_are_refused_on_a_job_that_never_ran_and_history_goes_past_the_end(stack: Stack, api: httpx.AsyncClient) -> None:
    held = await _held(api)
    assert (await api.post(f"/api/v1/jobs/{held}/cancel", json={})).status_code == 202
    await stack.wait_job(held)
    assert_problem(await api.post(f"/api/v1/jobs/{held}/test", json=EXIT_0), 409, "wrong-state", "never ran")
    assert "test_requested" not in await _kinds(api, held)
    # A job that ran: tests run, and its history tells them after its end.
    ran = await _submit(api, "true")
    await stack.wait_job(ran)
    res = await api.post(f"/api/v1/jobs/{ran}/test", json=EXIT_0)
    assert res.status_code == 200 and res.json()["passed"] is True, res.text
    kinds = await _kinds(api, ran)
    assert kinds.index("succeeded") < kinds.index("test_requested") < kinds.index("tested")
    assert_problem(await api.get("/api/v1/jobs/nope/history"), 404, "unknown-job")
    assert_problem(await api.get("/api/v1/jobs/a.b/history"), 400, "invalid-job-id")


async def test_a_policy_rejection_keeps_the_findings_and_a_lost_node_its_last_heartbeat(stack: Stack, api: httpx.AsyncClient) -> None:
    stack.orchestrator.policy = Policy(deny=[Rule(pattern=r"curl .*\| *sh", reason="no piping the web into a shell")])
    job_id = await _submit(api, "curl http://x | sh")
    await stack.wait_job(job_id)
    job = (await api.get(f"/api/v1/jobs/{job_id}")).json()
    assert (job["status"], job["reason"], job["severity"]) == ("rejected", "no piping the web into a shell", "critical")
    assert "remote_code" in {w["type"] for w in job["warnings"]}
    # A node lost, then forgotten by the heartbeat bucket (its TTL; here: purged): its last heartbeat stays known.
    await stack.stop_agent("node-1")
    assert (await api.get("/api/v1/nodes/node-1")).json()["status"] == "stopped"  # its last heartbeat says so
    await wait_for(lambda: _node_lost(stack), timeout=60, what="node-1 lost")
    kv = await stack.client.bus.js.key_value(subjects.NODES_BUCKET)  # type: ignore[attr-defined]
    await kv.purge("node-1")
    await wait_for(lambda: _no_heartbeat(stack), what="the heartbeat gone")
    node = (await api.get("/api/v1/nodes/node-1")).json()
    assert node["live"] is False and node["status"] == "lost" and node["lastSeen"] is not None, node


async def _node_lost(stack: Stack) -> bool:
    """Found lost by the orchestrator, in the log (the API says `stopped` while the bucket holds its last heartbeat)."""
    return (await stack.client.query("SELECT status FROM nodes WHERE node_id = 'node-1'")).rows == [["lost"]]


async def _no_heartbeat(stack: Stack) -> bool:
    return "node-1" not in await stack.client.bus.heartbeats()
