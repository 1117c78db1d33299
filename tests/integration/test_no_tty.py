"""`tty: false` jobs end to end (DESIGN §4): plain pipes, stdout and stderr kept apart on every
surface (the stored output, `nexus run --no-tty`, `nexus logs --raw`, the API and its SSE),
byte-exact, with exit codes, timeouts, cancel and secrets as for PTY jobs."""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
from datetime import UTC, datetime
from pathlib import Path

from bus.nats_bus import NatsBus
from orchestrator.client import NexusClient
from orchestrator.embedded import EmbeddedNats
from schemas import subjects
from schemas.events import JobRequested
from tests.conftest import Stack, wait_for
from tests.integration.processes import procs_with, token
from tests.integration.test_api import read_sse, running_api

# Every byte value, 1 MiB per stream, in uneven pieces, from a real process.
BINARY = (
    "import os\n"
    "block = bytes(range(256)) * 512\n"
    "for i in range(8):\n"
    "    os.write(1, block[i:] + block[:i])\n"
    "    os.write(2, block[::-1][i:])\n"
    "os.write(2, b'\\xff\\x00end')\n"
)
_BLOCK = bytes(range(256)) * 512
WANT_OUT = b"".join(_BLOCK[i:] + _BLOCK[:i] for i in range(8))
WANT_ERR = b"".join(_BLOCK[::-1][i:] for i in range(8)) + b"\xff\x00end"
BINARY_ARGV = ["python3", "-c", BINARY]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _stored(stack: Stack, job_id: str) -> dict[str, bytes]:
    found = {"stdout": b"", "stderr": b""}
    async for chunk in stack.client.bus.output_chunks(job_id):
        found[chunk.stream] += chunk.data
    return found


async def test_request_with_tty_false_stores_each_stream_byte_exact(stack: Stack) -> None:
    job_id = f"j-notty-{token()}"
    req = JobRequested(ts=datetime.now(UTC), command=shlex.join(BINARY_ARGV), tty=False)
    await stack.client.submit(job_id, req)
    row = await stack.wait_job(job_id)
    assert row["status"] == "succeeded", row
    stored = await _stored(stack, job_id)
    assert _digest(stored["stdout"]) == _digest(WANT_OUT)
    assert _digest(stored["stderr"]) == _digest(WANT_ERR)
    assert row["output_bytes"] == len(WANT_OUT) + len(WANT_ERR)
    dispatch = [r for r in await stack.client.history(job_id) if r.kind == "dispatch"]
    assert [getattr(r.event, "tty", None) for r in dispatch] == [False]


async def test_a_pty_job_still_has_one_merged_stream(stack: Stack) -> None:
    code, out, _ = await stack.nexus("run", "--quiet", "--", "sh", "-c", "echo out; echo err >&2; test -t 1 && echo tty")
    assert code == 0
    assert out == b"out\nerr\ntty\n"


async def test_nexus_run_no_tty_writes_the_jobs_stderr_to_stderr_byte_exact(stack: Stack) -> None:
    code, out, err = await stack.nexus("run", "--no-tty", "--quiet", "--", *BINARY_ARGV)
    assert code == 0, err[-2000:]
    assert _digest(out) == _digest(WANT_OUT)
    assert _digest(err) == _digest(WANT_ERR)


async def test_nexus_run_no_tty_exit_code_and_no_terminal(stack: Stack) -> None:
    code, out, err = await stack.nexus("run", "--no-tty", "--", "sh", "-c", "test -t 1 || echo notty; echo oops >&2; exit 5")
    assert code == 5
    assert out == b"notty\n"
    assert b"oops\n" in err and b"oops" not in out
    assert b"nexus: " in err  # our own status lines stay on stderr too


async def test_nexus_logs_raw_gives_each_streams_bytes(stack: Stack) -> None:
    code, out, _ = await stack.nexus("submit", "--no-tty", "--", *BINARY_ARGV)
    assert code == 0
    job_id = out.decode().strip()
    assert (await stack.wait_job(job_id))["status"] == "succeeded"
    code, out, err = await stack.nexus("logs", "--raw", job_id)
    assert code == 0
    assert _digest(out) == _digest(WANT_OUT)
    assert _digest(err) == _digest(WANT_ERR)


async def test_no_tty_timeout_kills_the_tree(stack: Stack) -> None:
    marker = f"1000.{token()}"
    script = f"sleep {marker} & setsid sleep {marker} & sleep {marker}"
    code, _, _ = await stack.nexus("run", "--no-tty", "--timeout", "1", "--", script)
    assert code == 124
    await wait_for(lambda: not procs_with(marker), 20, what="the job's sleeps are gone")


async def test_no_tty_cancel_kills_the_tree(stack: Stack) -> None:
    marker = f"1000.{token()}"
    code, out, _ = await stack.nexus("submit", "--no-tty", "--", f"sleep {marker} & setsid sleep {marker} & sleep {marker}")
    assert code == 0
    job_id = out.decode().strip()
    await wait_for(lambda: len(procs_with(marker)) == 3, 20, what="the job's sleeps run")
    code, _, err = await stack.nexus("cancel", job_id)
    assert code == 0, err
    assert (await stack.wait_job(job_id))["status"] == "cancelled"
    await wait_for(lambda: not procs_with(marker), 20, what="the job's sleeps are gone")


async def test_no_tty_secrets_are_masked_on_both_streams(stack: Stack) -> None:
    value = f"s3cr3t-{token()}"
    code, out, err = await stack.nexus(
        "run", "--no-tty", "--secret", f"DB_PASSWORD={value}", "--", 'echo "out $DB_PASSWORD"; echo "err $DB_PASSWORD" >&2'
    )
    assert code == 0, err
    assert value.encode() not in out and value.encode() not in err
    assert out.startswith(b"out ") and b"err " in err


async def test_api_accepts_tty_false_and_sse_names_the_stream(stack: Stack) -> None:
    async with running_api(stack) as api:
        resp = await api.post("/api/v1/jobs", json={"command": "printf 'to-out'; printf 'to-err' >&2", "tty": False})
        assert resp.status_code == 201, resp.text
        job_id = resp.json()["jobId"]
        await stack.wait_job(job_id)
        session = await read_sse(api, f"/api/v1/jobs/{job_id}/stream")
    chunks = [e.data for e in session.events if e.data["type"] == "output_chunk"]
    by_stream = {s: b"".join(base64.b64decode(c["dataB64"]) for c in chunks if c["stream"] == s) for s in ("stdout", "stderr")}
    assert by_stream == {"stdout": b"to-out", "stderr": b"to-err"}
    # A PTY job's chunks all say stdout.
    async with running_api(stack) as api:
        resp = await api.post("/api/v1/jobs", json={"command": "printf 'x' >&2"})
        job_id = resp.json()["jobId"]
        await stack.wait_job(job_id)
        session = await read_sse(api, f"/api/v1/jobs/{job_id}/stream")
    assert {e.data["stream"] for e in session.events if e.data["type"] == "output_chunk"} == {"stdout"}


async def test_bad_tty_value_is_refused_by_the_api(stack: Stack) -> None:
    async with running_api(stack) as api:
        resp = await api.post("/api/v1/jobs", json={"command": "true", "tty": "no"})
    assert resp.status_code in (400, 422), resp.text


def test_old_requests_without_tty_still_decode() -> None:
    from schemas import codec

    ev = codec.decode(subjects.job("j1", "requested"), b'{"command": "echo hi"}')
    assert isinstance(ev, JobRequested) and ev.tty is True


async def test_chunks_fit_a_server_with_a_small_max_payload(tmp_path: Path) -> None:
    # `auth` is the config file's text: here only a max_payload far below the agent's chunk sizes.
    server = EmbeddedNats(tmp_path / "js", port=-1, auth="max_payload: 65536\n")
    url = await server.start()
    bus = await NatsBus.connect(url, name="test-client")
    stack = Stack(url=url, db=tmp_path / "nexus.duckdb", tmp=tmp_path, client=NexusClient(bus))
    try:
        await stack.start_orchestrator()
        await stack.start_agent("small")
        for tty in (True, False):
            job_id = f"j-small-{tty}-{token()}"
            await stack.client.submit(job_id, JobRequested(ts=datetime.now(UTC), command=shlex.join(BINARY_ARGV), tty=tty))
            row = await stack.wait_job(job_id)
            assert row["status"] == "succeeded", row
            chunks = [c async for c in stack.client.bus.output_chunks(job_id)]
            assert max(len(c.data) for c in chunks) < 65536
            got = b"".join(c.data for c in chunks if c.stream == "stdout")
            if tty:  # one merged stream
                assert len(got) == len(WANT_OUT) + len(WANT_ERR)
            else:
                assert _digest(got) == _digest(WANT_OUT)
                assert _digest(b"".join(c.data for c in chunks if c.stream == "stderr")) == _digest(WANT_ERR)
    finally:
        for node in list(stack.agents):
            await stack.stop_agent(node)
        while stack.orchestrators:
            await stack.stop_orchestrator()
        await bus.close()
        await server.stop()


async def test_nexus_run_no_tty_json_keeps_the_streams_apart(stack: Stack) -> None:
    code, out, err = await stack.nexus("run", "--no-tty", "--json", "--", "printf out; printf err >&2")
    assert code == 0, err
    report = json.loads(out)
    assert (report["output"], report["stderr"], report["exit"]) == ("out", "err", 0)
