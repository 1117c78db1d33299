"""A job end to end through JetStream, the PTY agent and the DuckDB reducer, driven by the real CLI."""

from __future__ import annotations

import hashlib
import json

import msgspec
import nats

from orchestrator.app.metrics import pipeline_metrics
from orchestrator.client import new_job_id
from schemas import subjects
from schemas.events import JobRequested
from tests.conftest import Stack, read_logs_json, wait_for


async def test_echo_prints_hello_and_exits_zero(stack: Stack) -> None:
    code, out, err = await stack.nexus("run", "--", "echo", "hello")
    assert (code, out) == (0, b"hello\n"), err
    rows = await stack.client.query("SELECT status, exit_code, output_bytes FROM jobs")
    assert rows.rows == [["succeeded", 0, 6]]


async def test_exit_code_propagates(stack: Stack) -> None:
    code, _, err = await stack.nexus("run", "--", "sh", "-c", "exit 3")
    assert code == 3
    assert b"failed: exit code 3" in err


async def test_command_has_a_real_terminal(stack: Stack) -> None:
    code, out, _ = await stack.nexus("run", "--", "tty")
    assert code == 0
    assert out.startswith(b"/dev/pts/")


async def test_megabytes_of_output_arrive_complete_and_in_order(stack: Stack) -> None:
    # 3 MB of every byte value, in a known order, then compare digests.
    script = "import sys\nfor i in range(3*1024):\n    sys.stdout.buffer.write(bytes((i + j) % 256 for j in range(1024)))\n"
    expected = b"".join(bytes((i + j) % 256 for j in range(1024)) for i in range(3 * 1024))
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command=f"python3 -c '{script}'"))
    row = await stack.wait_job(job_id, timeout=60)
    assert row["status"] == "succeeded", row
    assert row["output_bytes"] == len(expected)
    assert 1 < row["chunks"] < len(expected) // 4096  # coalesced, not a message per read
    code, raw, _ = await stack.nexus("logs", job_id, "--raw")
    assert code == 0
    assert hashlib.sha256(raw).hexdigest() == hashlib.sha256(expected).hexdigest()


async def test_invalid_utf8_is_stored_byte_exact(stack: Stack) -> None:
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command=r"printf 'ok\377\376\000end'"))
    await stack.wait_job(job_id)
    _, raw, _ = await stack.nexus("logs", job_id, "--raw")
    assert raw == b"ok\xff\xfe\x00end"
    _, text, _ = await stack.nexus("logs", job_id)
    assert text == "ok\ufffd\ufffd\x00end".encode()


async def test_timeout_kills_the_whole_process_tree(stack: Stack) -> None:
    marker = "31337.5"
    code, _, err = await stack.nexus(
        "run", "--timeout", "1", "--", f"sh -c 'sleep {marker} & setsid sleep {marker} & sleep {marker}'"
    )
    assert code == 124, err
    rows = await stack.client.query("SELECT status, killed_by FROM jobs")
    assert rows.rows == [["timed_out", "timeout"]]

    def survivors() -> list[str]:
        import pathlib

        found = []
        for proc in pathlib.Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if marker.encode() in proc.read_bytes():
                    found.append(proc.parent.name)
            except OSError:
                continue
        return found

    await wait_for(lambda: not survivors(), timeout=10, what="no surviving sleep")


async def test_foreign_nats_client_can_submit_with_a_plain_publish(stack: Stack) -> None:
    nc = await nats.connect(stack.url)
    try:
        await nc.publish("nexus.evt.job.ext-1.requested", b'{"command": "echo hi"}')
        await nc.flush()
    finally:
        await nc.close()
    row = await stack.wait_job("ext-1")
    assert row["status"] == "succeeded"
    _, out, _ = await stack.nexus("logs", "ext-1")
    assert out == b"hi\n"


async def test_same_job_id_twice_runs_once(stack: Stack) -> None:
    nc = await nats.connect(stack.url)
    try:
        for _ in range(2):
            await nc.publish("nexus.evt.job.twice.requested", b'{"command": "echo once"}')
        await nc.flush()
    finally:
        await nc.close()
    await stack.wait_job("twice")
    await wait_for(lambda: stack.orchestrator.applied_seq >= 0)
    history = await stack.client.history("twice")
    kinds = [r.subject.split(".")[4] for r in history]
    assert kinds.count("requested") == 2  # both publishes are in the log...
    assert kinds.count("started") == 1  # ...but the command ran once
    rows = await stack.client.query("SELECT error FROM events WHERE job_id = 'twice' AND type = 'job.requested' ORDER BY seq")
    assert rows.rows[0] == [None]
    assert "duplicate" in rows.rows[1][0]


async def test_malformed_events_are_kept_with_a_reason_and_nothing_stops(stack: Stack) -> None:
    nc = await nats.connect(stack.url)
    try:
        await nc.publish("nexus.evt.job.bad-1.requested", b"{not json")
        await nc.publish("nexus.evt.job.bad-2.requested", b'{"tool": "bash"}')
        await nc.publish("nexus.evt.job.bad-3.exited", b'{"exit_code": "three"}')
        await nc.publish("nexus.evt.job.bad-4.requested", b'{"type": "job.exited", "command": "x"}')
        await nc.publish("nexus.evt.weird.thing", b"\xff\xfe")
        await nc.flush()
    finally:
        await nc.close()
    for job_id in ("bad-1", "bad-2", "bad-4"):
        row = await stack.wait_job(job_id)
        assert row["status"] == "rejected"
        assert "does not decode" in row["reason"]
    rows = await stack.client.query("SELECT subject, error FROM events WHERE error IS NOT NULL ORDER BY seq")
    errors = dict(rows.rows)
    assert "command" in errors["nexus.evt.job.bad-2.requested"]
    assert "$.exit_code" in errors["nexus.evt.job.bad-3.exited"]
    assert "nexus.evt.weird.thing" in errors
    code, out, _ = await stack.nexus("run", "--", "echo", "still alive")
    assert (code, out) == (0, b"still alive\n")


async def test_unknown_node_is_rejected_with_a_clear_reason(stack: Stack) -> None:
    code, _, err = await stack.nexus("run", "--node", "nope", "--", "true")
    assert code == 125
    assert b"node 'nope' is not registered" in err


async def test_cli_json_outputs(stack: Stack) -> None:
    code, out, _ = await stack.nexus("submit", "--json", "--id", "js-1", "--", "echo", "x")
    assert code == 0 and json.loads(out)["job_id"] == "js-1"
    await stack.wait_job("js-1")
    for args in (["jobs", "--json"], ["show", "js-1", "--json"], ["history", "js-1", "--json"],
                 ["sql", "SELECT count(*) AS n FROM jobs", "--json"], ["nodes", "--json"]):  # fmt: skip
        code, out, err = await stack.nexus(*args)
        assert code == 0, (args, err)
        json.loads(out)
    code, out, err = await stack.nexus("logs", "js-1", "--json")  # JSON lines: output_chunk..., end
    assert code == 0 and read_logs_json(out).data == {"stdout": b"x\n"}, err
    _, out, _ = await stack.nexus("show", "js-1", "--json")
    assert json.loads(out)["status"] == "succeeded"


async def test_missing_job_and_bad_flags_give_one_line_errors(stack: Stack) -> None:
    for args in (["show", "nope"], ["logs", "nope"], ["history", "nope"], ["cancel", "nope"]):
        code, _out, err = await stack.nexus(*args)
        assert code == 1, args
        assert err.decode().strip().count("\n") == 0 and b"Traceback" not in err, err
    code, _, err = await stack.nexus("run", "--bogus-flag", "--", "true")
    assert code == 2 and b"Traceback" not in err
    code, _, err = await stack.nexus("jobs", "--nats", "nats://127.0.0.1:1")
    assert code == 1 and b"cannot reach NATS" in err and b"Traceback" not in err
    code, _, err = await stack.nexus("sql", "DELETE FROM jobs")
    assert code == 1 and b"only SELECT" in err


async def test_cancel_kills_a_running_job(stack: Stack) -> None:
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command="sleep 600"))
    await wait_for(lambda: _status_is(stack, job_id, "running"), what="job running")
    code, _, _ = await stack.nexus("cancel", job_id)
    assert code == 0
    row = await stack.wait_job(job_id)
    assert row["status"] == "cancelled"


async def _status_is(stack: Stack, job_id: str, status: str) -> bool:
    row = await stack.job(job_id)
    return bool(row and row["status"] == status)


def test_subject_of_requests() -> None:
    assert subjects.job("a", "requested") == "nexus.evt.job.a.requested"


def _keys(value: object, at: str = "") -> set[str]:
    """Every key path in a JSON value (list items under `[]`)."""
    if isinstance(value, dict):
        return {p for k, v in value.items() for p in {f"{at}.{k}", *_keys(v, f"{at}.{k}")}}
    if isinstance(value, list):
        return {p for v in value for p in _keys(v, f"{at}[]")}
    return set()


async def test_metrics_verb_matches_the_log(stack: Stack) -> None:
    for command in ("true", "exit 2", "true"):
        await stack.client.submit(new_job_id(), JobRequested(command=command))
    async def three_done() -> bool:
        rows = await stack.client.query("SELECT count(*) FROM jobs WHERE status IN ('succeeded', 'failed')")
        return rows.rows[0][0] == 3

    await wait_for(three_done, what="3 jobs done")
    code, out, err = await stack.nexus("metrics", "--json")
    assert code == 0, err
    body = json.loads(out)
    assert (body["execution"]["totalJobs"], body["execution"]["successfulJobs"], body["execution"]["failedJobs"]) == (3, 2, 1)
    assert body["analysis"]["totalValidations"] == 3
    # Exactly the API's shape (GET /api/v1/metrics/pipeline): its response model's names, every one.
    api = msgspec.to_builtins(await pipeline_metrics(stack.client))
    assert _keys(body) == _keys(api) and "generatedAt" in body and "byUser" in body["execution"], _keys(body) ^ _keys(api)
    code, out, err = await stack.nexus("metrics", "--by", "node")
    assert code == 0, err
    assert b"Execution by node" in out and b"node-1" in out and b"Job step latency" in out


async def test_metrics_since_and_by_user(stack: Stack) -> None:
    await stack.client.submit(new_job_id(), JobRequested(command="true", requested_by="ann"))
    await stack.client.submit(new_job_id(), JobRequested(command="true", requested_by="bob"))

    async def two_done() -> bool:
        rows = await stack.client.query("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
        return rows.rows[0][0] == 2

    await wait_for(two_done, what="2 jobs done")
    code, out, err = await stack.nexus("metrics", "--json", "--by", "user")
    assert code == 0, err
    assert sorted(g["name"] for g in json.loads(out)["execution"]["byUser"]) == ["ann", "bob"]
    code, out, _ = await stack.nexus("metrics", "--json", "--since", "2h")
    assert json.loads(out)["execution"]["totalJobs"] == 2
    code, out, _ = await stack.nexus("metrics", "--json", "--since", "2999-01-01T00:00:00Z")
    assert json.loads(out)["execution"]["totalJobs"] == 0
    code, _, err = await stack.nexus("metrics", "--since", "yesterday")
    assert code == 2 and b"--since" in err
