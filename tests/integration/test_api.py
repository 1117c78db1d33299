"""The HTTP API against a real stack: nats-server, orchestrator, PTY agent, and uvicorn on a free port.

Clients are httpx; the SSE reader below is a minimal EventSource (id + data lines).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import structlog.testing

from orchestrator.api.auth import Tokens
from orchestrator.api.errors import ApiError
from orchestrator.api.server import serve
from orchestrator.app.jobs import first_request
from orchestrator.client import new_job_id
from schemas.events import JobRequested
from tests.conftest import Stack, wait_for
from tests.integration.api_support import assert_problem, free_port, serve_api

DESIGN_PATHS = [
    ("post", "/api/v1/jobs/validate"),
    ("post", "/api/v1/jobs"),
    ("get", "/api/v1/jobs"),
    ("get", "/api/v1/jobs/{job_id}"),
    ("get", "/api/v1/jobs/{job_id}/stream"),
    ("post", "/api/v1/jobs/{job_id}/cancel"),
    ("post", "/api/v1/jobs/{job_id}/test"),
    ("get", "/api/v1/jobs/{job_id}/test-results"),
    ("post", "/api/v1/jobs/{job_id}/rollback"),
    ("get", "/api/v1/nodes"),
    ("get", "/api/v1/nodes/optimal"),
    ("post", "/api/v1/pipelines"),
    ("get", "/api/v1/pipelines/{pipeline_id}"),
    ("get", "/api/v1/metrics/pipeline"),
]

LINES_CMD = "for i in $(seq 1 50); do echo line-$i; sleep 0.02; done"
LINES_OUT = b"".join(f"line-{i}\n".encode() for i in range(1, 51))

TOKENS = {"viewer": "viewer-token-0123456789", "operator": "operator-token-0123456789", "admin": "admin-token-0123456789"}


def running_api(stack: Stack, auth_file: Path | None = None) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
    """The API over the stack's client (other test modules use this one)."""
    return serve_api(stack.client, auth_file)


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(stack) as http:
        yield http


# ---------------------------------------------------------------- SSE reading


@dataclass
class Sse:
    id: str | None
    data: dict[str, Any]


@dataclass
class SseSession:
    status: int
    events: list[Sse] = field(default_factory=list)

    @property
    def last_id(self) -> str | None:
        return next((e.id for e in reversed(self.events) if e.id), None)

    def output(self) -> bytes:
        return b"".join(base64.b64decode(e.data["dataB64"]) for e in self.events if e.data["type"] == "output_chunk")


async def read_sse(
    http: httpx.AsyncClient, path: str, *, last_event_id: str | None = None, stop_after: Any = None, timeout: float = 30.0
) -> SseSession:
    """Read the stream until the server ends it, or until `stop_after(events)` is true (then hang up)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    async with asyncio.timeout(timeout), http.stream("GET", path, headers=headers) as resp:
        session = SseSession(resp.status_code)
        if resp.status_code != 200:
            await resp.aread()
            return session
        assert resp.headers["content-type"].startswith("text/event-stream")
        event_id: str | None = None
        data: list[str] = []
        async for line in resp.aiter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "":
                if data:
                    session.events.append(Sse(event_id, json.loads("\n".join(data))))
                    if stop_after is not None and stop_after(session.events):
                        return session  # leaving the block closes the connection mid-stream
                event_id, data = None, []
        return session


def _positions(events: list[Sse]) -> list[tuple[int, int]]:
    out = []
    for e in events:
        assert e.id is not None
        a, b = e.id.split(":")[:2]
        out.append((int(a), int(b)))
    return out


async def _submit(http: httpx.AsyncClient, command: str, **extra: Any) -> str:
    resp = await http.post("/api/v1/jobs", json={"command": command, **extra})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["jobId"])


# ---------------------------------------------------------------- paths


async def test_openapi_document_lists_every_design_path(api: httpx.AsyncClient) -> None:
    resp = await api.get("/schema/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    for method, path in DESIGN_PATHS:
        assert method in doc["paths"].get(path, {}), (method, path)
    assert "CreateJobRequest" in doc["components"]["schemas"]


async def test_create_job_answers_once_requested_is_stored_not_when_the_command_ends(stack: Stack, api: httpx.AsyncClient) -> None:
    resp = await api.post("/api/v1/jobs", json={"command": "sleep 600", "metadata": {"pipeline": "x"}})
    assert resp.status_code == 201, resp.text  # and the job is seen running below: answered before it ended
    body = resp.json()
    job_id = body["jobId"]
    assert body["streamEndpoint"] == f"/api/v1/jobs/{job_id}/stream"
    assert resp.headers["location"] == f"/api/v1/jobs/{job_id}"
    history = await stack.client.history(job_id)
    assert history[0].seq == body["seq"] and isinstance(history[0].event, JobRequested)
    assert history[0].event.requested_by == "anonymous"

    async def running() -> bool:
        return (await api.get(f"/api/v1/jobs/{job_id}")).json()["status"] == "running"

    await wait_for(running, what="job running")
    resp = await api.post(f"/api/v1/jobs/{job_id}/cancel", json={"reason": "enough"})
    assert resp.status_code == 202 and resp.json() == {"jobId": job_id, "status": "cancel_requested"}
    assert (await stack.wait_job(job_id))["status"] == "cancelled"
    assert_problem(await api.post(f"/api/v1/jobs/{job_id}/cancel"), 409, "wrong-state", "cancelled")


async def test_rerun_requests_the_same_again_its_secrets_still_sealed(stack: Stack, api: httpx.AsyncClient) -> None:
    body = {
        "command": "echo again", "workingDir": "/tmp", "tty": False, "env": {"A": "1", "API_TOKEN": "t0ken-value"},
        "secretEnv": {"PLAIN": "p-value"}, "metadata": {"rollback": "echo undo"}, "priority": 2, "retries": 1,
        "idempotent": True, "prefer": {"zone": "a"}, "timeoutSeconds": 30, "tests": [{"type": "exit_code", "expected": 0}],
    }  # fmt: skip
    created = await api.post("/api/v1/jobs", json=body)
    assert created.status_code == 201, created.text
    first = created.json()["jobId"]
    resp = await api.post(f"/api/v1/jobs/{first}/rerun")
    assert resp.status_code == 201, resp.text
    again = resp.json()["jobId"]
    assert again != first and resp.headers["location"] == f"/api/v1/jobs/{again}"
    old, new = [request_of(await stack.client.history(j)) for j in (first, again)]
    assert msgspec.structs.replace(new, ts=old.ts) == old  # every field, env values sealed as stored
    assert all(new.env[n].startswith("sealed:v2:") for n in ("API_TOKEN", "PLAIN")) and new.secrets == ["PLAIN"]
    # A secret a foreign publisher sent in clear is sealed in the new request, never republished in clear.
    await stack.client.submit("foreign-clear", JobRequested(command="true", env={"API_TOKEN": "in-clear"}))
    resp = await api.post("/api/v1/jobs/foreign-clear/rerun")
    assert resp.status_code == 201, resp.text
    assert request_of(await stack.client.history(resp.json()["jobId"])).env["API_TOKEN"].startswith("sealed:v2:")
    assert_problem(await api.post("/api/v1/jobs/no-such-job/rerun"), 404, "unknown-job")
    # A secret near the env value bound outgrows it once sealed: 413 with the name, not a 503.
    big = await api.post("/api/v1/jobs", json={"command": "true", "secretEnv": {"BIG": "x" * 16_000}})
    assert_problem(big, 413, "too-large", "'BIG'", "once sealed")
    # One name in clear and as a secret, two values: which one ran was a silent choice.
    clash = await api.post("/api/v1/jobs", json={"command": "true", "env": {"X": "clear"}, "secretEnv": {"X": "secret"}})
    assert_problem(clash, 422, "conflicting-fields", "env X given both in clear and as a secret")


def request_of(history: list[Any]) -> JobRequested:
    found = first_request(history)
    assert found is not None
    return found[1]


async def test_same_job_id_is_idempotent(stack: Stack, api: httpx.AsyncClient) -> None:
    first = await api.post("/api/v1/jobs", json={"jobId": "idem-1", "command": "echo once"})
    again = await api.post("/api/v1/jobs", json={"jobId": "idem-1", "command": "echo once"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["seq"] == first.json()["seq"] and again.json()["created"] is False
    assert_problem(await api.post("/api/v1/jobs", json={"jobId": "idem-1", "command": "echo other"}), 409, "job-exists")
    await stack.wait_job("idem-1")
    history = await stack.client.history("idem-1")
    assert [r.subject.split(".")[4] for r in history].count("requested") == 1


async def test_list_and_show_jobs(stack: Stack, api: httpx.AsyncClient) -> None:
    ids = [await _submit(api, f"echo job-{i}", metadata={"n": i}) for i in range(3)]
    failing = await _submit(api, "exit 7")
    for job_id in [*ids, failing]:
        await stack.wait_job(job_id)
    job = (await api.get(f"/api/v1/jobs/{ids[0]}")).json()
    assert job["status"] == "succeeded" and job["exitCode"] == 0 and job["outputBytes"] == len(b"job-0\n")
    assert job["node"] == "node-1" and job["metadata"] == {"n": 0} and job["requestedBy"] == "anonymous"
    assert job["finishedAt"].endswith("Z") and "env" not in job
    assert (await api.get(f"/api/v1/jobs/{failing}")).json()["exitCode"] == 7

    listed = (await api.get("/api/v1/jobs")).json()
    assert [j["jobId"] for j in listed["jobs"]] == [failing, *reversed(ids)]
    assert listed["nextBefore"] is None
    failed = (await api.get("/api/v1/jobs", params={"status": "failed"})).json()["jobs"]
    assert [j["jobId"] for j in failed] == [failing]
    page1 = (await api.get("/api/v1/jobs", params={"limit": 2})).json()
    page2 = (await api.get("/api/v1/jobs", params={"limit": 2, "before": page1["nextBefore"]})).json()
    assert [j["jobId"] for j in page1["jobs"] + page2["jobs"]] == [failing, *reversed(ids)]
    assert page2["nextBefore"] is None


async def _detail(resp: Awaitable[httpx.Response]) -> str:
    body = assert_problem(await resp, 400, "invalid-body")
    return str(body["detail"])


async def test_a_bad_body_is_told_in_plain_words_on_every_write(api: httpx.AsyncClient) -> None:
    # Review: an empty body said "'data' at `data`"; `{}` said "Object missing required field".
    json_type = {"content-type": "application/json"}
    for path, required in [
        ("/api/v1/jobs", "`command`"),
        ("/api/v1/jobs/validate", "`command`"),
        ("/api/v1/pipelines", "`template`"),
        ("/api/v1/jobs/some-job/test", "`tests`"),
    ]:
        empty = await _detail(api.post(path, content=b"", headers=json_type))
        assert empty == f"invalid request body: the body is empty: send a JSON object with {required} (required)", path
        assert await _detail(api.post(path, json={})) == f"invalid request body: {required} is required", path
    nested = await _detail(api.post("/api/v1/jobs", json={"command": "x", "tests": [{"type": "exit_code", "expected": "0"}]}))
    assert nested == "invalid request body: `tests[0].expected`: expected `int`, got `str`"
    unknown = await _detail(api.post("/api/v1/jobs", json={"command": "x", "nodeID": "a"}))
    assert unknown == "invalid request body: `nodeID` is not a field of this body"
    missing = await _detail(api.post("/api/v1/jobs/some-job/test", json={"tests": [{"type": "file_exists"}]}))
    assert missing == "invalid request body: `tests[0].path` is required"


async def test_errors_are_problem_json(stack: Stack, api: httpx.AsyncClient) -> None:
    assert_problem(await api.post("/api/v1/jobs", json={"tool": "bash"}), 400, "invalid-body", "command")
    assert_problem(await api.post("/api/v1/jobs", json={"command": 3}), 400, "invalid-body", "command")
    assert_problem(await api.post("/api/v1/jobs", json={"command": "x", "nodeID": "a"}), 400, "invalid-body", "nodeID")
    assert_problem(await api.post("/api/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}), 400, "invalid-body")
    assert_problem(await api.post("/api/v1/jobs", json={"command": "x", "timeoutSeconds": 0}), 400, "invalid-body")
    assert_problem(await api.post("/api/v1/jobs", json={"command": "x", "nodeId": "no.pe"}), 400, "invalid-body")
    said = (await api.post("/api/v1/jobs", json={"command": "x", "jobId": "a.b"})).json()["detail"]
    assert said.endswith("`jobId`: expected `str` of 1 to 64 letters, digits, '_' or '-'"), said  # not the regex
    lone = b'{"command": "\\ud800"}'  # a lone surrogate: msgspec's message kept as it says it
    said = (await api.post("/api/v1/jobs", content=lone, headers={"content-type": "application/json"})).json()["detail"]
    assert "JSON is malformed" in said, said
    assert_problem(await api.post("/api/v1/jobs", json={"command": "x", "nodeId": "nope"}), 422, "unknown-node", "nope")
    for path in ("/api/v1/jobs/nope", "/api/v1/jobs/nope/stream"):
        assert_problem(await api.get(path), 404, "unknown-job", "nope")
    assert_problem(await api.post("/api/v1/jobs/nope/cancel"), 404, "unknown-job")
    assert_problem(await api.get("/api/v1/jobs/bad.id"), 400, "invalid-job-id", "bad.id")
    assert_problem(await api.get("/api/v1/jobs", params={"limit": 0}), 400, "invalid-parameter", "limit")
    assert_problem(await api.get("/api/v1/jobs", params={"status": "weird"}), 400, "invalid-parameter", "status")
    assert_problem(await api.get("/api/v1/nodes/nope"), 404, "unknown-node", "nope")
    assert_problem(await api.get("/api/v1/nodes/optimal", params={"label": "novalue"}), 400, "invalid-parameter")
    assert_problem(await api.get("/api/v1/no-such-path"), 404, "not-found")
    assert_problem(await api.delete("/api/v1/jobs"), 405, "method-not-allowed")

    job_id = await _submit(api, "true")
    await stack.wait_job(job_id)
    bad_id = await api.get(f"/api/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": "x:y"})
    assert_problem(bad_id, 400, "invalid-last-event-id", "x:y")
    # A position past the job's last event was never sent: resuming "after" it would skip what comes.
    ahead = await api.get(f"/api/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": "99999:0"})
    assert_problem(ahead, 400, "invalid-last-event-id", "past the job's log")
    # So is one past its output: every chunk would have been skipped, the stream still "complete".
    seq = (await api.get(f"/api/v1/jobs/{job_id}")).json()["firstSeq"]
    output_ahead = await api.get(f"/api/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": f"{seq}:999999"})
    assert_problem(output_ahead, 400, "invalid-last-event-id", "past the job's output", "none yet")
    # The console's feed checks its position the same way.
    assert_problem(await api.get("/api/v1/feed", headers={"Last-Event-ID": "abc"}), 400, "invalid-last-event-id", "abc")
    assert_problem(await api.get("/api/v1/feed", headers={"Last-Event-ID": "99999999"}), 400, "invalid-last-event-id", "past the log's end")
    assert_problem(await api.post(f"/api/v1/jobs/{job_id}/approve"), 409, "wrong-state", "not waiting for approval")
    # Calls that take no body refuse one with fields, as every body refuses unknown fields.
    assert_problem(await api.post(f"/api/v1/jobs/{job_id}/rerun", json={"x": 1}), 400, "invalid-body", "`x` is not a field")
    assert_problem(await api.post("/api/v1/nodes/node-1/undrain", json={"x": 1}), 400, "invalid-body", "`x` is not a field")
    assert_problem(await api.post("/api/v1/jobs/nope/deny"), 404, "unknown-job")
    assert_problem(await api.post(f"/api/v1/jobs/{job_id}/rollback"), 422, "no-rollback-command")
    assert_problem(await api.post("/api/v1/jobs/nope/test", json={"tests": [{"type": "exit_code"}]}), 404, "unknown-job")
    assert_problem(await api.get("/api/v1/pipelines/p-1"), 404, "unknown-pipeline")


async def test_nodes_and_the_optimal_node(stack: Stack, api: httpx.AsyncClient) -> None:
    nodes = (await api.get("/api/v1/nodes")).json()["nodes"]
    assert [n["nodeId"] for n in nodes] == ["node-1"]
    node = nodes[0]
    assert node["live"] is True and node["status"] == "online" and "bash" in node["tools"]
    assert (await api.get("/api/v1/nodes/node-1")).json()["nodeId"] == "node-1"
    best = (await api.get("/api/v1/nodes/optimal", params={"tool": "bash"})).json()
    assert best["node"]["nodeId"] == "node-1" and best["candidates"] == ["node-1"]
    none = (await api.get("/api/v1/nodes/optimal", params={"tool": "no-such-tool"})).json()
    assert none["node"] is None and "no-such-tool" in none["reason"]
    labelled = (await api.get("/api/v1/nodes/optimal", params={"label": "env=prod"})).json()
    assert labelled["node"] is None and "env" in labelled["reason"]


async def test_a_node_that_stopped_stays_listed_not_live_on_the_cli_and_the_api_alike(stack: Stack, api: httpx.AsyncClient) -> None:
    """`kill -TERM` of an agent: `nexus nodes` still said it was live (its last heartbeat was
    recent) and, once the bucket forgot the heartbeat, listed it no more, while the API listed it
    as lost from the log. Both now read app.nodes.fleet."""
    await stack.start_agent("web-2")
    await wait_for(lambda: stack.orchestrator.nodes.get("web-2") is not None, what="web-2 registered")
    await stack.stop_agent("web-2")  # a clean stop: its last heartbeat says so

    async def both() -> tuple[dict[str, tuple[str, bool]], dict[str, tuple[str, bool]]]:
        code, out, err = await stack.nexus("nodes", "--json")
        assert code == 0, err
        cli = {n["node_id"]: (n["status"], n["live"]) for n in json.loads(out)}
        via_api = {n["nodeId"]: (n["status"], n["live"]) for n in (await api.get("/api/v1/nodes")).json()["nodes"]}
        return cli, via_api

    cli, via_api = await both()
    assert cli == via_api == {"node-1": ("online", True), "web-2": ("stopped", False)}
    code, out, _ = await stack.nexus("nodes")
    assert code == 0 and b"web-2" in out and b"stopped" in out

    await (await stack.client.bus.nodes_kv()).purge("web-2")  # the bucket forgets it, as its TTL does

    async def lost() -> bool:
        return (await stack.client.query("SELECT status FROM nodes WHERE node_id = 'web-2'")).rows == [["lost"]]

    await wait_for(lost, what="web-2 found lost by the orchestrator")
    cli, via_api = await both()
    assert cli == via_api == {"node-1": ("online", True), "web-2": ("lost", False)}


async def test_a_drained_node_gets_no_new_job_until_undrained_on_the_cli_and_the_api(stack: Stack, api: httpx.AsyncClient) -> None:
    """DESIGN §3's `node.drained`: an operator takes a node out of placement for maintenance. It
    shows as `drained`, the optimal node skips it, a job waits saying why, and it runs once the
    node is undrained. The API's call is recorded under its caller."""
    code, out, err = await stack.nexus("nodes", "--drain", "node-1", "--reason", "kernel upgrade", "--json")
    assert code == 0, err
    assert json.loads(out)["drained"] is True

    async def drained() -> bool:
        nodes = (await api.get("/api/v1/nodes")).json()["nodes"]
        return nodes[0]["status"] == "drained" and nodes[0]["live"] is True

    await wait_for(drained, what="node-1 drained")
    best = (await api.get("/api/v1/nodes/optimal", params={"tool": "bash"})).json()
    assert best["node"] is None and best["candidates"] == []
    code, out, _ = await stack.nexus("nodes")
    assert code == 0 and b"drained" in out
    code, _, err = await stack.nexus("submit", "--id", "drained-1", "--node", "node-1", "--", "echo after")
    assert code == 0, err

    async def waiting() -> bool:
        job = (await api.get("/api/v1/jobs/drained-1")).json()
        return job["status"] == "queued" and "drained" in (job.get("reason") or "")

    await wait_for(waiting, what="the job waiting for the drained node")
    # Undrained over the API: the job runs.
    resp = await api.post("/api/v1/nodes/node-1/undrain")
    assert resp.status_code == 202 and resp.json()["drained"] is False, resp.text
    assert (await stack.wait_job("drained-1"))["status"] == "succeeded"
    # Drained over the API, with a reason, by its caller; then back again.
    resp = await api.post("/api/v1/nodes/node-1/drain", json={"reason": "disk swap"})
    assert resp.status_code == 202 and resp.json() == {"nodeId": "node-1", "drained": True, "seq": resp.json()["seq"]}
    assert (await api.post("/api/v1/nodes/node-1/undrain")).status_code == 202
    sql = "SELECT type, payload FROM events WHERE node_id = 'node-1' AND type LIKE 'node.%drained' ORDER BY seq"
    rows = (await stack.client.query(sql)).dicts()
    said = [(r["type"], json.loads(r["payload"]).get("reason"), json.loads(r["payload"]).get("by")) for r in rows]
    assert said[:3] == [
        ("node.drained", "kernel upgrade", None),
        ("node.undrained", None, "anonymous"),
        ("node.drained", "disk swap", "anonymous"),
    ]
    # A node no one registered is refused, on both.
    assert_problem(await api.post("/api/v1/nodes/nope/drain"), 404, "unknown-node", "nope")
    code, _, err = await stack.nexus("nodes", "--drain", "nope")
    assert code == 1 and b"no node 'nope' registered" in err


async def test_nodes_without_an_orchestrator_lists_the_heartbeats_and_says_so(stack: Stack) -> None:
    """`nexus nodes` asks the orchestrator; with none answering it failed, when which agents still
    beat is what one wants to know. It lists them from the bucket, registration `unknown`."""
    await stack.start_agent("web-3")
    await stack.stop_agent("web-3")  # its last heartbeat says it stopped
    await stack.stop_orchestrator()
    code, out, err = await stack.nexus("nodes", "--json")
    assert code == 0, err
    assert b"no orchestrator answers" in err and b"heartbeats" in err
    shown = {n["node_id"]: (n["status"], n["live"]) for n in json.loads(out)}
    assert shown == {"node-1": ("unknown", True), "web-3": ("stopped", False)}
    code, out, err = await stack.nexus("nodes")
    assert code == 0 and b"node-1" in out and b"unknown" in out, err


async def test_polling_the_nodes_leaves_no_consumer_behind(stack: Stack, api: httpx.AsyncClient) -> None:
    """kv.keys() left a consumer per call on the KV stream for 5 minutes: after ~1,000
    calls the server refused new consumers and every state read answered 500."""
    js = stack.client.bus.js
    before = (await js.stream_info("KV_nexus-nodes")).state.consumer_count
    gate = asyncio.Semaphore(16)

    async def one() -> int:
        async with gate:
            return (await api.get("/api/v1/nodes")).status_code

    statuses = await asyncio.gather(*(one() for _ in range(1500)))
    assert set(statuses) == {200}
    for _ in range(20):  # the CLI's one-shot read (`nexus nodes`) as well
        assert "node-1" in await stack.client.bus.heartbeats()
    after = (await js.stream_info("KV_nexus-nodes")).state.consumer_count
    assert after <= before + 1, (before, after)
    nodes = (await api.get("/api/v1/nodes")).json()["nodes"]
    assert [n["nodeId"] for n in nodes] == ["node-1"] and nodes[0]["live"] is True
    assert (await api.post("/api/v1/jobs/validate", json={"command": "echo", "nodeId": "node-1"})).json()["valid"] is True


async def test_options_lists_every_method_of_a_path(api: httpx.AsyncClient) -> None:
    # Litestar's own answer listed only the methods of the first handler registered for the path.
    resp = await api.options("/api/v1/jobs")
    assert resp.status_code == 204 and resp.headers["allow"] == "GET, OPTIONS, POST"
    assert (await api.options("/api/v1/jobs/x/cancel")).headers["allow"] == "OPTIONS, POST"
    refused = await api.delete("/api/v1/jobs")
    assert_problem(refused, 405, "method-not-allowed")
    assert set(refused.headers["allow"].split(", ")) == {"GET", "OPTIONS", "POST"}


# ---------------------------------------------------------------- validate (analysis)


async def test_validate_route_maps_the_verdict_and_checks_nodes(stack: Stack, api: httpx.AsyncClient) -> None:
    resp = await api.post("/api/v1/jobs/validate", json={"tool": "bash", "command": "rm -rf /var/www/*", "nodeIds": ["node-1"]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body.pop("validationMs") >= 0
    (warning,) = body.pop("warnings")
    assert (warning["type"], warning["severity"]) == ("destructive_command", "critical")
    assert warning["message"].endswith(" - requires approval")  # true: the default policy holds critical commands anywhere
    assert body.pop("suggestions")
    assert body == {
        "valid": False,
        "severity": "critical",
        "parsed": True,
        "approvalRequired": True,
        "denied": None,
        "invalid": None,
        "estimatedDuration": None,
    }
    ok = (await api.post("/api/v1/jobs/validate", json={"command": "echo hi", "nodeId": "node-1"})).json()
    assert ok["valid"] is True and ok["warnings"] == [] and ok["severity"] is None
    unknown = (await api.post("/api/v1/jobs/validate", json={"command": "echo hi", "nodeIds": ["ghost"]})).json()
    assert unknown["valid"] is False and unknown["warnings"][0]["type"] == "unknown_node"
    # What runs is judged: a test command, and a variable from env.
    tested = {"command": "echo hi", "tests": [{"type": "command", "command": "rm -rf /etc"}]}
    assert (await api.post("/api/v1/jobs/validate", json=tested)).json()["approvalRequired"] is True
    from_env = (await api.post("/api/v1/jobs/validate", json={"command": "$CMD", "env": {"CMD": "shutdown -h now"}})).json()
    assert from_env["severity"] == "critical" and from_env["warnings"][0]["type"] == "power"
    assert_problem(await api.post("/api/v1/jobs/validate", json={}), 400, "invalid-body", "command")


async def test_validate_with_the_real_analysis(api: httpx.AsyncClient) -> None:
    bad = await api.post("/api/v1/jobs/validate", json={"tool": "bash", "command": "rm -rf /var/www/*", "nodeIds": ["node-1"]})
    assert bad.status_code == 200, bad.text
    assert bad.json()["valid"] is False
    assert any(w["severity"] == "critical" for w in bad.json()["warnings"])
    good = (await api.post("/api/v1/jobs/validate", json={"command": "echo hello"})).json()
    assert good["valid"] is True


async def test_a_critical_command_for_production_waits_for_approval(stack: Stack, api: httpx.AsyncClient) -> None:
    await stack.start_agent("prod-1", labels={"env": "prod"})
    command = "false && shutdown -h now || echo approved-and-ran"  # `false &&`: never shuts down
    verdict = (await api.post("/api/v1/jobs/validate", json={"command": command, "nodeId": "prod-1"})).json()
    assert verdict["severity"] == "critical" and verdict["approvalRequired"] is True and verdict["valid"] is False

    async def status_of(job_id: str, want: str) -> bool:
        return (await api.get(f"/api/v1/jobs/{job_id}")).json()["status"] == want

    held = await _submit(api, command, nodeId="prod-1")
    await wait_for(lambda: status_of(held, "approval_required"), what="job held for approval")
    job = (await api.get(f"/api/v1/jobs/{held}")).json()
    assert job["severity"] == "critical" and job["warnings"][0]["severity"] == "critical"
    resp = await api.post(f"/api/v1/jobs/{held}/approve", json={"reason": "checked by hand"})
    assert resp.status_code == 202 and resp.json()["decision"] == "approved" and resp.json()["by"] == "anonymous"
    assert (await stack.wait_job(held))["status"] == "succeeded"
    session = await read_sse(api, f"/api/v1/jobs/{held}/stream")
    categories = [e.data["category"] for e in session.events if e.data["type"] == "status"]
    assert categories[:4] == ["requested", "validated", "approval_required", "approved"]
    assert session.output() == b"approved-and-ran\n"
    assert_problem(await api.post(f"/api/v1/jobs/{held}/deny"), 409, "wrong-state")

    refused = await _submit(api, command, nodeId="prod-1")
    await wait_for(lambda: status_of(refused, "approval_required"), what="second job held")
    assert (await api.post(f"/api/v1/jobs/{refused}/deny", json={"reason": "no"})).status_code == 202
    assert (await stack.wait_job(refused))["status"] == "denied"
    done = (await read_sse(api, f"/api/v1/jobs/{refused}/stream")).events[-1].data
    assert done == {"type": "done", "jobId": refused, "status": "denied", "exitCode": None, "reason": "denied by anonymous: no"}


# ---------------------------------------------------------------- SSE


async def test_stream_of_a_finished_job_replays_from_the_start_and_ends_with_done(stack: Stack, api: httpx.AsyncClient) -> None:
    job_id = await _submit(api, "printf 'hello\\033[1mbold\\033[0m\\n'; exit 3")
    await stack.wait_job(job_id)
    session = await read_sse(api, f"/api/v1/jobs/{job_id}/stream")
    types = [e.data["type"] for e in session.events]
    assert types[0] == "status" and types[-1] == "done" and "output_chunk" in types
    categories = [e.data["category"] for e in session.events if e.data["type"] == "status"]
    assert categories[0] == "requested" and categories[-1] == "failed"
    assert {"assigned", "accepted", "started", "exited"} <= set(categories)
    assert session.output() == b"hello\x1b[1mbold\x1b[0m\n"
    text = "".join(e.data["text"] for e in session.events if e.data["type"] == "output_chunk")
    assert text == "hellobold\n"
    done = session.events[-1]
    assert done.data == {"type": "done", "jobId": job_id, "status": "failed", "exitCode": 3, "reason": "exit code 3"}
    assert done.id is not None and done.id.endswith(":done")
    positions = _positions(session.events)
    assert all(b >= a for a, b in itertools.pairwise(positions))  # both numbers only grow
    # Each message advances exactly one of the two positions, so no position is sent twice.
    assert len(set(positions[:-1])) == len(positions) - 1
    # A client that already got `done` is told to stop reconnecting.
    gone = await read_sse(api, f"/api/v1/jobs/{job_id}/stream", last_event_id=done.id)
    assert gone.status == 204 and gone.events == []


async def test_a_finished_jobs_replay_has_its_output_where_it_happened(stack: Stack, api: httpx.AsyncClient) -> None:
    # Review: a late client got every status through `succeeded` first, then all of the output.
    job_id = await _submit(api, "for i in 1 2 3 4 5 6; do echo line-$i; sleep 0.1; done")
    await stack.wait_job(job_id)
    path = f"/api/v1/jobs/{job_id}/stream"
    replay = await read_sse(api, path)
    kinds = [e.data.get("category", e.data["type"]) for e in replay.events]
    chunks = [i for i, kind in enumerate(kinds) if kind == "output_chunk"]
    assert chunks and kinds.index("started") < chunks[0] and chunks[-1] < kinds.index("exited"), kinds
    assert kinds[-2:] == ["succeeded", "done"] and replay.output() == b"".join(b"line-%d\n" % i for i in range(1, 7))
    # Cut in the middle of the output and resume: the two halves are the replay, in its order.
    first = await read_sse(api, path, stop_after=lambda events: b"line-2" in b"".join(
        base64.b64decode(e.data["dataB64"]) for e in events if e.data["type"] == "output_chunk"))  # fmt: skip
    assert first.events[-1].data["type"] == "output_chunk" and first.last_id is not None
    rest = await read_sse(api, path, last_event_id=first.last_id)
    assert [(e.id, e.data) for e in first.events + rest.events] == [(e.id, e.data) for e in replay.events]


async def test_reconnecting_with_last_event_id_misses_nothing_and_repeats_nothing(stack: Stack, api: httpx.AsyncClient) -> None:
    job_id = await _submit(api, LINES_CMD)
    path = f"/api/v1/jobs/{job_id}/stream"

    def some_output(events: list[Sse]) -> bool:
        return b"line-10\n" in b"".join(base64.b64decode(e.data["dataB64"]) for e in events if e.data["type"] == "output_chunk")

    first = await read_sse(api, path, stop_after=some_output)
    assert first.events[-1].data["type"] != "done"
    assert first.last_id is not None
    job = (await api.get(f"/api/v1/jobs/{job_id}")).json()
    assert job["status"] not in ("succeeded", "failed"), "the job should still be running when the client hangs up"
    second = await read_sse(api, path, last_event_id=first.last_id)
    assert second.events[-1].data["type"] == "done" and second.events[-1].data["exitCode"] == 0
    assert first.output() + second.output() == LINES_OUT
    # Nothing delivered twice, nothing skipped: the two halves are exactly a fresh replay.
    replay = await read_sse(api, path)
    key = [(e.data["type"], e.data.get("seq")) for e in first.events + second.events]
    assert sorted(key, key=str) == sorted([(e.data["type"], e.data.get("seq")) for e in replay.events], key=str)
    assert len(key) == len(set(key))
    assert replay.output() == LINES_OUT
    # The query-string form of Last-Event-ID works the same way.
    tail = await read_sse(api, f"{path}?lastEventId={first.last_id}")
    assert tail.output() == second.output()


async def test_many_clients_follow_one_job(stack: Stack, api: httpx.AsyncClient) -> None:
    job_id = await _submit(api, LINES_CMD)
    sessions = await asyncio.gather(*(read_sse(api, f"/api/v1/jobs/{job_id}/stream") for _ in range(4)))
    for session in sessions:
        assert session.output() == LINES_OUT
        assert session.events[-1].data["type"] == "done"
    assert len({hashlib.sha256(s.output()).hexdigest() for s in sessions}) == 1


async def test_stopping_the_server_ends_open_streams(stack: Stack) -> None:
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command="sleep 600"))
    port = free_port()
    task = asyncio.create_task(serve(stack.client, host="127.0.0.1", port=port, auth_file=None))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:

        async def ready() -> bool:
            try:
                return (await http.get("/health")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(ready, 15, what="API ready")
        got_first = asyncio.Event()

        async def follow() -> SseSession:
            return await read_sse(http, f"/api/v1/jobs/{job_id}/stream", stop_after=lambda ev: got_first.set() and False)

        follower = asyncio.create_task(follow())
        await asyncio.wait_for(got_first.wait(), 15)
        started = time.monotonic()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 4  # not uvicorn's graceful timeout: the stream was ended
        session = await asyncio.wait_for(follower, 5)
        assert session.events and session.events[-1].data["type"] == "status"
    await stack.client.cancel(job_id, by="test", reason="cleanup")
    await stack.wait_job(job_id)


# ---------------------------------------------------------------- auth and audit


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(
        f'[[token]]\nuser = "vera"\nrole = "viewer"\ntoken = "{TOKENS["viewer"]}"\n\n'
        f'[[token]]\nuser = "otto"\nrole = "operator"\nsha256 = "{hashlib.sha256(TOKENS["operator"].encode()).hexdigest()}"\n\n'
        f'[[token]]\nuser = "ada"\nrole = "admin"\ntoken = "{TOKENS["admin"]}"\n'
    )
    return path


def _as(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


async def _audit_events(stack: Stack) -> dict[str, dict[str, Any]]:
    """The api.called events in the log, by request id (read from JetStream, the source of truth)."""
    out: dict[str, dict[str, Any]] = {}
    async for batch in stack.client.bus.read_records(subject="nexus.evt.api.>"):
        for rec in batch:
            out[rec.subject.split(".")[3]] = json.loads(rec.raw)
    return out


async def test_only_its_requester_may_rerun_a_job_with_sealed_secrets(stack: Stack, tmp_path: Path) -> None:
    """Re-run resends the stored request, sealed secrets included: someone's credentials, sealed
    for them (the orchestrator opens them for no one else). Another operator, an admin too, gets
    403 (nothing published); its requester may; without secrets anyone who may submit may."""
    tokens = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789", "ada": "ada-token-0123456789"}
    path = tmp_path / "tokens.toml"
    path.write_text("".join(
        f'[[token]]\nuser = "{user}"\nrole = "{"admin" if user == "ada" else "operator"}"\ntoken = "{token}"\n\n'
        for user, token in tokens.items()
    ))  # fmt: skip

    def by(user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[user]}"}

    async with running_api(stack, auth_file=path) as http:
        created = await http.post("/api/v1/jobs", headers=by("alice"), json={"command": "true", "env": {"DB_PASSWORD": "hunter2"}})
        assert created.status_code == 201, created.text
        secret_job = created.json()["jobId"]
        plain = (await http.post("/api/v1/jobs", headers=by("alice"), json={"command": "true", "env": {"A": "1"}})).json()["jobId"]
        await stack.wait_job(secret_job)
        before = await stack.client.bus.last_seq(subject="nexus.evt.job.>")
        for user in ("bob", "ada"):
            refused = await http.post(f"/api/v1/jobs/{secret_job}/rerun", headers=by(user))
            assert_problem(refused, 403, "not-yours", "DB_PASSWORD", "alice")
        assert await stack.client.bus.last_seq(subject="nexus.evt.job.>") == before  # nothing requested
        again = await http.post(f"/api/v1/jobs/{secret_job}/rerun", headers=by("alice"))
        assert again.status_code == 201, again.text
        assert first_request(await stack.client.history(again.json()["jobId"]))[1].requested_by == "alice"  # type: ignore[index]
        assert (await stack.wait_job(again.json()["jobId"]))["status"] == "succeeded"  # opened for her
        assert (await http.post(f"/api/v1/jobs/{plain}/rerun", headers=by("bob"))).status_code == 201


async def test_a_token_removed_from_the_file_is_refused_without_a_restart(stack: Stack, token_file: Path) -> None:
    """A leaked token is revoked by editing the file: the running API follows it (within a second);
    a file that no longer loads keeps the tokens that last did, and one that loads again counts."""
    async with running_api(stack, auth_file=token_file) as http:

        async def status(role: str) -> int:
            return (await http.get("/api/v1/jobs", headers=_as(role))).status_code

        async def answers(role: str, code: int) -> bool:
            return await status(role) == code

        assert (await status("viewer"), await status("operator")) == (200, 200)
        kept = token_file.read_text().split("\n\n")
        token_file.write_text("\n\n".join(k for k in kept if 'user = "vera"' not in k))  # vera's token revoked
        await wait_for(lambda: answers("viewer", 401), what="the revoked token refused")
        assert await status("operator") == 200
        with structlog.testing.capture_logs() as logs:
            token_file.write_text("[[token]]\nthis is not TOML\n")  # a broken edit: the last good tokens stay

            async def looked_at() -> bool:
                return await answers("operator", 200) and any(e["event"] == "api.tokens_reload_failed" for e in logs)

            await wait_for(looked_at, what="the broken file looked at")
        assert (await status("operator"), await status("viewer")) == (200, 401)
        token_file.write_text("\n\n".join(kept))  # vera back
        await wait_for(lambda: answers("viewer", 200), what="the restored token taken")


async def test_a_stream_ends_once_its_token_is_revoked(stack: Stack, token_file: Path) -> None:
    """An SSE stream outlives the call that opened it: revoking the token ends it (its reconnect then gets 401)."""
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command="for i in $(seq 600); do echo tick $i; sleep 0.1; done"))
    async with running_api(stack, auth_file=token_file) as http:
        seen = 0

        def revoke_after_two(events: list[Sse]) -> bool:
            nonlocal seen
            chunks = sum(e.data["type"] == "output_chunk" for e in events)
            if chunks >= 2 and not seen:
                seen = chunks
                token_file.write_text("\n\n".join(k for k in token_file.read_text().split("\n\n") if 'user = "vera"' not in k))
            return False  # read on: the server is to end it

        async def output_readers() -> int:
            return int((await stack.client.bus.js.stream_info("NEXUS_OUTPUT")).state.consumer_count)

        before = await output_readers()
        http.headers["Authorization"] = f"Bearer {TOKENS['viewer']}"
        session = await read_sse(http, f"/api/v1/jobs/{job_id}/stream", stop_after=revoke_after_two, timeout=30)
        assert session.status == 200 and seen >= 2
        assert not any(e.data["type"] == "done" for e in session.events)  # cut, not finished: the job still runs
        assert (await http.get(f"/api/v1/jobs/{job_id}/stream")).status_code == 401  # the reconnect
        assert (await http.get("/api/v1/jobs", headers=_as("operator"))).status_code == 200

        async def stream_closed() -> bool:  # the server's side stopped too: its output reader is gone
            return await output_readers() == before

        await wait_for(stream_closed, 10, what="the cut stream's reader closed")
    await stack.client.cancel(job_id, by="test", reason="cleanup")
    await stack.wait_job(job_id)


async def test_roles_decide_who_may_do_what_and_every_call_is_audited(stack: Stack, token_file: Path) -> None:
    async with running_api(stack, auth_file=token_file) as http:
        calls: list[tuple[httpx.Response, str | None, str, int]] = []

        async def call(method: str, path: str, role: str | None, expect: int, **kw: Any) -> httpx.Response:
            headers = {"Authorization": "Bearer not-a-real-token-at-all"} if role == "bogus" else _as(role) if role else {}
            resp = await http.request(method, path, headers=headers, **kw)
            assert resp.status_code == expect, (method, path, role, resp.text)
            calls.append((resp, role, path, expect))
            return resp

        health = await http.get("/health")  # public: says a token is needed, and nothing else
        assert health.json() == {"status": "ok", "nats": True, "auth": "tokens"} and "x-request-id" not in health.headers
        assert (await http.get("/")).status_code == 200  # the console's page (its login form): public too
        for doc in ("/schema/openapi.json", "/schema/swagger"):  # the API's document needs a token like every call
            assert_problem(await call("get", doc, None, 401), 401, "unauthorized", "missing bearer token")
            await call("get", doc, "viewer", 200)
        missing = await call("get", "/api/v1/jobs", None, 401)
        assert_problem(missing, 401, "unauthorized", "missing bearer token")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert_problem(await call("get", "/api/v1/jobs", "bogus", 401), 401, "unauthorized", "unknown bearer token")
        await call("get", "/api/v1/jobs", "viewer", 200)
        await call("get", "/api/v1/nodes", "viewer", 200)
        await call("get", "/api/v1/metrics/pipeline", "viewer", 200)
        refused = await call("post", "/api/v1/jobs", "viewer", 403, json={"command": "echo no"})
        assert_problem(refused, 403, "forbidden", "vera", "operator")
        created = await call("post", "/api/v1/jobs", "operator", 201, json={"command": "echo yes"})
        job_id = created.json()["jobId"]
        await call("post", f"/api/v1/jobs/{job_id}/approve", "operator", 403)
        await call("post", f"/api/v1/jobs/{job_id}/approve", "admin", 409)  # allowed, but nothing is held
        await call("post", "/api/v1/jobs", "admin", 201, json={"command": "echo admin"})
        row = await stack.wait_job(job_id)
        assert row["requested_by"] == "otto"
        await call("post", f"/api/v1/jobs/{job_id}/cancel", "viewer", 403)
        await call("get", "/api/v1/no-such-path", None, 401)

        # EventSource cannot send headers: the stream takes the token in the query string too.
        stream = await read_sse(http, f"/api/v1/jobs/{job_id}/stream?access_token={TOKENS['viewer']}")
        assert stream.status == 200 and stream.events[-1].data["type"] == "done"
        assert (await http.get(f"/api/v1/jobs/{job_id}?access_token={TOKENS['viewer']}")).status_code == 401

        async def all_audited() -> dict[str, dict[str, Any]] | None:
            found = await _audit_events(stack)
            return found if all(r.headers["x-request-id"] in found for r, *_ in calls) else None

        audit = await wait_for(all_audited, 10, what="audit events for every call")
        users = {"viewer": "vera", "operator": "otto", "admin": "ada", None: None, "bogus": None}
        for resp, role, path, status in calls:
            ev = audit[resp.headers["x-request-id"]]
            assert ev["type"] == "api.called" and ev["ts"].endswith("Z")
            assert (ev["user"], ev["path"], ev["status"], ev["method"]) == (users[role], path, status, resp.request.method)
            assert ev["allowed"] is (status not in (401, 403))
            if status in (401, 403):
                assert ev["reason"], ev
        stream_audit = [e for e in audit.values() if e["path"].endswith("/stream")]
        assert stream_audit and stream_audit[0]["user"] == "vera" and "access_token" not in stream_audit[0]["query"]
        cancel_refusal = next(e for e in audit.values() if e["path"].endswith("/cancel"))
        assert cancel_refusal["job_id"] == job_id and "needs operator" in cancel_refusal["reason"]


async def test_open_mode_is_loopback_only_and_bad_token_files_are_clear(stack: Stack, tmp_path: Path) -> None:
    with pytest.raises(ApiError, match="refusing to serve the API without a token file"):
        await serve(stack.client, host="0.0.0.0", port=free_port(), auth_file=None)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[token]]\nuser = "x"\nrole = "root"\ntoken = "0123456789abcdefghij"\n')
    with pytest.raises(ApiError, match="root"):
        await serve(stack.client, host="127.0.0.1", port=free_port(), auth_file=bad)
    bad.write_text('[[token]]\nuser = "x"\nrole = "viewer"\n')
    with pytest.raises(ApiError, match="exactly one of"):
        await serve(stack.client, host="127.0.0.1", port=free_port(), auth_file=bad)
    with pytest.raises(ApiError, match="cannot read"):
        await serve(stack.client, host="127.0.0.1", port=free_port(), auth_file=tmp_path / "missing.toml")
    # One user, one role: the record names the user, and could not say which role acted.
    bad.write_text(
        '[[token]]\nuser = "a"\nrole = "viewer"\nsha256 = "'
        + "1" * 64
        + '"\n\n[[token]]\nuser = "a"\nrole = "admin"\nsha256 = "'
        + "2" * 64
        + '"\n'
    )
    with pytest.raises(ApiError, match="'a' is listed as viewer before; one user, one role"):
        Tokens.load(bad)
    # Tokens in clear that other users can read: said at start (0600 or sha256 entries say nothing).
    bad.write_text('[[token]]\nuser = "a"\nrole = "viewer"\ntoken = "0123456789abcdefghij"\n')
    for mode, warned in ((0o644, True), (0o600, False)):
        bad.chmod(mode)
        with structlog.testing.capture_logs() as logs:
            Tokens.load(bad)
        assert any(e["event"] == "api.tokens_readable" and e["mode"] == f"{mode:04o}" for e in logs) is warned, logs
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ApiError, match="cannot listen"):
            await serve(stack.client, host="127.0.0.1", port=taken.getsockname()[1], auth_file=None)


async def test_tests_on_a_finished_job_and_pipelines_over_http(stack: Stack, tmp_path: Path) -> None:
    async with running_api(stack) as client:
        job = (await client.post("/api/v1/jobs", json={"command": f"echo built > {tmp_path}/out.txt; echo Build successful"})).json()
        await stack.wait_job(job["jobId"])
        resp = await client.post(
            f"/api/v1/jobs/{job['jobId']}/test",
            json={"tests": [{"type": "exit_code", "expected": 0}, {"type": "output_contains", "pattern": "Build successful"},
                            {"type": "file_exists", "path": f"{tmp_path}/out.txt"}]},
        )  # fmt: skip
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["passed"] is True and [r["type"] for r in body["results"]] == ["exit_code", "output_contains", "file_exists"]
        results = (await client.get(f"/api/v1/jobs/{job['jobId']}/test-results")).json()
        assert results["passed"] is True and len(results["results"]) == 3
        # The verification job that checked the file on the node names who asked (review: it was null).
        checks = await stack.client.query("SELECT job_id, requested_by FROM jobs WHERE parent = ?", [job["jobId"]])
        assert [r[1] for r in checks.rows] == ["anonymous"], checks.rows

        template = (
            f"name: api\nsteps:\n  - {{id: one, command: echo one >> {tmp_path}/p.log}}\n"
            f"  - {{id: two, command: echo two >> {tmp_path}/p.log}}\n"
        )
        resp = await client.post("/api/v1/pipelines", json={"template": template})
        assert resp.status_code == 201, resp.text
        pid = resp.json()["pipelineId"]

        async def done() -> dict[str, Any] | None:
            r = await client.get(f"/api/v1/pipelines/{pid}")
            return r.json() if r.status_code == 200 and r.json()["status"] in ("succeeded", "failed") else None

        pipeline = await wait_for(done, what="pipeline done")
        assert pipeline["status"] == "succeeded" and [s["status"] for s in pipeline["steps"]] == ["succeeded", "succeeded"]
        # camelCase like every body the API writes (review: it was the DuckDB rows, snake_case).
        assert (pipeline["pipelineId"], pipeline["requestedBy"], pipeline["spec"]["name"]) == (pid, "anonymous", "api")
        assert [s["stepId"] for s in pipeline["steps"]] == ["one", "two"]
        spec_step = pipeline["spec"]["steps"][0]
        assert {"maxParallel", "batchSize", "timeoutSeconds"} <= set(spec_step)
        bodies = [pipeline, pipeline["spec"], spec_step, *pipeline["steps"], *pipeline["steps"][0]["jobs"]]
        assert not [k for body in bodies for k in body if "_" in k], bodies
        # The id is the idempotency key: the same request again is that pipeline, another one is refused
        # (review: a different template got 201 with the old pipeline's seq, and never ran).
        again = await client.post("/api/v1/pipelines", json={"template": template, "pipelineId": pid})
        assert again.status_code == 200 and again.json()["created"] is False and again.json()["seq"] == resp.json()["seq"], again.text
        other = template.replace("name: api", "name: totally-different")
        assert_problem(await client.post("/api/v1/pipelines", json={"template": other, "pipelineId": pid}), 409, "pipeline-exists")
        assert (await stack.client.query("SELECT count(*) FROM pipelines")).rows == [[1]]
        bad = await client.post("/api/v1/pipelines", json={"template": "name: x\nsteps:\n  - {id: a, comand: x}\n"})
        assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
        assert (await client.get("/api/v1/pipelines/nope")).status_code == 404


async def test_test_results_say_a_run_is_pending_instead_of_giving_the_previous_one(
    stack: Stack, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    # Review: while a new run was pending, GET test-results gave the previous run's `passed: false`
    # with nothing saying a run was pending; a client polling until `passed != null` took it.
    await stack.start_agent("t-node", max_jobs=1)
    job_id = await _submit(api, "true", node="t-node")
    await stack.wait_job(job_id)
    first = await api.post(f"/api/v1/jobs/{job_id}/test", json={"tests": [{"type": "exit_code", "expected": 1}]})
    assert first.status_code == 200 and first.json()["passed"] is False, first.text
    gate = tmp_path / "gate"
    blocker = await _submit(api, f"while [ ! -e {gate} ]; do sleep 0.05; done", node="t-node")
    await wait_for(lambda: _has_status(stack, blocker, "running"), what="the node busy")
    # A node-side check runs in a verification job on the job's node, which is busy: it waits.
    check = {"tests": [{"type": "file_exists", "path": str(tmp_path)}], "timeoutSeconds": 1e-6}
    late = await api.post(f"/api/v1/jobs/{job_id}/test", json=check)
    assert late.status_code == 202 and late.json()["pending"] is True, late.text
    pending = (await api.get(f"/api/v1/jobs/{job_id}/test-results")).json()
    assert pending == {"jobId": job_id, "passed": None, "results": [], "pending": True}, pending
    gate.touch()

    async def judged() -> dict[str, Any] | None:
        body: dict[str, Any] = (await api.get(f"/api/v1/jobs/{job_id}/test-results")).json()
        return body if not body["pending"] else None

    done = await wait_for(judged, what="the new run judged")
    assert done["passed"] is True and [r["type"] for r in done["results"]] == ["file_exists"], done


async def _has_status(stack: Stack, job_id: str, status: str) -> bool:
    row = await stack.job(job_id)
    return bool(row and row["status"] == status)


async def test_late_test_results_are_202_and_concurrent_requests_never_wait_for_nothing(stack: Stack, api: httpx.AsyncClient) -> None:
    job_id = await _submit(api, "true")
    await stack.wait_job(job_id)
    path = f"/api/v1/jobs/{job_id}/test"
    late = await api.post(path, json={"tests": [{"type": "exit_code"}], "timeoutSeconds": 1e-6})
    assert late.status_code == 202, late.text  # requested; the results come later (was a 504)
    assert late.json() == {"jobId": job_id, "passed": None, "results": [], "pending": True}
    assert late.headers["location"] == f"/api/v1/jobs/{job_id}/test-results"

    async def results_in() -> bool:
        return (await api.get(f"/api/v1/jobs/{job_id}/test-results")).json()["passed"] is True

    await wait_for(results_in, what="the late results")
    # The orchestrator takes one test request per job at a time and ignores the others:
    # their callers used to wait out their whole timeout. Now one runs, the others get 409.
    # A request left waiting would be answered 202 (pending) after its 30 s, not 409.
    answers = await asyncio.gather(*(api.post(path, json={"tests": [{"type": "exit_code"}], "timeoutSeconds": 30}) for _ in range(4)))
    assert 200 in {a.status_code for a in answers}, [a.text for a in answers]
    for answer in answers:
        if answer.status_code != 200:
            assert_problem(answer, 409, "wrong-state")


async def test_rollback_runs_the_undo_command_on_the_same_node(stack: Stack, tmp_path: Path) -> None:
    async with running_api(stack) as client:
        marker = tmp_path / "deployed"
        created = (await client.post("/api/v1/jobs", json={"command": f"touch {marker}", "metadata": {"rollback": f"rm {marker}"}})).json()
        await stack.wait_job(created["jobId"])
        assert marker.exists()
        resp = await client.post(f"/api/v1/jobs/{created['jobId']}/rollback")
        assert resp.status_code == 202, resp.text
        rollback = resp.json()
        assert rollback["rollbackOf"] == created["jobId"]
        assert (await stack.wait_job(rollback["jobId"]))["status"] == "succeeded"
        assert not marker.exists()

        async def rolled_back() -> bool:
            row = await stack.job(created["jobId"])
            return bool(row and row["rollback_job"] == rollback["jobId"] and row["rolled_back_at"] is not None)

        await wait_for(rolled_back, what="rolled_back recorded")
        kinds = [r.subject.split(".")[4] for r in await stack.client.history(created["jobId"])]
        assert kinds.count("rolled_back") == 1
