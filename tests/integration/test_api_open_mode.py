"""Attacks on a live API (issue 11): a real `nexus api` process on a free port over a real stack.

Without `--auth` the API must not be drivable by a web page the user visits
(DESIGN.md section 9): writes whose body is not JSON (a form, `text/plain`, no
Content-Type) are 415, a page elsewhere (`Origin`) and a DNS-rebound name
(`Host`) are 403, and none of them creates a job. This machine's own clients
(loopback `Host` and `Origin`, SSE, the OpenAPI document) are served as before.
With `--auth` every call needs a token, and the 415 rule holds too. And a NATS URL's
password never reaches the CLI's output or a daemon's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.console.assets import load
from tests.conftest import NEXUS, Stack, wait_for
from tests.integration.api_support import assert_problem
from tests.integration.test_api import read_sse

JSON = {"content-type": "application/json"}


@dataclass
class LiveApi:
    http: httpx.AsyncClient
    port: int


def _logged(log: Path, event: str) -> dict[str, Any] | None:
    """The first complete JSON log line of `event` written so far."""
    for line in log.read_text(errors="replace").split("\n")[:-1]:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == event:
                return entry
    return None


@contextlib.asynccontextmanager
async def spawned(log: Path, *args: str, cwd: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A Nexus process with its stderr in `log` (a file: nobody has to keep reading a pipe)."""
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=sink, cwd=cwd
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@contextlib.asynccontextmanager
async def live_api(stack: Stack, *extra: str) -> AsyncIterator[LiveApi]:
    """`nexus api --port 0` against the stack; its address is read from its `api.listening` log line."""
    log = stack.tmp / f"api-{secrets.token_hex(4)}.log"
    args = (NEXUS, "api", "--nats", stack.url, "--port", "0", "--log-json", *extra)
    async with spawned(log, *args, cwd=stack.tmp) as proc:

        def listening() -> dict[str, Any] | None:
            if proc.returncode is not None:
                raise AssertionError(f"nexus api exited {proc.returncode}:\n{log.read_text(errors='replace')}")
            return _logged(log, "api.listening")

        url = str((await wait_for(listening, 30, what="nexus api listening"))["url"])
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:
            yield LiveApi(http, int(url.rsplit(":", 1)[1]))


@pytest.fixture
async def open_api(stack: Stack) -> AsyncIterator[LiveApi]:
    async with live_api(stack) as api:
        yield api


async def _no_job(stack: Stack, job_id: str) -> bool:
    """Nothing at all was published about `job_id`: no request, so no job."""
    return await stack.client.bus.last_seq(subject=f"nexus.evt.job.{job_id}.>") == 0


def _job(job_id: str) -> bytes:
    return json.dumps({"command": f"echo pwned-{job_id}", "jobId": job_id}).encode()


# ---------------------------------------------------------------- what a web page can send


async def test_bodies_a_page_can_send_without_preflight_are_415_and_create_no_job(stack: Stack, open_api: LiveApi) -> None:
    http = open_api.http
    text = await http.post("/api/v1/jobs", content=_job("csrf-text"), headers={"content-type": "text/plain;charset=UTF-8"})
    assert_problem(text, 415, "unsupported-media-type", "application/json", "text/plain")
    form = await http.post("/api/v1/jobs", data={"command": "echo pwned", "jobId": "csrf-form"})
    assert_problem(form, 415, "unsupported-media-type", "application/x-www-form-urlencoded")
    multipart = await http.post("/api/v1/jobs", files={"command": (None, "echo pwned")}, data={"jobId": "csrf-multipart"})
    assert_problem(multipart, 415, "unsupported-media-type", "multipart/form-data")
    untyped = await http.post("/api/v1/jobs", content=_job("csrf-blob"))  # fetch() with a Blob body: no Content-Type
    assert "content-type" not in untyped.request.headers
    assert_problem(untyped, 415, "unsupported-media-type", "needs Content-Type: application/json")
    vendor = await http.post("/api/v1/jobs", content=_job("csrf-vendor"), headers={"content-type": "application/vnd.x+json"})
    assert_problem(vendor, 415, "unsupported-media-type")
    for job_id in ("csrf-text", "csrf-form", "csrf-multipart", "csrf-blob", "csrf-vendor"):
        assert await _no_job(stack, job_id), job_id
    assert_problem(await http.get("/api/v1/jobs/csrf-text"), 404, "unknown-job")


async def test_a_page_elsewhere_is_403_even_with_a_json_body_and_creates_no_job(stack: Stack, open_api: LiveApi) -> None:
    http = open_api.http
    for job_id, origin in (("origin-evil", "http://evil.example"), ("origin-port", f"http://evil.example:{open_api.port}"),
                           ("origin-null", "null"), ("origin-https", "https://attacker.test")):  # fmt: skip
        resp = await http.post("/api/v1/jobs", content=_job(job_id), headers={**JSON, "origin": origin})
        assert_problem(resp, 403, "forbidden", f"Origin {origin!r}", "--auth")
        assert await _no_job(stack, job_id), job_id
    # A real job, and a page elsewhere that tries to cancel it: refused, the job runs on.
    created = await http.post("/api/v1/jobs", json={"command": "sleep 0.5; echo survived"})
    assert created.status_code == 201, created.text
    job_id = created.json()["jobId"]
    cancel = await http.post(f"/api/v1/jobs/{job_id}/cancel", json={}, headers={"origin": "http://evil.example"})
    assert_problem(cancel, 403, "forbidden", "Origin 'http://evil.example'")
    assert (await stack.wait_job(job_id))["status"] == "succeeded"
    # Reading with a foreign Origin is refused as well.
    assert_problem(await http.get("/api/v1/jobs", headers={"origin": "http://evil.example"}), 403, "forbidden")


async def test_a_dns_rebound_host_reads_nothing_and_writes_nothing(stack: Stack, open_api: LiveApi) -> None:
    http = open_api.http
    created = await http.post("/api/v1/jobs", json={"command": "echo secret-output"})
    assert created.status_code == 201, created.text
    job_id = created.json()["jobId"]
    await stack.wait_job(job_id)
    paths = [f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/stream", "/api/v1/jobs", "/health", "/schema/openapi.json"]
    paths.append("/schema/swagger")
    for host in ("evil.example", f"evil.example:{open_api.port}", f"127.0.0.1.evil.example:{open_api.port}"):
        rebound = {"host": host}
        for path in paths:
            assert_problem(await http.get(path, headers=rebound), 403, "forbidden", f"Host {host!r} is not a loopback name", "--auth")
        resp = await http.post("/api/v1/jobs", content=_job("rebound"), headers={**JSON, **rebound})
        assert_problem(resp, 403, "forbidden", f"Host {host!r}")
    assert await _no_job(stack, "rebound")


async def _audited(stack: Stack, request_id: str) -> dict[str, Any] | None:
    async for batch in stack.client.bus.read_records(subject=f"nexus.evt.api.{request_id}.>"):
        for rec in batch:
            found: dict[str, Any] = json.loads(rec.raw)
            return found
    return None


async def test_the_console_files_are_served_to_this_machine_s_pages_only(open_api: LiveApi) -> None:
    """The console's page and assets, like every other path: a DNS-rebound name, a page elsewhere
    or an opaque `null` origin gets a 403, for GET and HEAD alike (they were served to anyone)."""
    http = open_api.http
    script = next(p for p in load() if p.startswith("/console/assets/") and p.endswith(".js"))
    for path in ("/", script, "/console/swagger/swagger-ui.css", "/console/no-such-file"):
        own = await http.get(path, headers={"host": f"localhost:{open_api.port}", "origin": f"http://localhost:{open_api.port}"})
        assert own.status_code == (404 if "no-such" in path else 200), path
        assert "x-request-id" not in own.headers  # served files are not audited
        for foreign in ({"host": "evil.example"}, {"origin": "null"}, {"origin": "http://evil.example"}):
            assert_problem(await http.get(path, headers=foreign), 403, "forbidden", "open mode serves loopback")
            head = await http.head(path, headers=foreign)
            assert head.status_code == 403 and not head.content, (path, foreign)


async def test_refusals_are_on_the_audit_record_with_their_reason(stack: Stack, open_api: LiveApi) -> None:
    for path in ("/api/v1/jobs", "/"):  # the console's page too
        refused = await open_api.http.get(path, headers={"host": "evil.example"})
        assert refused.status_code == 403
        audited = functools.partial(_audited, stack, refused.headers["x-request-id"])
        event = await wait_for(audited, 10, what="the refusal's api.called event")
        assert event["status"] == 403 and event["allowed"] is False and "evil.example" in event["reason"]
        assert event["path"] == path


# ---------------------------------------------------------------- this machine's own clients


async def test_loopback_hosts_and_origins_are_served_streams_and_docs_included(stack: Stack, open_api: LiveApi) -> None:
    http, port = open_api.http, open_api.port
    own = {"host": f"127.0.0.1:{port}", "origin": f"http://localhost:{port}"}
    created = await http.post(
        "/api/v1/jobs", content=_job("from-loopback"), headers={**own, "content-type": "application/json; charset=utf-8"}
    )
    assert created.status_code == 201, created.text
    assert (await stack.wait_job("from-loopback"))["status"] == "succeeded"
    for host in (f"localhost:{port}", "localhost", f"[::1]:{port}", f"127.0.0.2:{port}"):
        resp = await http.get("/api/v1/jobs/from-loopback", headers={"host": host, "origin": f"https://{host}"})
        assert resp.status_code == 200 and resp.json()["status"] == "succeeded", (host, resp.text)
    stream = await read_sse(http, "/api/v1/jobs/from-loopback/stream")
    assert stream.status == 200 and stream.events[-1].data["type"] == "done"
    assert b"pwned-from-loopback" in stream.output()
    doc = await http.get("/schema/openapi.json", headers={"host": f"localhost:{port}"})
    assert doc.status_code == 200 and "/api/v1/jobs" in doc.json()["paths"]
    assert (await http.get("/schema/swagger")).status_code == 200  # the Swagger page
    assert (await http.post("/api/v1/jobs/validate", json={"command": "echo hi"})).status_code == 200
    no_body = await http.post("/api/v1/jobs/from-loopback/cancel")  # an empty write needs no Content-Type
    assert_problem(no_body, 409, "wrong-state")


# ---------------------------------------------------------------- with --auth


async def test_with_auth_tokens_decide_and_non_json_bodies_are_still_415(stack: Stack, tmp_path: Path) -> None:
    token = secrets.token_hex(16)
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[token]]\nuser = "ops"\nrole = "operator"\ntoken = "{token}"\n')
    bearer = {"authorization": f"Bearer {token}"}
    async with live_api(stack, "--auth", str(tokens)) as api:
        assert_problem(await api.http.post("/api/v1/jobs", content=_job("auth-anon"), headers=JSON), 401, "unauthorized")
        text = await api.http.post("/api/v1/jobs", content=_job("auth-text"), headers={**bearer, "content-type": "text/plain"})
        assert_problem(text, 415, "unsupported-media-type")
        # A token holder may use any name for the server: the token is the proof, as before.
        named = {**bearer, **JSON, "host": "nexus.example:443", "origin": "https://console.example"}
        created = await api.http.post("/api/v1/jobs", content=_job("auth-named"), headers=named)
        assert created.status_code == 201, created.text
    assert await _no_job(stack, "auth-anon") and await _no_job(stack, "auth-text")
    assert (await stack.wait_job("auth-named"))["requested_by"] == "ops"


# ---------------------------------------------------------------- NATS URLs with passwords


async def test_a_nats_password_never_reaches_cli_output_or_a_daemon_log(stack: Stack) -> None:
    code, out, err = await stack.nexus("jobs", "--nats", "nats://u:secretpw@127.0.0.1:1")
    assert code != 0 and b"secretpw" not in out + err
    assert b"cannot reach NATS at nats://u:***@127.0.0.1:1" in err, err
    code, out, err = await stack.nexus("jobs", "--nats", "nats://t0psecrettoken@127.0.0.1:1")
    assert code != 0 and b"t0psecrettoken" not in out + err and b"nats://***@127.0.0.1:1" in err, err
    # A daemon keeps retrying and says so in its log: the URL there is masked too.
    log = stack.tmp / "agent.log"
    args = (NEXUS, "agent", "--node", "n1", "--nats", "nats://u:secretpw@127.0.0.1:1", "--log-json")
    async with spawned(log, *args, cwd=stack.tmp):
        said = await wait_for(lambda: _logged(log, "nats.unreachable"), 30, what="the agent's nats.unreachable log line")
    assert said["url"] == "nats://u:***@127.0.0.1:1"
    assert "secretpw" not in log.read_text()
