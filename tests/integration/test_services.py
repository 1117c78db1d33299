"""The long-running services as real processes: `nexus up` and `nexus agent`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
from datetime import UTC, datetime

import msgspec
import nats

from orchestrator.client import new_job_id
from schemas.events import JobRequested
from tests.conftest import NEXUS, Stack, wait_for


async def _read_until(stream: asyncio.StreamReader, pattern: bytes, timeout: float = 60.0) -> re.Match[bytes]:
    seen = b""
    async with asyncio.timeout(timeout):
        while True:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"process ended before {pattern!r}; it said:\n{seen.decode(errors='replace')}")
            seen += line
            if m := re.search(pattern, line):
                return m


async def test_nexus_up_runs_everything_and_stops_cleanly_on_ctrl_c(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "nexus-data"
    proc = await asyncio.create_subprocess_exec(
        NEXUS, "up", "--data", str(data), "--port", "-1", "--api-port", "0", "--node", "local-1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        url = (await _read_until(proc.stderr, rb"NATS (nats://\S+),")).group(1).decode()
        drain = asyncio.create_task(proc.stderr.read())
        env = {**os.environ, "NEXUS_NATS_URL": url, "NEXUS_NATS_CREDS": str(data / "creds" / "admin.creds")}

        async def nexus(*args: str) -> tuple[int, bytes]:
            p = await asyncio.create_subprocess_exec(NEXUS, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
            out, err = await p.communicate()
            assert p.returncode is not None
            return p.returncode, out + err

        code, out = await nexus("run", "-q", "--", "echo", "hello")
        assert (code, out) == (0, b"hello\n")
        code, out = await nexus("sql", "SELECT status, count(*) AS n FROM jobs GROUP BY 1", "--json")
        assert code == 0 and b'"succeeded"' in out
        # An answer bigger than one NATS message (~2 MB) comes in parts, each signed and checked.
        code, out = await nexus("sql", "SELECT range AS n, repeat('x', 1000) AS pad FROM range(2000)", "--json")
        assert code == 0, out[-500:]
        assert [row["n"] for row in json.loads(out)] == list(range(2000))
        assert (data / "jetstream").is_dir() and (data / "nexus.duckdb").exists()

        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        await drain
        # Everything stopped, nats-server included: nothing answers on the URL any more.
        code, out = await nexus("jobs")
        assert code == 1 and b"cannot reach NATS" in out
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def test_verbs_run_where_nexus_up_runs_find_its_server_on_any_port(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`nexus up --port -1` (any free port) writes its server's URL to ./.nexus/nats.url: the
    verbs run from the same directory connect there with no --nats or NEXUS_NATS_URL, as they
    take ./.nexus/creds/admin.creds; --nats still wins, and the file goes when `nexus up` stops."""
    proc = await asyncio.create_subprocess_exec(
        NEXUS, "up", "--port", "-1", "--no-api", "--node", "here-1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    assert proc.stderr is not None
    env = {k: v for k, v in os.environ.items() if k not in ("NEXUS_NATS_URL", "NEXUS_NATS_CREDS")}

    async def nexus(*args: str) -> tuple[int, bytes]:
        p = await asyncio.create_subprocess_exec(
            NEXUS, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env, cwd=tmp_path
        )
        out, _ = await p.communicate()
        assert p.returncode is not None
        return p.returncode, out

    try:
        url = (await _read_until(proc.stderr, rb"NATS (nats://\S+),")).group(1).decode()
        drain = asyncio.create_task(proc.stderr.read())
        assert not url.endswith(":4222") and (tmp_path / ".nexus" / "nats.url").read_text().strip() == url
        assert await nexus("run", "-q", "--", "echo", "found-it") == (0, b"found-it\n")
        code, out = await nexus("jobs", "--nats", "nats://127.0.0.1:1")
        assert code == 1 and b"cannot reach NATS at nats://127.0.0.1:1" in out
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        await drain
        assert not (tmp_path / ".nexus" / "nats.url").exists()
        code, out = await nexus("jobs")
        assert code == 1 and b"cannot reach NATS at nats://127.0.0.1:4222" in out, out
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def test_killed_agent_makes_its_running_job_lost_and_the_next_job_goes_elsewhere(stack: Stack) -> None:
    env = {**os.environ, "NEXUS_NATS_URL": stack.url}
    agent = await asyncio.create_subprocess_exec(
        NEXUS, "agent", "--node", "doomed", "--heartbeat", "0.5", "--log-level", "warning",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_for(lambda: "doomed" in stack.orchestrator.nodes, what="agent registered")
        job_id = new_job_id()
        await stack.client.submit(job_id, JobRequested(command="sleep 600", node="doomed"))

        async def running() -> bool:
            row = await stack.job(job_id)
            return bool(row and row["status"] == "running")

        await wait_for(running, what="job running on the doomed node")
        agent.kill()
        await agent.wait()
        row = await stack.wait_job(job_id, timeout=30)  # the stack's node TTL (5 s), then lost
        assert row["status"] == "lost"
        assert "outcome is unknown" in row["reason"]
        history = await stack.client.history(job_id)
        assert [r.subject.split(".")[4] for r in history].count("started") == 1  # never re-run

        async def node_lost() -> bool:  # its own event, which may come after the job's
            nodes = await stack.client.query("SELECT status FROM nodes WHERE node_id = 'doomed'")
            return nodes.rows == [["lost"]]

        await wait_for(node_lost, 30, what="the node marked lost")

        nxt = new_job_id()
        await stack.client.submit(nxt, JobRequested(command="echo elsewhere"))
        row = await stack.wait_job(nxt)
        assert (row["status"], row["node"]) == ("succeeded", "node-1")
    finally:
        if agent.returncode is None:
            agent.kill()
            await agent.wait()


async def test_stopping_an_agent_kills_its_jobs_and_reports_them(stack: Stack) -> None:
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command="sleep 600"))

    async def running() -> bool:
        row = await stack.job(job_id)
        return bool(row and row["status"] == "running")

    await wait_for(running, what="job running")
    await stack.stop_agent("node-1")  # like SIGTERM to `nexus agent`
    row = await stack.wait_job(job_id, timeout=20)
    assert row["status"] == "cancelled" and row["killed_by"] == "cancel"


async def test_a_duplicate_request_between_dispatch_and_accept_does_not_strand_the_job(stack: Stack) -> None:
    await stack.start_agent("late")
    await stack.stop_agent("late")
    # As if it died without a word (kill -9): its last heartbeat, fresh and not `stopped`, stays
    # valid for a while, so the job is dispatched to it (a node that said it stopped gets none).
    last, _ = await stack.client.bus.node_heartbeat("late")
    assert last is not None and last.stopped
    await stack.client.bus.put_heartbeat(msgspec.structs.replace(last, stopped=False, ts=datetime.now(UTC)))
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command="echo ran", node="late"))

    async def dispatched() -> bool:
        row = await stack.job(job_id)
        return bool(row and row["status"] == "dispatched")

    await wait_for(dispatched, what="dispatched to the stopped agent")
    nc = await nats.connect(stack.url)
    try:  # a plain publish, no msg id: stored after the dispatch
        await nc.publish(f"nexus.evt.job.{job_id}.requested", b'{"command": "echo ran"}')
        await nc.flush()
    finally:
        await nc.close()
    await stack.start_agent("late")
    row = await stack.wait_job(job_id)
    assert row["status"] == "succeeded"
    kinds = [r.subject.split(".")[4] for r in await stack.client.history(job_id)]
    second_request = len(kinds) - 1 - kinds[::-1].index("requested")
    assert kinds.count("started") == 1 and kinds.index("dispatch") < second_request < kinds.index("accepted"), kinds


async def test_orchestrator_flags_set_stream_limits(stack: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    await stack.stop_orchestrator()
    env = {**os.environ, "NEXUS_NATS_URL": stack.url}
    proc = await asyncio.create_subprocess_exec(
        NEXUS, "orchestrator", "--db", str(tmp_path / "o.duckdb"), "--output-max-age", "2h", "--output-max-gb", "0.5",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:

        async def applied() -> bool:
            info = await stack.client.bus.js.stream_info("NEXUS_OUTPUT")
            return info.config.max_age == 7200 and info.config.max_bytes == 512 * 1024**2

        await wait_for(applied, what="output limits applied")
        info = await stack.client.bus.js.stream_info("NEXUS_EVENTS")
        assert str(info.config.discard) in ("new", "DiscardPolicy.NEW") and info.config.deny_delete and info.config.deny_purge
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert await asyncio.wait_for(proc.wait(), 20) == 0
        finally:
            if proc.returncode is None:  # never leave an orchestrator behind
                proc.kill()
                await proc.wait()
    code, _, err = await stack.nexus("orchestrator", "--output-max-age", "soon")
    assert code == 2 and b"--output-max-age" in err


async def test_agent_process_stops_promptly_on_sigterm(stack: Stack) -> None:
    env = {**os.environ, "NEXUS_NATS_URL": stack.url}
    for _ in range(3):  # the lost-cancel race of nats-py's fetch showed up only now and then
        agent = await asyncio.create_subprocess_exec(
            NEXUS, "agent", "--node", "term", "--heartbeat", "0.2", "--log-level", "warning",
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await wait_for(lambda: "term" in stack.orchestrator.beats, what="agent heartbeating")
            agent.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(agent.wait(), 15) == 0
        finally:
            if agent.returncode is None:
                agent.kill()
                await agent.wait()
        stack.orchestrator.beats.pop("term", None)


async def test_a_state_file_ahead_of_the_log_is_refused_not_folded_into(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The store wiped under a state file (or the file pointed at another server): folding would skip events.
    data = tmp_path / "nexus-data"

    async def up() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            NEXUS, "up", "--data", str(data), "--port", "-1", "--no-api", "--node", "local-1",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=tmp_path, start_new_session=True,
        )  # fmt: skip

    first = await up()
    assert first.stderr is not None
    try:
        url = (await _read_until(first.stderr, rb"NATS (nats://\S+),")).group(1).decode()
        drain = asyncio.create_task(first.stderr.read())
        env = {**os.environ, "NEXUS_NATS_URL": url, "NEXUS_NATS_CREDS": str(data / "creds" / "admin.creds")}
        run = await asyncio.create_subprocess_exec(NEXUS, "run", "-q", "--", "true", env=env)
        assert await asyncio.wait_for(run.wait(), 60) == 0
        first.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(first.wait(), 30) == 0
        await drain
    finally:
        if first.returncode is None:
            os.killpg(first.pid, signal.SIGKILL)
            await first.wait()
    shutil.rmtree(data / "jetstream")
    again = await up()
    try:
        _, err = await asyncio.wait_for(again.communicate(), 60)
    finally:
        if again.returncode is None:
            os.killpg(again.pid, signal.SIGKILL)
            await again.wait()
    text = err.decode()
    assert again.returncode == 1 and "was made from another log" in text and "Traceback" not in text, text
