"""Bounds at the API edge, and what an API in trouble answers.

Every body the bus would refuse is refused at the API with a clear 4xx
(problem+json), before anything is published: bodies over 512 KiB (413),
JSON nested deeper than 32 (400), a body that is not JSON (415), integers,
strings, maps and lists past the limits of schemas.limits (400), an event that
would not fit on the bus (413). Nothing a handler raises becomes a 500 with a
traceback, and a NATS outage is a 503.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats.errors
import pytest

from orchestrator.api import jobs as jobs_routes
from schemas.events import ApiCalled
from schemas.limits import MAX_COMMAND_CHARS, MAX_DEPTH, MAX_ENV_ENTRIES, MAX_EVENT_BYTES, MAX_NAME_CHARS
from tests.conftest import Stack, wait_for
from tests.integration.api_support import assert_problem, bare_stack, serve_api


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_api(stack.client) as http:
        yield http


async def _nothing_published(stack: Stack, job_id: str) -> bool:
    return await stack.client.bus.last_seq(subject=f"nexus.evt.job.{job_id}.>") == 0


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# ---------------------------------------------------------------- sizes, depth, media type


async def test_a_body_over_the_limit_is_413_whether_announced_or_streamed(stack: Stack, api: httpx.AsyncClient) -> None:
    big = json.dumps({"command": "x" * (1100 * 1024), "jobId": "too-big"}).encode()
    assert_problem(await api.post("/api/v1/jobs", content=big, headers={"content-type": "application/json"}), 413, "too-large", "524288")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for i in range(0, len(big), 64 * 1024):
            yield big[i : i + 64 * 1024]

    streamed = await api.post("/api/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert_problem(streamed, 413, "too-large")
    assert await _nothing_published(stack, "too-big")
    assert (await api.get("/api/v1/jobs")).status_code == 200  # and the API goes on


async def test_deep_json_is_400_and_never_reaches_a_decoder(stack: Stack, api: httpx.AsyncClient) -> None:
    for body in (
        '{"command": "x", "jobId": "deep", "metadata": {"a": ' + _nested(5000) + "}}",
        _nested(5000),
        '{"command": "x", "jobId": "deep", "metadata": {"a": ' + _nested(MAX_DEPTH) + "}}",
    ):
        resp = await api.post("/api/v1/jobs", content=body.encode(), headers={"content-type": "application/json"})
        assert_problem(resp, 400, "invalid-body", "nested", str(MAX_DEPTH))
    # Brackets inside strings are text, not nesting.
    ok = await api.post("/api/v1/jobs/validate", json={"command": "echo " + "[" * 200})
    assert ok.status_code == 200, ok.text
    assert await _nothing_published(stack, "deep")


async def test_a_body_that_is_not_json_is_415(api: httpx.AsyncClient) -> None:
    # Only application/json (issue 11): what a web page may send without a preflight never reads as a body.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml", "application/vnd.x+json",
                         "application/json; charset=latin-1"):  # fmt: skip
        resp = await api.post("/api/v1/jobs", content=b'{"command": "echo"}', headers={"content-type": content_type})
        assert_problem(resp, 415, "unsupported-media-type", "application/json")
    for content_type in ("application/json", "Application/JSON; charset=UTF-8", 'application/json;charset="utf-8"'):
        ok = await api.post("/api/v1/jobs/validate", content=b'{"command": "echo"}', headers={"content-type": content_type})
        assert ok.status_code == 200, (content_type, ok.text)


# ---------------------------------------------------------------- field bounds


BAD_JOBS: list[tuple[str, dict[str, Any]]] = [
    ("priority", {"priority": 9223372036854775808}),
    ("priority", {"priority": 1_000_001}),
    ("timeoutSeconds", {"timeoutSeconds": 1e210}),
    ("timeoutSeconds", {"timeoutSeconds": -1}),
    ("command", {"command": "x" * (MAX_COMMAND_CHARS + 1)}),
    ("tool", {"tool": "t" * (MAX_NAME_CHARS + 1)}),
    ("env", {"env": {f"V{i}": "x" for i in range(MAX_ENV_ENTRIES + 1)}}),
    ("labels", {"labels": {"k": "v" * (MAX_NAME_CHARS + 1)}}),
    ("metadata", {"metadata": {"n": 2**63}}),
    ("metadata", {"metadata": {"nested": {"a": 1}}}),
    ("jobId", {"jobId": "bad\n"}),
    ("after", {"after": ["j"] * 101}),
    ("expected", {"tests": [{"type": "exit_code", "expected": 2**63}]}),
    ("timeout_s", {"tests": [{"type": "command", "command": "true", "timeout_s": -1}]}),
    ("timeout_s", {"tests": [{"type": "command", "command": "true", "timeout_s": 1e210}]}),
]


@pytest.mark.parametrize(("field", "extra"), BAD_JOBS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_JOBS)])
async def test_what_the_bus_would_refuse_is_400_at_the_api(stack: Stack, api: httpx.AsyncClient, field: str, extra: dict[str, Any]) -> None:
    body = {"command": "true", "jobId": "bounded", **extra}
    assert_problem(await api.post("/api/v1/jobs", json=body), 400, "invalid-body", field)
    assert await _nothing_published(stack, "bounded")


async def test_tests_and_their_timeouts_are_bounded(api: httpx.AsyncClient) -> None:
    for body in (
        {"tests": [{"type": "exit_code"}], "timeoutSeconds": -1},
        {"tests": [{"type": "exit_code"}], "timeoutSeconds": 1e210},
        {"tests": [{"type": "exit_code"}] * 33},
        {"tests": []},
    ):
        assert_problem(await api.post("/api/v1/jobs/nope/test", json=body), 400, "invalid-body")


async def test_lenient_conversions_are_refused_as_the_document_says(api: httpx.AsyncClient) -> None:
    for body, field in (
        ({"command": "true", "idempotent": 0}, "idempotent"),
        ({"command": "true", "priority": "5"}, "priority"),
        ({"command": "true", "retries": "1"}, "retries"),
        ({"command": "true", "tests": [{"type": "output_contains", "pattern": "x", "negate": 0}]}, "negate"),
    ):
        assert_problem(await api.post("/api/v1/jobs", json=body), 400, "invalid-body", field)
    # JSON has one kind of number: 5.0 is the integer 5, as JSON Schema says.
    resp = await api.post("/api/v1/jobs/validate", json={"command": "echo", "nodeIds": []})
    assert resp.status_code == 200
    same = await api.post("/api/v1/jobs", json={"command": "true", "retries": 1.0, "priority": 2.0, "jobId": "whole-numbers"})
    assert same.status_code == 201, same.text


async def test_a_request_whose_event_would_not_fit_on_the_bus_is_413(stack: Stack, api: httpx.AsyncClient) -> None:
    # 60,000 control characters: 360 KB once JSON-escaped, twice in the dispatch: over 512 KiB.
    resp = await api.post("/api/v1/jobs", json={"command": "\x01" * 60_000, "jobId": "wide"})
    assert_problem(resp, 413, "too-large", "dispatch", str(MAX_EVENT_BYTES))
    assert await _nothing_published(stack, "wide")
    # The ~900 KB command of the issue: refused before it is read.
    huge = await api.post("/api/v1/jobs", json={"command": "x" * 900_000, "jobId": "wide"})
    assert_problem(huge, 413, "too-large")
    # A large command that fits is accepted (and harmless: `:` does nothing).
    fits = await api.post("/api/v1/jobs", json={"command": ": " + "é" * 60_000, "jobId": "fits"})
    assert fits.status_code == 201, fits.text
    await stack.wait_job("fits")


async def test_query_parameters_are_bounded(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get("/api/v1/jobs", params={"before": 2**63}), 400, "invalid-parameter", "before")
    assert_problem(await api.get("/api/v1/jobs", params={"tool": "t" * 300}), 400, "invalid-parameter", "tool")
    assert_problem(await api.get("/api/v1/nodes/optimal", params={"tool": "t" * 300}), 400, "invalid-parameter", "tool")
    for since in ("0.5", "2026-01-01T00:00:00", "yesterday"):
        assert_problem(await api.get("/api/v1/metrics/pipeline", params={"since": since}), 400, "invalid-parameter", "since")
    assert (await api.get("/api/v1/metrics/pipeline", params={"since": "2026-01-01T00:00:00Z"})).status_code == 200


async def test_every_given_last_event_id_must_be_valid(stack: Stack, api: httpx.AsyncClient) -> None:
    job_id = (await api.post("/api/v1/jobs", json={"command": "true"})).json()["jobId"]
    await stack.wait_job(job_id)
    path = f"/api/v1/jobs/{job_id}/stream"
    for headers, params in (
        ({"Last-Event-ID": ""}, {}),
        ({"Last-Event-ID": "1:2:done"}, {"lastEventId": "x"}),
        ({"Last-Event-ID": "99999999999999999999:0"}, {}),
        ({}, {"lastEventId": "\u0661:2"}),  # int() reads Arabic-Indic digits; the document does not
    ):
        assert_problem(await api.get(path, headers=headers, params=params), 400, "invalid-last-event-id")


# ---------------------------------------------------------------- failures inside the API


@pytest.mark.parametrize("exc", [ValueError("bad value"), KeyError("missing"), TypeError("wrong type"), IndexError("out of range")])
async def test_an_unforeseen_error_in_a_handler_is_a_documented_400(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, exc: Exception
) -> None:
    async def broken(*_args: Any) -> Any:
        raise exc

    monkeypatch.setattr(jobs_routes, "load_job", broken)
    body = assert_problem(await api.get("/api/v1/jobs/some-job"), 400, "invalid-request")
    assert str(exc) not in body["detail"]


async def test_a_nats_error_in_a_handler_is_503(api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*_args: Any) -> Any:
        raise nats.errors.ConnectionClosedError

    monkeypatch.setattr(jobs_routes, "load_job", broken)
    assert_problem(await api.get("/api/v1/jobs/some-job"), 503, "unavailable", "NATS")


async def test_when_nats_goes_away_the_api_answers_503_and_stays_up(tmp_path: Path) -> None:
    async with bare_stack(tmp_path) as stack:
        http = stack.http
        assert (await http.get("/api/v1/jobs")).status_code == 200
        await stack.server.stop()
        for method, path, body in (
            ("GET", "/api/v1/jobs", None),
            ("GET", "/api/v1/jobs/j-1", None),
            ("GET", "/api/v1/nodes", None),
            ("POST", "/api/v1/jobs", {"command": "true"}),
            ("GET", "/api/v1/metrics/pipeline", None),
        ):
            resp = await asyncio.wait_for(http.request(method, path, json=body), 30)
            assert_problem(resp, 503, "unavailable")
        health = await http.get("/health")
        assert health.status_code == 200 and health.json()["nats"] is False


async def test_a_request_head_that_never_ends_is_cut_off(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.api.http_protocol import HeadsInTime

    monkeypatch.setattr(HeadsInTime, "head_timeout_s", 0.5)
    async with serve_api(stack.client) as http:
        host, port = http.base_url.host, http.base_url.port
        # Slowloris: a request line and one header, then nothing. The server hangs up.
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
        # A whole request is answered, however long it then waits for the next (keep-alive).
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 30)).startswith(b"HTTP/1.1 200")
        writer.close()


async def test_a_body_that_never_comes_is_408_and_a_client_that_leaves_is_not_our_error(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit: `Content-Length: 100` and then 11 bytes held the connection for good; a client that
    gave up was recorded in `api.called` as a 500, an internal error that never happened."""
    from orchestrator.api import bounds

    monkeypatch.setattr(bounds, "BODY_READ_S", 0.5)
    head = b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    async with serve_api(stack.client) as http:
        host, port = http.base_url.host, http.base_url.port
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(head + b'{"command":')
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
        assert answer.startswith(b"HTTP/1.1 408") and b"body-timeout" in answer, answer[:300]
        writer.close()
        # A client that leaves half way: on the record as 499, not 500.
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(head + b'{"command":')
        await writer.drain()
        writer.close()
        await writer.wait_closed()

        async def recorded() -> list[int]:
            calls = [r.event async for batch in stack.client.bus.read_records(subject="nexus.evt.api.>") for r in batch]
            found = [c.status for c in calls if isinstance(c, ApiCalled) and c.path == "/api/v1/jobs"]
            return found if len(found) == 2 else []

        statuses = await wait_for(recorded, what="both calls on the record")
        assert sorted(statuses) == [408, 499], statuses
