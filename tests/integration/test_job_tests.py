"""The test phase on real jobs: assertions judged by the orchestrator and checked on the node."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.client import new_job_id
from schemas.events import JobRequested
from schemas.values import CommandTest, ExitCodeTest, FileExistsTest, HttpOkTest, OutputContainsTest
from tests.conftest import Stack, wait_for


@pytest.fixture
def http_url() -> Iterator[str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_all_kinds_of_assertions_pass_and_are_recorded(stack: Stack, tmp_path, http_url: str) -> None:  # type: ignore[no-untyped-def]
    job_id = new_job_id()
    tests = [
        ExitCodeTest(expected=0),
        OutputContainsTest(pattern=r"Build successful"),
        OutputContainsTest(pattern=r"ERROR", negate=True),
        FileExistsTest(path="dist/index.html"),
        HttpOkTest(url=http_url, timeout_s=5),
        CommandTest(command="test -s dist/index.html"),
    ]
    command = "mkdir -p dist && echo '<html>' > dist/index.html && printf '\\033[32mBuild successful\\033[0m\\n'"
    await stack.client.submit(job_id, JobRequested(command=command, working_dir=str(tmp_path), tests=tests))
    row = await stack.wait_job(job_id)
    assert row["status"] == "succeeded", row["reason"]
    assert row["tests_passed"] is True
    rows = await stack.client.query("SELECT type, passed FROM job_tests WHERE job_id = ? ORDER BY n", [job_id])
    assert rows.rows == [[t, True] for t in ("exit_code", "output_contains", "output_contains", "file_exists", "http_ok", "command")]


async def test_a_failed_assertion_fails_the_job_with_expected_and_actual(stack: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = await stack.nexus(
        "run", "--cwd", str(tmp_path), "--expect-output", "deployed to production", "--expect-file", "missing.txt", "--", "echo built"
    )
    assert code == 1, err
    assert b"tests failed" in err
    rows = await stack.client.query("SELECT type, passed, expected, actual FROM job_tests ORDER BY n")
    assert rows.rows[0][:2] == ["output_contains", False] and "no match" in rows.rows[0][3]
    assert rows.rows[1] == ["file_exists", False, "missing.txt exists", "missing"]


async def test_tests_from_a_yaml_file(stack: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = tmp_path / "tests.yaml"
    spec.write_text("tests:\n  - {type: exit_code, expected: 3}\n  - {type: output_contains, pattern: 'bye'}\n")
    code, _, err = await stack.nexus("run", "--tests", str(spec), "--", "echo bye; exit 3")
    assert code == 3, err  # `run` exits with the command's code; the job succeeded since 3 was expected
    _, out, _ = await stack.nexus("jobs", "--json")
    assert json.loads(out)[0]["status"] == "succeeded"
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {type: exit_kode}\n")
    code, _, err = await stack.nexus("run", "--tests", str(bad), "--", "true")
    assert code == 1 and b"bad.yaml" in err and b"Traceback" not in err


async def test_tests_run_later_on_a_finished_job(stack: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command="echo 'Build successful' > build.log; echo done", working_dir=str(tmp_path)))
    await stack.wait_job(job_id)
    spec = tmp_path / "later.yaml"
    spec.write_text(
        "- {type: exit_code, expected: 0}\n- {type: output_contains, pattern: done}\n"
        f"- {{type: file_exists, path: {tmp_path}/build.log}}\n"
    )
    code, out, err = await stack.nexus("test", job_id, "--tests", str(spec), "--json")
    assert code == 0, err
    body = json.loads(out)
    assert body["passed"] is True and [r["type"] for r in body["results"]] == ["exit_code", "output_contains", "file_exists"]
    code, out, err = await stack.nexus("test", job_id, "--expect-file", str(tmp_path / "nope.txt"))
    assert code == 1 and b"FAIL" in out, err
    row = await stack.job(job_id)
    assert row is not None and row["status"] == "succeeded" and row["tests_passed"] is False  # the latest run's results
    verification = await stack.client.query("SELECT count(*) FROM jobs WHERE parent = ? AND metadata->>'verifies' = ?", [job_id, job_id])
    assert verification.rows == [[2]]
    code, _, err = await stack.nexus("test", "no-such-job", "--expect-exit", "0")
    assert code == 1 and b"no job" in err


async def test_tests_on_a_job_cancelled_while_running_say_why_there_is_no_exit_code(stack: Stack, tmp_path: Path) -> None:
    """Not `got None`: the same words in `nexus test` and in the API's results (both read `tested`)."""
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command="sleep 300"))

    async def running() -> bool:
        return (await stack.job(job_id) or {}).get("status") == "running"

    await wait_for(running, what="the job running")
    code, _, err = await stack.nexus("cancel", job_id)
    assert code == 0, err
    assert (await stack.wait_job(job_id))["status"] == "cancelled"
    spec = tmp_path / "t.yaml"
    spec.write_text("- {type: exit_code, expected: 0}\n")
    code, out, err = await stack.nexus("test", job_id, "--tests", str(spec))
    assert code == 1, err
    assert "FAIL  exit_code: expected 0, got no exit code (killed by signal 15, cancelled)" in out.decode(), out
    row = await stack.job(job_id)
    assert row is not None and [r["actual"] for r in json.loads(row["test_results"])] == ["no exit code (killed by signal 15, cancelled)"]


async def test_a_retest_and_a_rollback_run_in_the_jobs_working_dir_with_its_env(stack: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Review: the verification job `t-cwd-t...` had no working_dir (FAIL file_exists: f1 missing), and
    # the rollback touched its file in the agent's own directory.
    from tests.integration.api_support import serve_api

    wd = tmp_path / "wd"
    wd.mkdir()
    code, _, err = await stack.nexus("run", "--id", "t-cwd", "--cwd", str(wd), "-e", "MARK=m1", "--expect-file", "f1", "--", "touch f1")
    assert code == 0, err
    later = tmp_path / "later.yaml"
    later.write_text("- {type: file_exists, path: f1}\n- {type: command, command: 'test \"$MARK\" = m1 && test -e f1'}\n")
    code, out, err = await stack.nexus("test", "t-cwd", "--tests", str(later), "--json")
    assert code == 0 and json.loads(out)["passed"] is True, out + err
    rows = await stack.client.query("SELECT working_dir FROM jobs WHERE parent = 't-cwd' AND metadata->>'verifies' = 't-cwd'")
    assert rows.rows == [[str(wd)]]
    async with serve_api(stack.client) as http:
        resp = await http.post("/api/v1/jobs/t-cwd/rollback", json={"command": "touch rb_$MARK"})
        assert resp.status_code == 202, resp.text
        assert (await stack.wait_job(resp.json()["jobId"]))["status"] == "succeeded"
    assert (wd / "rb_m1").exists()


async def test_show_carries_the_tests_and_their_results_as_the_api_does(stack: Stack) -> None:
    # Review: `nexus show --json` had no tests, tests_passed, test_results, after, priority, prefer; and the
    # text of a job whose latest re-test failed said only `status succeeded`.
    from tests.integration.api_support import serve_api

    code, _, err = await stack.nexus(
        "run", "--id", "shown", "--priority", "3", "--prefer", "region=eu", "--expect-output", "nope", "--", "echo hi"
    )
    assert code == 1, err
    code, out, err = await stack.nexus("show", "shown", "--json")
    assert code == 0, err
    row = json.loads(out)
    assert row["tests"] == [{"type": "output_contains", "pattern": "nope", "stream": "stdout", "negate": False}]
    assert row["tests_passed"] is False and [r["passed"] for r in row["test_results"]] == [False]
    assert (row["priority"], row["prefer"], row["after"], row["status"]) == (3, {"region": "eu"}, [], "failed")
    async with serve_api(stack.client) as http:
        api = (await http.get("/api/v1/jobs/shown")).json()
    camel = {k.split("_")[0] + "".join(p.title() for p in k.split("_")[1:]) for k in row} - {"timeoutS"}
    assert set(api) - {"streamEndpoint", "timeoutSeconds"} == camel

    code, _, err = await stack.nexus("run", "--id", "retested", "--", "echo hi")
    assert code == 0, err
    code, _, err = await stack.nexus("test", "retested", "--expect-output", "nope")
    assert code == 1, err
    code, out, err = await stack.nexus("show", "retested")
    text = out.decode()
    assert code == 0 and "succeeded" in text, err
    assert "tests_passed" in text and "False" in text and "FAIL  output_contains: expected match for /nope/" in text, text


async def test_nexus_rollback_runs_the_undo_on_the_same_node_as_the_api_does(stack: Stack, tmp_path: Path) -> None:
    marker = tmp_path / "deployed"
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command=f"touch {marker}", metadata={"rollback": f"rm {marker}"}))
    assert (await stack.wait_job(job_id))["status"] == "succeeded" and marker.exists()
    code, out, err = await stack.nexus("rollback", job_id, "--json")
    assert code == 0, err
    said = json.loads(out)
    assert said["rollback_of"] == job_id
    assert (await stack.wait_job(said["job_id"]))["status"] == "succeeded"
    assert not marker.exists()
    # Nothing to undo with: a clear error, nothing submitted.
    plain = new_job_id()
    await stack.client.submit(plain, JobRequested(command="true"))
    await stack.wait_job(plain)
    code, out, err = await stack.nexus("rollback", plain)
    assert code != 0 and b"rollback" in err and b"Traceback" not in err, err
    # An undo the analysis refuses at once (it can never run): said, and exit 125, as `nexus submit` does.
    code, out, err = await stack.nexus("rollback", job_id, "-c", "echo 'unterminated", "--json")
    said = json.loads(out)
    assert (code, said["status"]) == (125, "rejected"), (out, err)
    assert (await stack.job(said["job_id"]))["status"] == "rejected"  # type: ignore[index]
