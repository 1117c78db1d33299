"""What a person at the terminal hits: a taken API port, piped stdin, approvals, signals,
cancelling a finished job, bad choices, and analysis findings shown when submitting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import uuid
from pathlib import Path

import pytest

from bus.nats_bus import NatsBus
from orchestrator.cli import daemons
from orchestrator.client import new_job_id
from orchestrator.core.policy import Policy
from orchestrator.service import Orchestrator
from orchestrator.store import DuckDBStore
from schemas import subjects
from schemas.events import JobRequested
from tests.conftest import NEXUS, Stack, wait_for


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


async def _read_until(stream: asyncio.StreamReader, pattern: bytes, timeout: float = 30.0) -> bytes:
    """Lines read up to and including the first that matches `pattern`."""
    seen = b""
    async with asyncio.timeout(timeout):
        while True:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"stream ended before {pattern!r}; it said:\n{seen.decode(errors='replace')}")
            seen += line
            if re.search(pattern, line):
                return seen


async def _spawn(stack: Stack, *args: str, stdout: int = asyncio.subprocess.PIPE) -> asyncio.subprocess.Process:
    env = {**os.environ, "NEXUS_NATS_URL": stack.url}
    return await asyncio.create_subprocess_exec(
        NEXUS, *args, stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=asyncio.subprocess.PIPE, env=env, cwd=stack.tmp
    )


async def _reap(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


# ---------------------------------------------------------------- nexus up


async def test_up_fails_fast_naming_the_address_when_the_api_port_is_taken(tmp_path: Path) -> None:
    data = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k != "NEXUS_NATS_URL"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            NEXUS, "up", "--data", str(data), "--port", "-1", "--api-port", str(port),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=env, cwd=tmp_path, start_new_session=True,
        )  # fmt: skip
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
    assert proc.returncode == 1, err
    text = err.decode()
    assert f"127.0.0.1:{port}" in text and "Address already in use" in text and "Traceback" not in text, text
    assert not (data / "jetstream").exists(), "nats-server was started before the API port was checked"
    assert _processes_mentioning(str(data)) == []


async def test_a_stop_whose_cancellation_was_swallowed_still_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    # nats-py's wait_for can swallow a cancellation (Python 3.11); the task then enters a
    # TaskGroup nobody cancels. Shutdown used to wait for it forever, deaf to SIGINT/SIGTERM.
    monkeypatch.setattr(daemons, "STOP_GRACE_S", 0.2, raising=False)

    async def swallows_the_first_cancel() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # what nats-py's wait_for does now and then
            await asyncio.Event().wait()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(asyncio.Event().wait())

    async def fails() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("cannot listen")

    loop = asyncio.get_running_loop()
    started = loop.time()
    stuck = asyncio.create_task(swallows_the_first_cancel())
    with pytest.raises(RuntimeError, match="cannot listen"):
        async with asyncio.timeout(10):  # only a safety net: the old shutdown waited until this
            await daemons._until_signal(stuck, asyncio.create_task(fails()))
    assert stuck.done()
    assert loop.time() - started < 5


# ---------------------------------------------------------------- stdin


async def test_piped_stdin_is_not_forwarded_the_job_reads_eof_and_the_user_is_told(stack: Stack) -> None:
    code, out, err = await stack.nexus("run", "--", "read y; echo got:[$y]", stdin=b"x\n", timeout=30)
    assert code == 0, err
    assert b"got:[]" in out
    assert b"stdin is not forwarded" in err and b"end-of-file" in err
    code, out, err = await stack.nexus("submit", "--", "true", stdin=b"data\n")
    assert code == 0 and b"stdin is not forwarded" in err
    code, _, err = await stack.nexus("run", "--", "echo", "hi")  # stdin is /dev/null: nothing to say
    assert code == 0 and b"stdin" not in err
    _, help_text, _ = await stack.nexus("run", "--help")
    assert b"Stdin is not forwarded" in help_text


# ---------------------------------------------------------------- approvals


async def _orchestrator_with(stack: Stack, policy: Policy) -> None:
    await stack.stop_orchestrator()
    bus = await NatsBus.connect(stack.url, name="test-orchestrator", daemon=True)
    store = DuckDBStore(stack.db)
    orch = Orchestrator(bus, store, node_ttl_s=5.0, policy=policy)
    task = asyncio.create_task(orch.run())
    stack.orchestrators.append((orch, task, bus, store))
    await wait_for(lambda: orch.caught_up.is_set() or task.done(), what="orchestrator caught up")


async def test_run_says_it_waits_for_approval_why_and_for_whom_then_ends_clearly_when_denied(stack: Stack) -> None:
    await _orchestrator_with(stack, Policy(approvers=["alice", "bob"]))
    await stack.start_agent("prod-1", labels={"env": "prod"})
    job_id = new_job_id()
    proc = await _spawn(stack, "run", "--id", job_id, "--label", "env=prod", "--", f"rm -rf /srv/nexus-test-{uuid.uuid4().hex}")
    assert proc.stderr is not None
    try:
        said = await _read_until(proc.stderr, rb"nexus (approve|deny)")
        assert b"waiting for approval" in said and b"critical command on a production node" in said, said
        assert b"may approve: alice, bob" in said and f"nexus approve {job_id}".encode() in said
        # Someone the policy does not name: the denial is kept in the log and changes nothing.
        code, _, err = await stack.nexus("deny", job_id, "--reason", "spite", env={"USER": "mallory"})
        assert code == 1 and b"'mallory' may not deny this job" in err and b"alice, bob" in err, err
        assert (await stack.job(job_id))["status"] == "approval_required"  # `deny` waited for the verdict
        code, _, err = await stack.nexus("deny", job_id, "--reason", "not in the change window", env={"USER": "alice"})
        assert code == 0 and f"job {job_id} denied by alice; now denied".encode() in err, err
        rest = await asyncio.wait_for(proc.stderr.read(), 30)
        assert await asyncio.wait_for(proc.wait(), 30) == 125
    finally:
        await _reap(proc)
    assert b"Traceback" not in rest and b"AssertionError" not in rest, rest
    assert f"job {job_id} denied: by alice: not in the change window".encode() in rest, rest


async def test_the_readme_approval_example_runs_once_approved(stack: Stack) -> None:
    await stack.start_agent("prod-1", labels={"env": "prod"})
    job_id = new_job_id()
    command = "rm -rf /srv/nexus-demo-old"  # the README's: critical on production, harmless here
    proc = await _spawn(stack, "run", "--id", job_id, "--label", "env=prod", "--", command)
    assert proc.stderr is not None
    try:
        said = await _read_until(proc.stderr, rb"nexus (approve|deny)")
        assert b"may approve: anyone" in said, said
        code, _, err = await stack.nexus("approve", job_id, "--reason", "change 42")
        assert code == 0 and f"job {job_id} approved by ".encode() in err and b"; now " in err, err
        rest = await asyncio.wait_for(proc.stderr.read(), 30)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, rest
    finally:
        await _reap(proc)
    assert b"approved by" in rest and b"change 42" in rest and b"started on prod-1" in rest, rest


# ---------------------------------------------------------------- signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
async def test_a_stop_signal_to_a_following_run_cancels_the_job_and_says_so(stack: Stack, sig: signal.Signals) -> None:
    job_id = new_job_id()
    proc = await _spawn(stack, "run", "--id", job_id, "--", "sleep 600")
    assert proc.stderr is not None
    try:
        await _read_until(proc.stderr, rb"started on")
        proc.send_signal(sig)
        rest = await asyncio.wait_for(proc.stderr.read(), 30)
        assert await asyncio.wait_for(proc.wait(), 30) == 130, rest
    finally:
        await _reap(proc)
    assert f"{sig.name}: cancelling job {job_id}".encode() in rest, rest
    assert (await stack.wait_job(job_id))["status"] == "cancelled"


async def test_a_second_signal_stops_following_and_the_cancel_stands(stack: Stack) -> None:
    job_id = new_job_id()
    proc = await _spawn(stack, "run", "--id", job_id, "--", "sleep 600")
    assert proc.stderr is not None
    try:
        await _read_until(proc.stderr, rb"started on")
        await stack.stop_orchestrator()  # nobody acts on the cancel: only a second signal ends `nexus run`
        proc.send_signal(signal.SIGTERM)
        await _read_until(proc.stderr, rb"SIGTERM: cancelling job")
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stderr.read(), 30)
        assert await asyncio.wait_for(proc.wait(), 30) == 128 + signal.SIGTERM, rest
    finally:
        await _reap(proc)
    assert f"stopped following job {job_id}".encode() in rest, rest
    kinds = [r.subject.rsplit(".", 1)[1] for r in await stack.client.history(job_id)]
    assert kinds.count("cancel_requested") == 1, kinds


async def test_output_nobody_reads_any_more_cancels_the_job(stack: Stack) -> None:
    job_id = new_job_id()
    read_end, write_end = os.pipe()
    proc = await _spawn(stack, "run", "--id", job_id, "--", "while true; do echo tick; sleep 0.05; done", stdout=write_end)
    os.close(write_end)
    assert proc.stderr is not None
    try:
        await _read_until(proc.stderr, rb"started on")
        os.close(read_end)  # like `| head -1` exiting
        rest = await asyncio.wait_for(proc.stderr.read(), 30)
        assert await asyncio.wait_for(proc.wait(), 30) == 130, rest
    finally:
        await _reap(proc)
    assert b"stdout closed: cancelling job" in rest and b"Traceback" not in rest, rest
    assert (await stack.wait_job(job_id))["status"] == "cancelled"


async def test_json_output_nobody_reads_any_more_cancels_the_job_too(stack: Stack) -> None:
    """`nexus run --json` writes the output as it comes now: a closed stdout cancels the job, as
    without --json (it exited 1 and left the job running)."""
    job_id = new_job_id()
    read_end, write_end = os.pipe()
    proc = await _spawn(stack, "run", "--json", "--id", job_id, "--", "while true; do echo tick; sleep 0.05; done", stdout=write_end)
    os.close(write_end)
    assert proc.stderr is not None
    try:
        first = await asyncio.wait_for(asyncio.to_thread(os.read, read_end, 64), 30)  # its output has begun
        assert first.startswith(b'{"job_id":'), first
        os.close(read_end)  # like `| head -c 100` exiting
        rest = await asyncio.wait_for(proc.stderr.read(), 30)
        assert await asyncio.wait_for(proc.wait(), 30) == 130, rest
    finally:
        await _reap(proc)
    assert b"Traceback" not in rest, rest
    assert (await stack.wait_job(job_id))["status"] == "cancelled"


# ---------------------------------------------------------------- cancel, choices


async def test_cancel_on_a_finished_job_fails_clearly_and_records_nothing(stack: Stack) -> None:
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command="true"))
    await stack.wait_job(job_id)
    before = await stack.client.bus.last_seq(subject=subjects.job_all(job_id))
    code, _, err = await stack.nexus("cancel", job_id)
    assert code == 1
    assert err.decode().strip() == f"nexus: error: job {job_id} already finished (succeeded); there is nothing to cancel"
    assert await stack.client.bus.last_seq(subject=subjects.job_all(job_id)) == before


async def test_run_and_submit_refuse_a_job_id_shaped_like_a_pipeline_step_s(stack: Stack) -> None:
    """Stored first, a job of that id would count for the step when the orchestrator asks for it."""
    for verb in ("run", "submit"):
        for job_id in ("deploy-s0-0", "deploy-s1-hc-0-2", "deploy-s1-rb-0"):
            code, _, err = await stack.nexus(verb, "--id", job_id, "--", "echo", "hi")
            assert code == 2 and b"pipeline step" in err and b"Traceback" not in err, (verb, err)
            assert await stack.client.bus.last_seq(subject=subjects.job_all(job_id)) == 0


async def test_enum_like_options_refuse_unknown_values_and_list_the_choices(stack: Stack) -> None:
    code, out, err = await stack.nexus("jobs", "--status", "nonsense")
    assert code == 2 and b"no jobs" not in out + err
    assert b"nonsense" in err and b"succeeded" in err and b"approval_required" in err, err
    code, _, err = await stack.nexus("agent", "--node", "x", "--log-level", "loud")
    assert code == 2 and b"Traceback" not in err and b"warning" in err, err
    _, help_text, _ = await stack.nexus("jobs", "--help")
    assert b"<requested|validated|" in help_text  # the choices, listed


# ---------------------------------------------------------------- analysis findings


async def test_run_and_submit_show_the_analysis_findings_before_the_output(stack: Stack) -> None:
    await _orchestrator_with(stack, Policy(approval_severity_anywhere="never"))  # hold on production only (default: anywhere)
    command = f"rm -rf /srv/nexus-test-{uuid.uuid4().hex}; echo done"  # critical, but not on production: runs
    code, out, err = await stack.nexus("run", "--", command)
    assert (code, out) == (0, b"done\n"), err
    text = err.decode()
    assert re.search(r"analysis: critical\s+destructive_command: .*/srv/nexus-test-", text), text
    assert text.index("analysis: critical") < text.index("started on")
    code, out, err = await stack.nexus("submit", "--", command)
    assert code == 0 and re.fullmatch(rb"j-[0-9a-f]+-[0-9a-f]+\n", out), out
    assert b"analysis: critical" in err
    # Rejected at once: the id is printed, and the exit says it will never run (it said 0).
    code, out, err = await stack.nexus("submit", "--node", "nope", "--", "true")
    assert code == 125 and b"rejected: node 'nope' is not registered" in err, err
    assert re.fullmatch(rb"j-[0-9a-f]+-[0-9a-f]+\n", out), out
    code, out, err = await stack.nexus("submit", "--json", "--", 'echo "unclosed')
    assert code == 125 and json.loads(out)["status"] == "rejected", (out, err)


async def test_a_job_after_one_that_does_not_exist_is_refused_at_submit(stack: Stack) -> None:
    """It was accepted and stayed queued for ever."""
    before = await stack.client.bus.last_seq()
    code, out, err = await stack.nexus("submit", "--after", "nope", "--", "echo", "x")
    assert code == 2 and out == b"" and b"no job 'nope'" in err and b"Traceback" not in err, err
    assert await stack.client.bus.last_seq() == before


async def test_a_job_after_one_that_failed_is_told_rejected_at_submit(stack: Stack) -> None:
    """Audit: `nexus submit --after FAILED` exited 0 saying `validated`; the job was rejected
    (dependency_failed) the same millisecond. It never runs: exit 125, as for any job rejected at once."""
    code, _, _ = await stack.nexus("run", "-q", "--id", "dep-fails", "--", "exit 3")
    assert code == 3
    code, out, err = await stack.nexus("submit", "--json", "--after", "dep-fails", "--", "echo", "x")
    assert code == 125 and json.loads(out)["status"] == "rejected", (out, err)
    code, _, err = await stack.nexus("submit", "--after", "dep-fails", "--", "echo", "x")
    assert code == 125 and b"did not succeed: dep-fails" in err, err
    # One that waits for a job still running is submitted (0), queued to wait for it.
    code, out, err = await stack.nexus("submit", "--id", "dep-runs", "--", "sleep 5")
    assert code == 0, err
    code, out, err = await stack.nexus("submit", "--json", "--after", "dep-runs", "--", "echo", "y")
    assert code == 0 and json.loads(out)["status"] == "queued", (out, err)
    await stack.nexus("cancel", "dep-runs")


async def test_logs_says_why_a_job_has_no_output(stack: Stack) -> None:
    """Audit: `nexus logs -f` of a held job waited in silence, and `nexus logs` of a job that never
    ran printed nothing at all; both now say where the job stands, on stderr (stdout stays output)."""
    code, _, err = await stack.nexus("submit", "--id", "logs-held", "--", "rm -rf /nexus-logs-test-nothing")
    assert code == 0, err
    await wait_for(lambda: (j := stack.orchestrator.jobs.get("logs-held")) and j.status == "approval_required", what="the hold")
    code, out, err = await stack.nexus("logs", "logs-held")
    assert code == 0 and out == b"" and b"note: logs-held has no output: it is approval_required" in err, err
    env = {**os.environ, "NEXUS_NATS_URL": stack.url}
    follower = await asyncio.create_subprocess_exec(
        NEXUS, "logs", "-f", "logs-held", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=stack.tmp
    )
    assert follower.stderr is not None
    said = await asyncio.wait_for(follower.stderr.readline(), 30)
    assert b"job logs-held waiting for approval: critical command needs approval" in said, said
    code, _, err = await stack.nexus("deny", "logs-held", "--reason", "not today")
    assert code == 0, err
    out, rest = await asyncio.wait_for(follower.communicate(), 30)
    assert follower.returncode == 0 and out == b"" and b"job logs-held denied: by " in rest and b"not today" in rest, rest
