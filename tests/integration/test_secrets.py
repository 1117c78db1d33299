"""Secrets end to end on real processes (DESIGN.md §9): a real nats-server, the orchestrator on a
DuckDB file, the real `nexus agent` and `nexus run` processes. The job sees its secrets; its
output, the whole event log, the output stream and the DuckDB file never hold them in clear;
the job does not see the agent's own environment."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import duckdb
import pytest

from bus.nats_bus import NatsBus
from bus.sealing import SealingKey
from orchestrator.client import new_job_id
from schemas import subjects
from schemas.secrets import MASK
from tests.conftest import NEXUS, Stack, wait_for
from tests.integration.api_support import serve_api

NODE = "vault-node"


@pytest.fixture
async def agent_process(stack: Stack) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, Path]]:
    """`nexus agent` as its own process, with a variable in its environment no job may see."""
    marker = f"agent-only-{secrets.token_hex(8)}"
    state = stack.tmp / "agent-state"
    env = {**os.environ, "NEXUS_NATS_URL": stack.url, "AGENT_ONLY_MARKER": marker}
    proc = await asyncio.create_subprocess_exec(
        NEXUS, "agent", "--node", NODE, "--heartbeat", "0.5", "--state-dir", str(state), "--log-level", "warning",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        await wait_for(lambda: NODE in stack.orchestrator.nodes, what="the agent process registered")
        yield proc, marker, state
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()


async def _raw_messages(bus: NatsBus, stream: str) -> list[bytes]:
    """Every stored message of a stream, subject, headers and data, as raw as JetStream gives them."""
    info = await bus.js.stream_info(stream)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(stream, seq)
        found.append((msg.subject or "").encode() + repr(msg.headers).encode() + (msg.data or b""))
    return found


async def test_a_secret_reaches_the_job_and_nothing_else(stack: Stack, agent_process: tuple[asyncio.subprocess.Process, str, Path]) -> None:
    _proc, agent_marker, state = agent_process
    password = f"hunter2-{secrets.token_hex(8)}"
    api_key = f"api-{secrets.token_hex(8)}"
    marker_file = stack.tmp / "seen-by-the-job"
    job_id = new_job_id()
    script = (
        f'echo "pw=$DB_PASSWORD key=$API_KEY"; printf %s "$DB_PASSWORD $API_KEY" > {marker_file}; '
        'echo "split=${DB_PASSWORD:0:5}"; printf %s "$DB_PASSWORD" | od -An -c | head -1 >/dev/null; env; echo END'
    )
    env = {**os.environ, "NEXUS_NATS_URL": stack.url, "API_KEY": api_key}
    run = await asyncio.create_subprocess_exec(
        NEXUS, "run", "-q", "--id", job_id, "--node", NODE, "--env", f"DB_PASSWORD={password}", "--env", "PLAIN=visible",
        "--secret", "API_KEY", "--", script,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=stack.tmp,
    )  # fmt: skip
    out, err = await asyncio.wait_for(run.communicate(), 60)
    assert run.returncode == 0, err.decode()

    # The job saw the real values...
    assert marker_file.read_text() == f"{password} {api_key}"
    # ...its output shows the mask, byte-exact otherwise, and not the agent's own environment.
    text = out.decode()
    assert f"pw={MASK} key={MASK}\n" in text and "split=hunte\n" in text and "PLAIN=visible\n" in text
    assert f"DB_PASSWORD={MASK}\n" in text and f"API_KEY={MASK}\n" in text and text.endswith("END\n")
    assert password not in text and api_key not in text
    assert "AGENT_ONLY_MARKER" not in text and agent_marker not in text
    assert "NEXUS_NATS_URL" not in text and "\nPATH=" in text and f"NEXUS_JOB_ID={job_id}\n" in text

    # A foreign publisher's secret in clear (plain NATS client, no sealing): sealed for the node
    # and masked all the same; the log holds what it sent, DuckDB does not.
    foreign = f"foreign-{secrets.token_hex(8)}"
    foreign_id = new_job_id()
    payload = {"command": 'echo "t=$FOREIGN_TOKEN"', "node": NODE, "env": {"FOREIGN_TOKEN": foreign}}
    await stack.client.bus.nc.publish(subjects.job(foreign_id, "requested"), json.dumps(payload).encode())  # type: ignore[attr-defined]
    assert (await stack.wait_job(foreign_id))["status"] == "succeeded"
    code, shown, _ = await stack.nexus("logs", foreign_id)
    assert code == 0 and shown == f"t={MASK}\n".encode()

    # Nothing in the event log (every raw message) or the output stream holds our values.
    bus = stack.client.bus
    assert isinstance(bus, NatsBus)
    for stream in (subjects.EVENTS_STREAM, subjects.OUTPUT_STREAM):
        for data in await _raw_messages(bus, stream):
            assert password.encode() not in data and api_key.encode() not in data, stream
    outputs = b"".join(await _raw_messages(bus, subjects.OUTPUT_STREAM))
    assert foreign.encode() not in outputs and f"pw={MASK}".encode() in outputs

    # Every view shows the mask: `nexus sql` over the jobs table, `nexus history --json`.
    code, rows, _ = await stack.nexus("sql", f"SELECT env, secrets FROM jobs WHERE job_id = '{job_id}'", "--json")
    assert code == 0
    (row,) = json.loads(rows)
    assert (
        json.loads(row["env"]) if isinstance(row["env"], str) else row["env"] == {"DB_PASSWORD": MASK, "PLAIN": "visible", "API_KEY": MASK}
    )
    code, history, _ = await stack.nexus("history", job_id, "--json")
    assert code == 0 and password.encode() not in history and api_key.encode() not in history and MASK.encode() in history
    assert b"sealed:v1:" not in history

    # The DuckDB file: once the orchestrator stopped (checkpointed and closed), neither its
    # bytes nor any table hold a value, the foreign one included.
    db = stack.db
    await stack.stop_orchestrator()
    files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
    blob = b"".join(p.read_bytes() for p in files)
    for value in (password, api_key, foreign):
        assert value.encode() not in blob, value
    con = duckdb.connect(str(db), read_only=True)
    try:
        dumped = json.dumps(con.execute("SELECT * FROM jobs").fetchall(), default=str)
        dumped += json.dumps(con.execute("SELECT * FROM events").fetchall(), default=str)
        (env_json,) = con.execute("SELECT env FROM jobs WHERE job_id = ?", [foreign_id]).fetchone() or ("",)
    finally:
        con.close()
    for value in (password, api_key, foreign):
        assert value not in dumped
    assert json.loads(env_json) == {"FOREIGN_TOKEN": MASK}

    # The keys: the agent's in its state dir, 0600, the one it advertises.
    key_file = state / "sealing.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    beats = await bus.heartbeats()
    assert beats[NODE].sealing_key == SealingKey.load_or_create(key_file).public_key
    assert (db.parent / "sealing.key").stat().st_mode & 0o777 == 0o600


async def test_a_node_without_a_sealing_key_gets_no_secrets(stack: Stack) -> None:
    """An older agent (no key in its heartbeat): the job is rejected, with the reason, before it runs."""
    old = await NatsBus.connect(stack.url, name="old-agent")
    try:
        agent = stack.agents["node-1"][0]
        beat = agent._heartbeat()
        import msgspec

        await old.put_heartbeat(msgspec.structs.replace(beat, node="old-node", sealing_key=""))
        await wait_for(lambda: "old-node" in stack.orchestrator.nodes, what="the old node registered")
        env = {**os.environ, "NEXUS_NATS_URL": stack.url}
        proc = await asyncio.create_subprocess_exec(
            NEXUS, "run", "--node", "old-node", "--env", "DB_PASSWORD=pw-never-sent", "--", "echo hi",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 125, (out, err)
        assert b"sealing key" in err
    finally:
        with contextlib.suppress(Exception):
            await old.close()


async def test_no_orchestrator_key_means_the_cli_refuses_rather_than_send_a_secret_in_clear(nats_url: str, tmp_path: Path) -> None:
    bus = await NatsBus.connect(nats_url, name="setup")
    try:
        await bus.ensure_streams()  # streams, but no orchestrator has published its key
    finally:
        await bus.close()
    env = {**os.environ, "NEXUS_NATS_URL": nats_url}
    proc = await asyncio.create_subprocess_exec(
        NEXUS, "submit", "--env", "DB_PASSWORD=pw-never-sent", "--", "true",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and b"DB_PASSWORD" in err and b"in clear" in err, (out, err)
    bus = await NatsBus.connect(nats_url, name="check")
    try:
        assert await bus.last_seq() == 0
    finally:
        await bus.close()


async def test_a_pipeline_steps_secret_is_sealed_too(stack: Stack, agent_process: tuple[asyncio.subprocess.Process, str, Path]) -> None:
    password = f"pipe-{secrets.token_hex(8)}"
    marker_file = stack.tmp / "seen-by-the-step"
    template = stack.tmp / "deploy.yaml"
    token = f"tok-{secrets.token_hex(8)}"  # a variable named like nothing secret, going into a secret entry
    template.write_text(
        "name: secret-step\n"
        "steps:\n"
        "  - id: use\n"
        f'    command: \'printf %s "$DB_PASSWORD $API_TOKEN" > {marker_file}; echo "pw=$DB_PASSWORD"\'\n'
        f"    nodes: [{NODE}]\n"
        "    env:\n"
        f"      DB_PASSWORD: {password}\n"
        "      API_TOKEN: ${mytok}\n"
    )
    code, out, err = await stack.nexus("pipeline", "run", str(template), "--var", f"mytok={token}", "--json")
    assert code == 0, (out, err)
    assert marker_file.read_text() == f"{password} {token}"  # the step's job saw the values
    # Its views show the mask, as a job's do, not the sealed text.
    async with serve_api(stack.client) as api:
        shown = (await api.get(f"/api/v1/pipelines/{json.loads(out)['pipeline_id']}")).json()
    assert shown["spec"]["steps"][0]["env"] == {"DB_PASSWORD": MASK, "API_TOKEN": MASK}, shown["spec"]
    assert shown["variables"] == {"mytok": MASK}, shown["variables"]
    _, events, _ = await stack.nexus("sql", "SELECT payload FROM events", "--json")
    assert token.encode() not in events and password.encode() not in events
    bus = stack.client.bus
    assert isinstance(bus, NatsBus)
    for stream in (subjects.EVENTS_STREAM, subjects.OUTPUT_STREAM):
        for data in await _raw_messages(bus, stream):
            assert password.encode() not in data and token.encode() not in data, stream


async def test_a_replay_masks_what_the_orchestrator_masks_by_its_own_patterns_too(stack: Stack) -> None:
    import msgspec

    from schemas.events import JobRequested

    value = f"custom-{secrets.token_hex(8)}"
    # The orchestrator's published patterns, as with `--redacted-vars 'X_*'`.
    key = await stack.client.bus.orchestrator_key()
    assert key is not None
    await stack.client.bus.put_orchestrator_key(msgspec.structs.replace(key, redacted_vars=[*key.redacted_vars, "X_*"]))
    # Sent in clear by an external publisher: the log keeps its bytes; a state file masks it.
    await stack.client.submit(new_job_id(), JobRequested(command="true", env={"X_CUSTOM": value}))
    db = stack.tmp / "replayed.duckdb"
    code, out, err = await stack.nexus("replay", "--db", str(db), "--json")
    assert code == 0, (out, err)
    for path in (db, Path(f"{db}.wal")):
        assert not path.exists() or value.encode() not in path.read_bytes(), path


async def test_a_destructive_value_in_a_secret_is_held_like_one_in_clear_and_never_shown(stack: Stack) -> None:
    """`rm -rf $DIR_TOKEN` with DIR_TOKEN=/ sealed: the orchestrator opens the value to judge the
    command as it will run (`rm -rf $DIR` with DIR=/ is held for approval), and no finding, event
    or row shows the value. It used to pass as a warning and run."""
    await stack.start_agent("safe-node")
    target = f"/{secrets.token_hex(6)}-must-not-appear"  # a top-level directory: critical to delete
    job_id = new_job_id()
    code, _out, err = await stack.nexus("submit", "--id", job_id, "--env", f"DIR_TOKEN={target}", "--", "rm -rf $DIR_TOKEN")
    assert code == 0, err
    await wait_for(lambda: (j := stack.orchestrator.jobs.get(job_id)) and j.status == "approval_required", what="the hold")
    code, shown, _ = await stack.nexus("show", job_id, "--json")
    assert code == 0 and target.encode() not in shown
    assert any(f["type"] == "secret_value" and f["severity"] == "critical" for f in json.loads(shown)["warnings"]), shown
    bus = stack.client.bus
    assert isinstance(bus, NatsBus)
    assert not any(target.encode() in data for data in await _raw_messages(bus, subjects.EVENTS_STREAM))
    # The same with a harmless value is not held, and says nothing of its secret.
    calm = new_job_id()
    code, _out, err = await stack.nexus("submit", "--id", calm, "--env", "DIR_TOKEN=/tmp/x-nexus-calm", "--", "rm -rf $DIR_TOKEN")
    assert code == 0, err
    done = await stack.wait_job(calm)
    assert done["status"] == "succeeded" and "secret_value" not in json.dumps(done)
