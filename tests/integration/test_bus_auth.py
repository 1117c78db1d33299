"""Issue 11: no anonymous bus, least privilege per identity, enforced by the server.

Each test attacks a real `nexus up` (embedded nats-server in its shipped auth
configuration, orchestrator, agent) the way a client with network access would,
with plain nats-py, and shows the attack refused: nothing stored, nothing run
(marker files prove what ran). The external contract still works with a
submitter credential.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import stat
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest

from bus.identity import SIG_HEADER, SIGNER_HEADER, output_signature_holds
from bus.logs import structlog_module
from bus.nats_bus import NatsBus
from orchestrator.client import new_job_id
from schemas import subjects
from tests.conftest import NEXUS, wait_for

pytestmark = pytest.mark.timeout(180)


@dataclass
class Up:
    url: str
    data: Path
    creds: Path
    admin: NatsBus
    proc: asyncio.subprocess.Process
    node: str = "local-1"

    async def nexus(self, *args: str, creds: Path | None = None, env: dict[str, str] | None = None) -> tuple[int, str]:
        env = {**os.environ, "NEXUS_NATS_URL": self.url, "NEXUS_NATS_CREDS": str(creds or self.creds / "admin.creds"), **(env or {})}
        p = await asyncio.create_subprocess_exec(NEXUS, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env)
        out, _ = await p.communicate()
        assert p.returncode is not None
        return p.returncode, out.decode(errors="replace")

    async def stored(self, subject: str) -> int:
        """How many events the log holds on `subject` (read as admin)."""
        info = await self.admin.js.stream_info(subjects.EVENTS_STREAM, subjects_filter=subject)
        return sum((info.state.subjects or {}).values())


async def connect(up: Up, creds: Path | None, inbox_prefix: str = "_INBOX") -> nats.aio.client.Client:
    async def quiet(exc: Exception) -> None:
        pass

    kwargs = {"user_credentials": str(creds)} if creds is not None else {}
    return await nats.connect(up.url, error_cb=quiet, allow_reconnect=False, max_reconnect_attempts=0, inbox_prefix=inbox_prefix, **kwargs)


async def refused(up: Up, creds: Path, subject: str, payload: bytes = b"{}") -> None:
    """Publish as `creds` and see the server refuse it (the error comes back on the connection)."""
    nc = await connect(up, creds)
    try:
        with contextlib.suppress(nats.errors.Error):
            await nc.publish(subject, payload)
            await nc.flush(timeout=5)
        await wait_for(lambda: "permissions violation" in str(nc.last_error or "").lower(), 10, what=f"the server to refuse {subject}")
    finally:
        await nc.close()
    assert await up.stored(subject) == 0 if subject.startswith("nexus.evt.") else True


@pytest.fixture
async def up(tmp_path: Path) -> AsyncIterator[Up]:
    data = tmp_path / "nexus-data"
    proc = await asyncio.create_subprocess_exec(
        NEXUS, "up", "--data", str(data), "--port", "-1", "--no-api", "--node", "local-1", "--node-ttl", "5",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = b""
    try:
        async with asyncio.timeout(60):
            while b"nexus is up" not in seen:
                line = await proc.stderr.readline()
                if not line:
                    raise AssertionError(f"nexus up ended: {seen.decode(errors='replace')}")
                seen += line
        url = re.search(rb"NATS (nats://\S+),", seen).group(1).decode()  # type: ignore[union-attr]
        drain = asyncio.create_task(proc.stderr.read())
        admin = await NatsBus.connect(url, name="test-admin", creds=data / "creds" / "admin.creds")
        try:
            yield Up(url=url, data=data, creds=data / "creds", admin=admin, proc=proc)
        finally:
            await admin.close()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        await drain
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def _request(command: str, node: str = "local-1") -> bytes:
    return json.dumps({"type": "job.requested", "command": command, "node": node}).encode()


async def test_the_embedded_server_refuses_anonymous_clients_and_writes_private_creds(up: Up) -> None:
    # A client without credentials, spoken in the NATS protocol itself: refused.
    host, port = up.url.removeprefix("nats://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        info = await reader.readline()
        assert info.startswith(b"INFO ") and b'"auth_required":true' in info
        writer.write(b'CONNECT {"verbose":false,"pedantic":false}\r\nPUB nexus.evt.job.anon.requested 2\r\n{}\r\nPING\r\n')
        await writer.drain()
        said = await asyncio.wait_for(reader.readline(), 10)
        assert b"Authorization Violation" in said, said
    finally:
        writer.close()
        await writer.wait_closed()
    assert await up.stored("nexus.evt.job.anon.requested") == 0
    for name in ("admin.creds", "submitter.creds", "operator.nk", "account.nk", "system.nk"):
        mode = stat.S_IMODE((up.creds / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    # The data directory (the DuckDB file: every command and finding) is this user's alone.
    assert stat.S_IMODE(up.data.stat().st_mode) == 0o700, oct(up.data.stat().st_mode)
    # A daemon without credentials stops at once and says why (it does not retry forever).
    env = {k: v for k, v in os.environ.items() if k != "NEXUS_NATS_CREDS"} | {"NEXUS_NATS_URL": up.url}
    agent = await asyncio.create_subprocess_exec(
        NEXUS, "agent", "--node", "no-creds", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env, cwd=up.data.parent,
    )  # fmt: skip
    said, _ = await asyncio.wait_for(agent.communicate(), 30)
    assert agent.returncode != 0 and b"requires credentials" in said, said
    # Another node's agent credentials: it stops at once and says whose they are (it retried for
    # ever, every read refused, with a hint about old-style credentials).
    other = await _issue(up, "agent", "creds-of-a", "node-a")
    agent = await asyncio.create_subprocess_exec(
        NEXUS, "agent", "--node", "node-b", "--creds", str(other), "--state-dir", str(up.data.parent / "node-b-state"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env, cwd=up.data.parent,
    )  # fmt: skip
    said, _ = await asyncio.wait_for(agent.communicate(), 30)
    assert agent.returncode == 1 and b"is the agent identity of node 'node-a', not 'node-b'" in said, said
    # A CLI verb without credentials is refused with a clear error, not a traceback.
    code, out = await up.nexus("jobs", creds=up.creds / "no-such.creds")
    assert code != 0 and "no-such.creds" in out and "Traceback" not in out


async def test_a_submitter_runs_jobs_through_the_external_contract(up: Up, tmp_path: Path) -> None:
    nc = await connect(up, up.creds / "submitter.creds")
    try:
        marker = tmp_path / "ran-by-submitter"
        job_id = new_job_id()
        exits = await nc.subscribe(subjects.job_kind_all("exited"))  # every job's exit, live (DESIGN §3's shape)
        # A plain core-NATS publish (no JetStream ack), as DESIGN §4 promises.
        await nc.publish(subjects.job(job_id, "requested"), _request(f"echo signed-output && touch {marker}"))
        await nc.flush()
        await wait_for(marker.exists, 30, what="the submitter's job to run")
        # Its output as any reader gets it, on DESIGN §3's `nexus.out.<job>.<attempt>`: raw bytes,
        # signed by the node's agent over their digest, the node named in a header.
        out = await nc.jetstream().subscribe(f"nexus.out.{job_id}.1", ordered_consumer=True)
        chunk = await out.next_msg(timeout=10)
        await out.unsubscribe()
        shown = (chunk.subject, chunk.data, (chunk.headers or {}).get("Nexus-Node"))
        assert shown == (f"nexus.out.{job_id}.1", b"signed-output\n", "local-1")
        signer, sig = (chunk.headers or {})[SIGNER_HEADER], (chunk.headers or {})[SIG_HEADER]
        assert output_signature_holds(chunk.subject, chunk.data, signer, sig)
        assert not output_signature_holds(chunk.subject, b"altered-output\n", signer, sig)
        assert not output_signature_holds(subjects.output(job_id, 2), chunk.data, signer, sig)
        # Its node's facts on DESIGN §3's `nexus.evt.job.<job>.<kind>`, signed by the node's agent.
        exited = await exits.next_msg(timeout=10)
        assert exited.subject == subjects.fact(job_id, "exited") and json.loads(exited.data)["node"] == "local-1"
        assert (exited.headers or {}).get(SIGNER_HEADER)
        await exits.unsubscribe()
        # And it may read its job's events back, and submit with a JetStream ack.
        got = await nc.jetstream().subscribe(subjects.job_all(job_id), ordered_consumer=True)
        first = await got.next_msg(timeout=5)
        assert first.subject == subjects.job(job_id, "requested")
        await got.unsubscribe()
        ack = await nc.jetstream().publish(subjects.job(new_job_id(), "requested"), _request("true"))
        assert ack.seq > 0 and nc.last_error is None and nc.is_connected
    finally:
        await nc.close()
    # The CLI with the submitter's credentials: run and read back.
    code, out = await up.nexus("run", "-q", "--", "echo", "from-the-cli", creds=up.creds / "submitter.creds")
    assert (code, out) == (0, "from-the-cli\n")
    code, out = await up.nexus("jobs", "--json", creds=up.creds / "submitter.creds")
    assert code == 0 and "from-the-cli" in out


@pytest.mark.parametrize(
    "kind",
    ["validated", "approved", "assigned", "succeeded", "cancel.local-1", "exited.local-1", "exited", "dispatch.local-1"],
)
async def test_a_submitter_cannot_forge_decisions_or_facts(up: Up, tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "forged"
    job_id = new_job_id()
    payload = {"type": f"job.{kind.split('.')[0]}", "node": "local-1", "attempt": 1, "exit_code": 0, "by": "alice"}
    payload |= {"command": "echo harmless", "argv": ["bash", "-c", f"touch {marker}"], "tool": "bash"}
    await refused(up, up.creds / "submitter.creds", f"nexus.evt.job.{job_id}.{kind}", json.dumps(payload).encode())
    assert not marker.exists()


async def test_only_admin_may_change_or_delete_the_log(up: Up) -> None:
    viewer = await _issue(up, "viewer", "eve")
    # A viewer that tries to submit is told why, in one line.
    code, out = await up.nexus("run", "--", "echo", "from-a-viewer", creds=viewer)
    assert code == 1 and "not allowed" in out and "'eve' (viewer)" in out and "Traceback" not in out, out
    config = json.dumps({"name": subjects.EVENTS_STREAM, "subjects": ["nexus.evt.>"], "max_msgs": 1}).encode()
    for creds in (up.creds / "submitter.creds", viewer):
        await refused(up, creds, f"$JS.API.STREAM.UPDATE.{subjects.EVENTS_STREAM}", config)
        await refused(up, creds, f"$JS.API.STREAM.DELETE.{subjects.EVENTS_STREAM}")
        await refused(up, creds, f"$JS.API.STREAM.PURGE.{subjects.EVENTS_STREAM}")
        await refused(up, creds, f"$JS.API.CONSUMER.DELETE.{subjects.EVENTS_STREAM}.agent-{up.node}")
    info = await up.admin.js.stream_info(subjects.EVENTS_STREAM)
    assert info.config.max_msgs in (None, -1) and info.state.messages > 0


async def test_no_one_but_the_orchestrator_answers_queries_or_takes_a_nodes_dispatches(up: Up) -> None:
    submitter = up.creds / "submitter.creds"
    nc = await connect(up, submitter)
    try:
        await nc.subscribe(subjects.RPC_QUERY)
        with contextlib.suppress(nats.errors.Error):
            await nc.flush(timeout=5)
        await wait_for(lambda: "permissions violation" in str(nc.last_error or "").lower(), 10, what="the server to refuse the responder")
    finally:
        await nc.close()
    # Pulling from, or acking on, the local agent's durable consumer (stealing its dispatches).
    await refused(up, submitter, f"$JS.API.CONSUMER.MSG.NEXT.{subjects.EVENTS_STREAM}.agent-{up.node}", b'{"batch": 1}')
    await refused(up, submitter, f"$JS.API.CONSUMER.CREATE.{subjects.EVENTS_STREAM}.agent-{up.node}")
    await refused(up, submitter, f"$JS.ACK.{subjects.EVENTS_STREAM}.agent-{up.node}.1.1.1.1.0")
    await refused(up, submitter, f"$JS.API.CONSUMER.MSG.NEXT.{subjects.DISPATCH_STREAM}.agent-{up.node}", b'{"batch": 1}')
    await refused(up, submitter, f"$JS.API.CONSUMER.CREATE.{subjects.DISPATCH_STREAM}.agent-{up.node}")
    await refused(up, submitter, f"$JS.ACK.{subjects.DISPATCH_STREAM}.agent-{up.node}.1.1.1.1.0")
    code, out = await up.nexus("sql", "SELECT 40 + 2 AS answer", "--json", creds=submitter)
    assert code == 0 and "42" in out and "forged" not in out


async def test_an_agent_identity_speaks_only_for_its_own_node(up: Up) -> None:
    rogue = await _issue(up, "agent", "rogue", node="rogue-1")
    job_id = new_job_id()
    fact = b'{"type": "job.exited", "node": "local-1", "attempt": 1, "exit_code": 0}'
    # Facts and output under another node's name, its heartbeat, its consumer: all refused.
    await refused(up, rogue, subjects.fact_under_node(subjects.fact(job_id, "exited"), up.node), fact)
    await refused(up, rogue, f"nexus.out.{job_id}.1.{up.node}", b"forged output")
    await refused(up, rogue, f"$KV.nexus-nodes.{up.node}", b'{"node": "local-1", "cost": 0}')
    await refused(up, rogue, f"$JS.API.CONSUMER.MSG.NEXT.{subjects.EVENTS_STREAM}.agent-{up.node}", b'{"batch": 1}')
    await refused(up, rogue, f"$JS.API.CONSUMER.MSG.NEXT.{subjects.DISPATCH_STREAM}.agent-{up.node}", b'{"batch": 1}')
    await refused(up, rogue, f"$JS.ACK.{subjects.DISPATCH_STREAM}.agent-{up.node}.1.1.1.1.0")
    # Nor submit jobs or make decisions.
    await refused(up, rogue, subjects.job(job_id, "requested"), _request("echo from-a-rogue-agent"))
    await refused(up, rogue, subjects.job(job_id, "succeeded"), b"{}")
    # Facts on DESIGN §3's subject, and under its own node, pass the server (the readers then check
    # who signed them and the job's attempt: test_a_rogue_agents_facts_change_nothing...); the
    # JetStream ack comes back under its own inbox prefix, as for any agent.
    nc = await connect(up, rogue, inbox_prefix=subjects.node_inbox("rogue-1"))
    try:
        own = b'{"type": "job.exited", "node": "rogue-1", "attempt": 1}'
        for subject in (subjects.fact(job_id, "exited"), subjects.fact_under_node(subjects.fact(job_id, "exited"), "rogue-1")):
            assert (await nc.jetstream().publish(subject, own)).seq > 0
    finally:
        await nc.close()


async def test_new_identities_work_without_a_restart_and_approvers_alone_approve(up: Up) -> None:
    job_id = new_job_id()
    await refused(up, up.creds / "submitter.creds", subjects.job(job_id, "approved"), b'{"type": "job.approved", "by": "mallory"}')
    nc = await connect(up, await _issue(up, "approver", "alice"))
    try:
        ack = await nc.jetstream().publish(subjects.job(job_id, "approved"), b'{"type": "job.approved", "by": "alice"}')
        assert ack.seq > 0 and nc.last_error is None
    finally:
        await nc.close()


async def _issue(up: Up, role: str, name: str, node: str | None = None, *extra: str) -> Path:
    args = [NEXUS, "creds", "new", "--role", role, "--name", name, "--keyring", str(up.creds), *extra] + (["--node", node] if node else [])
    done = await asyncio.to_thread(subprocess.run, args, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return path


async def _node_online(up: Up, node: str) -> bool:
    code, out = await up.nexus("nodes", "--json")
    return code == 0 and any(n["node_id"] == node and n["status"] == "online" for n in json.loads(out))


async def _rows(up: Up, sql: str) -> list[list[object]]:
    code, out = await up.nexus("sql", sql, "--json")
    assert code == 0, out
    return [list(row.values()) for row in json.loads(out)]


async def _row(up: Up, sql: str) -> list[object]:
    async def found() -> list[object] | None:
        code, out = await up.nexus("sql", sql, "--json")
        assert code == 0, out
        rows = json.loads(out)
        return list(rows[0].values()) if rows else None

    got = await wait_for(found, 30, what=sql)
    assert got is not None
    return got


async def test_the_record_names_verified_identities_and_refuses_false_signatures(up: Up, tmp_path: Path) -> None:
    # An approver's approval is recorded under the name in its credentials, whatever `by` claims.
    job_id = new_job_id()
    # Through the Nexus bus adapter, which signs (a plain client's approval is unsigned: refused below).
    approver = await NatsBus.connect(up.url, name="alice", creds=await _issue(up, "approver", "alice"))
    try:
        from schemas import msgids
        from schemas.envelope import Outgoing
        from schemas.events import JobApproved

        await approver.publish(Outgoing(subjects.job(job_id, "approved"), JobApproved(by="mallory"), msgids.job(job_id, "approved", "x1")))
    finally:
        await approver.close()
    row = await _row(
        up,
        f"SELECT author, author_role, json_extract_string(payload, '$.by') FROM events WHERE job_id = '{job_id}' AND type = 'job.approved'",
    )
    assert row == ["alice", "approver", "mallory"]  # the payload is kept as sent; the author is the verified one

    # A plain client's unsigned approval: allowed by the server for an approver, refused by the record.
    nc = await connect(up, up.creds / "alice.creds")
    try:
        await nc.jetstream().publish(subjects.job(job_id, "denied"), b'{"type": "job.denied", "by": "alice"}')
    finally:
        await nc.close()
    (error,) = await _row(up, f"SELECT error FROM events WHERE job_id = '{job_id}' AND subject LIKE '%.denied'")
    assert "unsigned job.denied" in str(error) and "refused" in str(error)
    # `nexus history` (read from the log, by a viewer) says the same: who, and what did not count.
    code, out = await up.nexus("history", job_id, "--json", creds=await _issue(up, "viewer", "auditor"))
    assert code == 0, out
    seen = {e["subject"].rsplit(".", 1)[1]: e for e in json.loads(out)}
    # (The approval is authentic, but of a job nobody requested: it counted for nothing either.)
    assert seen["approved"]["author"]["name"] == "alice" and "unknown job" in seen["approved"]["error"]
    assert seen["denied"]["author"] is None and "unsigned job.denied" in seen["denied"]["error"]
    code, out = await up.nexus("history", job_id)
    (line,) = [x for x in out.splitlines() if "job.approved" in x]
    assert code == 0 and " alice " in line and "mallory" not in out and "job.denied (not counted)" in out, out

    # A submitter that claims the orchestrator's key as signer, with a made-up signature: refused.
    marker = tmp_path / "false-signature"
    orch = json.loads(base64.urlsafe_b64decode((up.creds / "orchestrator.creds").read_text().split("\n")[1].split(".")[1] + "=="))["sub"]
    nc = await connect(up, up.creds / "submitter.creds")
    forged = new_job_id()
    try:
        headers = {"Nexus-Signer": orch, "Nexus-Sig": base64.urlsafe_b64encode(b"\0" * 64).decode().rstrip("=")}
        await nc.jetstream().publish(subjects.job(forged, "requested"), _request(f"touch {marker}"), headers=headers)
    finally:
        await nc.close()
    (error,) = await _row(up, f"SELECT error FROM events WHERE job_id = '{forged}' AND type = 'job.requested'")
    assert "does not verify" in str(error)
    assert not marker.exists()


async def test_an_unsigned_request_names_no_one_and_a_rogue_agents_fact_changes_nothing(up: Up, tmp_path: Path) -> None:
    marker, gate = tmp_path / "ran", tmp_path / "gate"
    job_id = new_job_id()
    nc = await connect(up, up.creds / "submitter.creds")
    try:
        # The job runs until the test opens the gate: the rogue fact must meet a running job.
        command = f"while [ ! -e {gate} ]; do sleep 0.05; done; touch {marker}"
        payload = json.dumps({"command": command, "node": up.node, "requested_by": "claimed-ceo"}).encode()
        await nc.jetstream().publish(subjects.job(job_id, "requested"), payload)
    finally:
        await nc.close()
    await _row(up, f"SELECT status FROM jobs WHERE job_id = '{job_id}' AND status = 'running'")
    # A rogue agent may publish facts about any job (DESIGN §3's subject names no node): about
    # this one, as itself or claiming to be the job's node, they change nothing.
    rogue = await NatsBus.connect(up.url, name="rogue", creds=await _issue(up, "agent", "rogue-2", node="rogue-2"))
    try:
        from schemas import msgids
        from schemas.envelope import Outgoing
        from schemas.events import JobExited

        for claimed in ("rogue-2", up.node):
            fake = JobExited(node=claimed, attempt=1, exit_code=0)
            await rogue.publish(Outgoing(subjects.fact(job_id, "exited"), fake, msgids.job(job_id, "exited", f"{claimed}-forged")))
    finally:
        await rogue.close()
    sql = f"SELECT error FROM events WHERE job_id = '{job_id}' AND author = 'rogue-2' AND json_extract_string(payload, '$.node') = '{{}}'"
    (as_itself,) = await _row(up, sql.format("rogue-2"))
    assert "refused" in str(as_itself)
    (as_local,) = await _row(up, sql.format(up.node))
    assert as_local == f"job.exited for node '{up.node}' signed by the agent of 'rogue-2': refused"
    (status,) = await _row(up, f"SELECT status FROM jobs WHERE job_id = '{job_id}'")
    assert status == "running"  # the forged exit ended nothing
    gate.touch()
    row = await _row(up, f"SELECT status, requested_by FROM jobs WHERE job_id = '{job_id}' AND status IN ('succeeded', 'failed')")
    assert row == ["succeeded", None]  # the real exit, from the real node; the claimed name is not recorded
    assert marker.exists()
    # Nor shown: what people read of the job names no one for the unsigned request.
    code, out = await up.nexus("history", job_id)
    assert code == 0 and "requested" in out and "claimed-ceo" not in out, out
    # And the rogue's exit shows as the orchestrator judged it: not counted, with the reason.
    lines = [x for x in out.splitlines() if ".exited" in x and "rogue-2" in x]
    assert len(lines) == 2 and all("not counted" in x and "refused" in x for x in lines), out


async def test_output_counts_only_from_the_node_that_ran_the_job_signed_by_its_agent(up: Up, tmp_path: Path) -> None:
    """DESIGN §9: output is a node fact. Chunks for a job from another node, unsigned, or signed
    by another node's agent reach the log (they are on subjects their publishers may use) but
    no reader counts them: not `nexus logs`, not a follower, not the job's output test."""
    gate = tmp_path / "gate"
    job_id = new_job_id()
    command = f"echo genuine; while [ ! -e {gate} ]; do sleep 0.05; done"
    tests = [{"type": "output_contains", "pattern": "ALL GOOD"}]
    request = json.dumps({"command": command, "node": up.node, "tests": tests}).encode()
    await up.admin.js.publish(subjects.job(job_id, "requested"), request)
    await _row(up, f"SELECT status FROM jobs WHERE job_id = '{job_id}' AND status = 'running'")
    rogue_creds = await _issue(up, "agent", "rogue-3", node="rogue-3")
    rogue = await NatsBus.connect(up.url, name="rogue", creds=rogue_creds)
    try:  # on the job's output subject (any agent may publish there): the readers do not count it
        await rogue.publish_output(job_id, 1, 2, b"ALL GOOD (from rogue-3)\n", "rogue-3", token="rogue")
        # Nor garbage where an attempt and a chunk number belong: no reader may fail on it.
        await rogue.js.publish(f"nexus.out.{job_id}.x", b"ALL GOOD (no attempt)\n", headers={"Nexus-Chunk": "\u00b2"})
    finally:
        await rogue.close()
    await refused(up, rogue_creds, f"nexus.out.{job_id}.1.{up.node}", b"ALL GOOD (as local-1)\n")
    # Naming the job's node (its Nexus-Node header), unsigned or signed by another node's agent:
    # it still does not count.
    nc = await connect(up, up.creds / "admin.creds")
    try:
        subject = subjects.output(job_id, 1)
        await nc.jetstream().publish(subject, b"ALL GOOD (unsigned)\n", headers={"Nexus-Chunk": "3", "Nexus-Node": up.node})
        from bus.identity import Identity

        forged = b"ALL GOOD (signed by rogue-3)\n"
        signed = Identity.from_creds(rogue_creds).sign_output(subject, forged)
        await nc.jetstream().publish(subject, forged, headers={"Nexus-Chunk": "4", "Nexus-Node": up.node, **signed})
    finally:
        await nc.close()
    gate.touch()
    (status,) = await _row(up, f"SELECT status FROM jobs WHERE job_id = '{job_id}' AND status IN ('succeeded', 'failed')")
    assert status == "failed"  # "ALL GOOD" is nowhere in what local-1's agent wrote
    info = await up.admin.js.stream_info(subjects.OUTPUT_STREAM, subjects_filter=subjects.output_all(job_id))
    assert sum((info.state.subjects or {}).values()) == 5  # the forgeries are in the log, as evidence
    env = {**os.environ, "NEXUS_NATS_URL": up.url, "NEXUS_NATS_CREDS": str(up.creds / "admin.creds")}
    for args in (["logs", job_id, "--json"], ["logs", "--follow", job_id, "--json"]):
        # stdout alone: the JSON is written as it is read, and the refusals go to stderr meanwhile.
        done = await asyncio.to_thread(subprocess.run, [NEXUS, *args], capture_output=True, env=env, check=False)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["text"].strip() == "genuine", (args, done.stdout)
    code, out = await up.nexus("logs", job_id)
    assert code == 0, out
    assert out.count("output.refused") == 4 and "ALL GOOD" not in out, out


async def test_an_agent_whose_credentials_predate_the_design_subjects_keeps_working(
    up: Up, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agent credentials issued before facts and output took DESIGN §3's `nexus.evt.job.<job>.<kind>`
    and `nexus.out.<job>.<attempt>` allow them only under the node (`nexus.evt.job.*.exited.<node>`,
    `nexus.out.*.*.<node>`): such an agent publishes there (what its JWT allows), and its facts
    and output count, until its credentials are issued again."""
    from orchestrator.trust import roles
    from orchestrator.trust.keyring import Keyring

    current = roles._agent
    design = {subjects.job_kind_all(kind) for kind in subjects.NODE_FACTS}

    def older(node: str) -> list[str]:  # the permissions of agent credentials issued before 2026-12-06
        allowed = [f"nexus.out.*.*.{node}" if s == "nexus.out.*.*" else s for s in current(node)]
        return [s for s in allowed if s not in design and s.removeprefix(f"$JS.API.DIRECT.GET.{subjects.EVENTS_STREAM}.") not in design]

    monkeypatch.setattr(roles, "_agent", older)
    creds = Keyring(up.creds).issue("agent", "old-1", "old-1").path
    monkeypatch.undo()
    env = {**os.environ, "NEXUS_NATS_URL": up.url, "NEXUS_NATS_CREDS": str(creds)}
    agent = await asyncio.create_subprocess_exec(
        NEXUS, "agent", "--node", "old-1", "--state-dir", str(tmp_path / "old-1"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        await wait_for(lambda: _node_online(up, "old-1"), 30, what="node old-1 online")
        job_id = new_job_id()
        code, out = await up.nexus("run", "--node", "old-1", "--id", job_id, "--", "echo from-old-credentials")
        assert code == 0 and "from-old-credentials" in out and "output.refused" not in out, out
        info = await up.admin.js.stream_info(subjects.OUTPUT_STREAM, subjects_filter=subjects.output_all(job_id))
        assert list(info.state.subjects or {}) == [f"nexus.out.{job_id}.1.old-1"]
        info = await up.admin.js.stream_info(subjects.EVENTS_STREAM, subjects_filter=f"nexus.evt.job.{job_id}.*.old-1")
        under_node = [f"nexus.evt.job.{job_id}.{k}.old-1" for k in ("accepted", "dispatch", "exited", "started")]
        assert sorted(info.state.subjects or {}) == under_node
    finally:
        agent.terminate()
        await agent.wait()


async def test_another_agents_fact_cannot_stop_a_dispatch_from_running(up: Up, tmp_path: Path) -> None:
    """Any agent may publish a fact about any job on DESIGN §3's subject. A forged `accepted`
    naming the job's node, stored between the dispatch and that node's own acceptance, must not
    count for the node's agent either: it accepts and runs the job (it would otherwise take the
    job for accepted elsewhere and never run it)."""
    creds = await _issue(up, "agent", "held-1", node="held-1")
    env = {**os.environ, "NEXUS_NATS_URL": up.url, "NEXUS_NATS_CREDS": str(creds)}
    agent = await asyncio.create_subprocess_exec(
        NEXUS, "agent", "--node", "held-1", "--state-dir", str(tmp_path / "held-1"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env, cwd=tmp_path,
    )  # fmt: skip
    rogue = await NatsBus.connect(up.url, name="rogue", creds=await _issue(up, "agent", "rogue-5", node="rogue-5"))
    try:
        await wait_for(lambda: _node_online(up, "held-1"), 30, what="node held-1 online")
        job_id, marker = new_job_id(), tmp_path / "ran"
        agent.send_signal(signal.SIGSTOP)  # the dispatch waits for it, unaccepted
        try:
            await up.admin.js.publish(subjects.job(job_id, "requested"), _request(f"touch {marker}", node="held-1"))

            async def dispatched() -> bool:
                return await up.stored(subjects.dispatch(job_id, "held-1")) == 1

            await wait_for(dispatched, 10, what="the dispatch to held-1")
            from schemas import msgids
            from schemas.envelope import Outgoing
            from schemas.events import JobAccepted

            forged = JobAccepted(node="held-1", attempt=1, instance="forged")
            await rogue.publish(Outgoing(subjects.fact(job_id, "accepted"), forged, msgids.job(job_id, "accepted", "forged")))
        finally:
            agent.send_signal(signal.SIGCONT)
        (status,) = await _row(up, f"SELECT status FROM jobs WHERE job_id = '{job_id}' AND status IN ('succeeded', 'failed', 'lost')")
        assert status == "succeeded" and marker.exists()
        (error,) = await _row(up, f"SELECT error FROM events WHERE job_id = '{job_id}' AND author = 'rogue-5'")
        assert error == "job.accepted for node 'held-1' signed by the agent of 'rogue-5': refused"
    finally:
        await rogue.close()
        agent.terminate()
        await agent.wait()


async def test_another_nodes_agent_cannot_have_a_jobs_facts_dropped_as_duplicates(up: Up) -> None:
    """The facts' msg ids (`job:<id>:accepted:<attempt>`) anyone can compute, and any agent may
    publish on their subjects: stored first by another node's agent, they must not make the
    real facts be dropped as duplicates (the agent stores its own under a derived id)."""
    job_id = new_job_id()
    held = "$NEXUS_UNSET_PROGRAM"  # held for approval (a program known only at run time), and harmless: it is unset
    code, out = await up.nexus("submit", "--id", job_id, "--", held)
    assert code == 0, out
    await _row(up, f"SELECT status FROM jobs WHERE job_id = '{job_id}' AND status = 'approval_required'")
    evil = await NatsBus.connect(up.url, name="evil", creds=await _issue(up, "agent", "evil-2", node="evil-2"))
    try:
        from schemas.envelope import Outgoing
        from schemas.events import JobAccepted

        # The acceptance signed (its own, naming its node: a claim on attempt 1), the others unsigned.
        await evil.publish(Outgoing(subjects.fact(job_id, "accepted"), JobAccepted(node="evil-2", attempt=1), f"job:{job_id}:accepted:1"))
        for kind in ("started", "exited"):
            squat = json.dumps({"type": f"job.{kind}", "node": "evil-2", "attempt": 1, "pid": 1}).encode()
            await evil.js.publish(subjects.fact(job_id, kind), squat, headers={"Nats-Msg-Id": f"job:{job_id}:{kind}:1"})
    finally:
        await evil.close()
    code, out = await up.nexus("approve", job_id)
    assert code == 0, out
    (status,) = await _row(up, f"SELECT status FROM jobs WHERE job_id = '{job_id}' AND status IN ('succeeded', 'failed', 'lost')")
    assert status == "succeeded"  # it ran, once (bash: an unset program is an empty command, exit 0)
    facts = "type IN ('job.accepted', 'job.started', 'job.exited')"
    rows = await _rows(up, f"SELECT type, author FROM events WHERE job_id = '{job_id}' AND {facts} AND error IS NULL")
    assert sorted(rows) == [["job.accepted", "agent-local-1"], ["job.exited", "agent-local-1"], ["job.started", "agent-local-1"]]


async def test_another_nodes_agent_cannot_have_a_jobs_output_dropped_as_a_duplicate(up: Up) -> None:
    """JetStream's duplicate window is the whole stream's, not one subject's: a chunk whose
    Nats-Msg-Id anyone could compute, another node's agent could store first (on its own
    subject, where it may publish) and the real chunk would be dropped as its duplicate."""
    job_id = new_job_id()
    evil = await NatsBus.connect(up.url, name="evil", creds=await _issue(up, "agent", "evil", node="evil"))
    try:
        for number in range(4):  # the ids the agent's first chunks of attempt 1 used to carry
            msg_id = f"out:{job_id}:1:{number}"
            await evil.js.publish(subjects.output(job_id, 1), b"EVIL", headers={"Nats-Msg-Id": msg_id, "Nexus-Chunk": "1"})
    finally:
        await evil.close()
    for verb in (("run", "-q", "--id", job_id, "--", "echo secret-result-42"), ("logs", "--raw", job_id)):
        code, out = await up.nexus(*verb, creds=up.creds / "submitter.creds")  # stderr too: the refusals, logged
        shown = [line for line in out.splitlines() if "output.refused" not in line]
        assert code == 0 and shown == ["secret-result-42"], out


async def test_the_agent_runs_only_signed_dispatches_and_never_the_same_attempt_twice(up: Up, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    # An admin credential in a plain client (no Nexus signature): the server lets it publish, the agent refuses.
    nc = await connect(up, up.creds / "admin.creds")
    try:
        argv = ["bash", "-c", f"echo unsigned >> {marker}"]
        forged = {"type": "job.dispatch", "attempt": 1, "tool": "bash", "command": "echo harmless", "argv": argv}
        await nc.jetstream().publish(subjects.dispatch(new_job_id(), up.node), json.dumps(forged).encode())
    finally:
        await nc.close()
    # A real job: runs once.
    job_id = new_job_id()
    code, out = await up.nexus("run", "-q", "--id", job_id, "--", f"echo run >> {marker}")
    assert code == 0, out
    # Its stored, signed dispatch published again (headers and all, a new msg id: past the duplicate window).
    stored = await up.admin.js.get_last_msg(subjects.EVENTS_STREAM, subjects.dispatch(job_id, up.node))
    headers = {k: v for k, v in (stored.headers or {}).items() if k.startswith("Nexus-")}
    await up.admin.js.publish(stored.subject, stored.data, headers=headers)
    # A marker dispatch published after both proves the agent has handled them.
    done = new_job_id()
    code, out = await up.nexus("run", "-q", "--id", done, "--", "true")
    assert code == 0, out
    assert marker.read_text() == "run\n"  # the unsigned one and the replay never ran
    assert f"{job_id} 1" in (up.data / "agents" / up.node / "ran.log").read_text().splitlines()


async def test_only_an_admin_drains_a_node(up: Up) -> None:
    """A drained node gets no new job: taking one out of placement is an admin's act. The server
    refuses it from a submitter and from an agent (even for its own node); the CLI says so."""
    rogue = await _issue(up, "agent", "rogue-d", node="rogue-d")
    for creds in (up.creds / "submitter.creds", rogue):
        await refused(up, creds, subjects.node(up.node, "drained"), b'{"type": "node.drained", "reason": "forged"}')
    await refused(up, rogue, subjects.node("rogue-d", "drained"), b'{"type": "node.drained"}')
    code, out = await up.nexus("nodes", "--drain", up.node, creds=up.creds / "submitter.creds")
    assert code == 1 and "not allowed" in out, out
    code, out = await up.nexus("nodes", "--drain", up.node, "--reason", "patching")
    assert code == 0 and f"node {up.node} drained" in out, out
    (author,) = await _row(up, f"SELECT author FROM events WHERE type = 'node.drained' AND node_id = '{up.node}' AND error IS NULL")
    assert author == "admin"
    code, out = await up.nexus("nodes", "--json")
    assert code == 0 and json.loads(out)[0]["status"] == "drained", out
    code, out = await up.nexus("nodes", "--undrain", up.node)
    assert code == 0, out
    code, out = await up.nexus("run", "-q", "--", "echo", "runs-again")
    assert (code, out) == (0, "runs-again\n")


async def test_a_heartbeat_under_another_nodes_key_is_not_that_nodes(up: Up) -> None:
    # Only an admin can write another key at all; even then the value must name its own key.
    kv = await up.admin.js.key_value("nexus-nodes")
    fake = {"node": up.node, "ts": "2026-12-05T10:00:00Z", "tools": ["bash"], "labels": {"planted": "yes"}, "max_jobs": 64}
    await kv.put("ghost-1", json.dumps(fake).encode())
    marker = new_job_id()
    code, out = await up.nexus("run", "-q", "--id", marker, "--", "true")  # the orchestrator has read the bucket since
    assert code == 0, out
    code, out = await up.nexus("nodes", "--json")
    assert code == 0 and "planted" not in out and "ghost-1" not in out, out


async def test_an_approval_is_recorded_under_the_approvers_identity_not_its_by(up: Up) -> None:
    job_id = new_job_id()
    held = "$NEXUS_UNSET_PROGRAM"  # critical (a program known only at run time), and harmless: it is unset
    code, out = await up.nexus("submit", "--id", job_id, "--", held)
    assert code == 0, out
    await _row(up, f"SELECT status FROM jobs WHERE job_id = '{job_id}' AND status = 'approval_required'")
    alice = await _issue(up, "approver", "alice")
    # A typed name is never the approver: refused with the reason, nothing recorded.
    code, out = await up.nexus("approve", job_id, "--by", "mallory", creds=alice)
    assert code == 2 and "--by is not taken" in out and "Traceback" not in out, out
    # A submitter's approval is refused by the server: with --json, still one object saying so.
    code, out = await up.nexus("approve", job_id, "--json", creds=up.creds / "submitter.creds")
    said = json.loads(out.splitlines()[-1])
    assert code == 1 and (said["outcome"], said["seq"]) == ("refused", None) and "not allowed" in said["reason"], out
    # The CLI says who the record names (the credentials' name), not $USER, and what the orchestrator did.
    code, out = await up.nexus("approve", job_id, "--json", creds=alice, env={"USER": "mallory"})
    assert code == 0, out
    said = json.loads(out.splitlines()[-1])
    assert (said["job_id"], said["decision"], said["by"], said["outcome"]) == (job_id, "approved", "alice", "acted"), said
    row = await _row(up, f"SELECT status, approved_by FROM jobs WHERE job_id = '{job_id}' AND status IN ('succeeded', 'failed')")
    assert row == ["succeeded", "alice"]
    code, out = await up.nexus("show", job_id, "--json")  # DESIGN §9: shown by `nexus show --json`
    assert code == 0 and json.loads(out)["approved_by"] == "alice", out


async def test_a_gate_answer_the_orchestrator_refuses_fails_and_progress_lines_name_verified_identities(up: Up, tmp_path: Path) -> None:
    """Admin credentials may approve, but a template naming its approvers takes only them: the
    orchestrator records `approval_refused`, and `nexus approve` says so and exits 1 (it said
    "approved" and exited 0). `nexus pipeline run` names the requester and the approver by their
    credentials, not by $USER (it printed `requested_by=anonymous` with $USER unset)."""
    template = tmp_path / "gate.yaml"
    template.write_text(
        "name: gate\napprovers: [alice]\nsteps:\n  - id: release\n    approval: true\n    approval_timeout_s: 600\n    command: 'true'\n"
    )
    alice = await _issue(up, "approver", "alice")
    no_user = {"USER": "", "LOGNAME": ""}
    following = asyncio.create_task(up.nexus("pipeline", "run", str(template), "--id", "gate-1", env=no_user))
    await _row(up, "SELECT status FROM pipeline_steps WHERE pipeline_id = 'gate-1' AND status = 'waiting_approval'")
    code, out = await up.nexus("approve", "gate-1", "release", env=no_user)
    assert code == 1, out
    said = "nexus: error: pipeline gate-1 step release: approved by 'admin' refused: 'admin' is not among this pipeline's approvers"
    assert said in out, out
    code, out = await up.nexus("approve", "gate-1", "release", creds=alice)
    assert code == 0 and "pipeline gate-1 step release approved by alice; now " in out, out
    code, out = await asyncio.wait_for(following, 60)
    assert code == 0, out
    assert "requested_by=admin" in out and "by=alice" in out and "anonymous" not in out, out


async def test_an_answer_not_acted_on_in_time_is_said_to_be_only_recorded(up: Up) -> None:
    job_id = new_job_id()
    code, out = await up.nexus("submit", "--id", job_id, "--", "$NEXUS_UNSET_PROGRAM")
    assert code == 0, out
    await _row(up, f"SELECT status FROM jobs WHERE job_id = '{job_id}' AND status = 'approval_required'")
    code, out = await up.nexus("approve", job_id, "--wait", "0")
    assert code == 0 and f"job {job_id} approved by admin: recorded; not acted on yet" in out, out


async def test_reading_what_the_credentials_may_not_read_says_so(up: Up) -> None:
    """An agent may not read the log: `nexus logs` said "no answer from JetStream (TimeoutError)"."""
    job_id = new_job_id()
    code, out = await up.nexus("run", "-q", "--id", job_id, "--", "true")
    assert code == 0, out
    agent = await _issue(up, "agent", "agent-read-1", node="read-1")
    code, out = await up.nexus("logs", job_id, creds=agent)
    assert code == 1 and "not allowed" in out and "reading stream NEXUS_EVENTS" in out and "'agent-read-1' (agent)" in out, out
    assert "no answer" not in out, out
    # Nor ask the orchestrator: said so (it said "the orchestrator did not answer within 10s").
    code, out = await up.nexus("show", job_id, creds=agent)
    assert code == 1 and "not allowed" in out and "asking nexus.rpc.query" in out and "did not answer" not in out, out
    # The log, the orchestrator, the keys bucket: each said at once (audit verify waited for good;
    # `nodes` and `replay` said "no answer from JetStream (TimeoutError)" after 10 s).
    for args, what in (
        (("audit", "verify"), "reading stream NEXUS_EVENTS"),
        (("nodes",), "asking nexus.rpc.query"),  # the fleet view is the orchestrator's (app.nodes.fleet)
        (("replay", "--db", str(up.data / "agent-replay.duckdb")), "reading bucket nexus-keys"),
    ):
        code, out = await asyncio.wait_for(up.nexus(*args, creds=agent), 60)
        assert code == 1 and f"not allowed: the server refuses {what} from 'agent-read-1' (agent)" in out, (args, out)
        assert "no answer" not in out and "Traceback" not in out, (args, out)


async def test_an_agent_cannot_read_another_nodes_dispatches(up: Up) -> None:
    job_id = new_job_id()
    code, out = await up.nexus("run", "-q", "--id", job_id, "--", "echo", "for-local-1-only")
    assert code == 0, out
    rogue = await _issue(up, "agent", "peeker", node="peek-1")
    dispatch = subjects.dispatch(job_id, up.node)
    events = subjects.EVENTS_STREAM
    # An ordered (unnamed) consumer on the log, a named one filtered on the dispatch, a direct get of it: refused.
    config = json.dumps({"stream_name": events, "config": {"filter_subject": dispatch, "deliver_subject": "_INBOX.peek"}}).encode()
    await refused(up, rogue, f"$JS.API.CONSUMER.CREATE.{events}", config)
    await refused(up, rogue, f"$JS.API.CONSUMER.CREATE.{events}.peek.{dispatch}", config)
    await refused(up, rogue, f"$JS.API.CONSUMER.CREATE.{events}.peek.nexus.evt.job.*.dispatch.{up.node}", config)
    await refused(up, rogue, f"$JS.API.DIRECT.GET.{events}.{dispatch}")
    await refused(up, rogue, f"$JS.API.STREAM.MSG.GET.{events}", json.dumps({"last_by_subj": dispatch}).encode())
    # Nor any job's request (the command): not this one's, not every job's at once, not all of a job's events.
    for peek in (subjects.job(job_id, "requested"), "nexus.evt.job.*.requested", subjects.job(job_id, "*"), "nexus.evt.job.*.*"):
        await refused(up, rogue, f"$JS.API.CONSUMER.CREATE.{events}.peek.{peek}", config)
    # Nor the copies in NEXUS_DISPATCH: no consumer of its own there, no get.
    copies = subjects.DISPATCH_STREAM
    await refused(up, rogue, f"$JS.API.CONSUMER.CREATE.{copies}", config)
    await refused(up, rogue, f"$JS.API.CONSUMER.CREATE.{copies}.peek.{subjects.delivery(up.node)}", config)
    await refused(up, rogue, f"$JS.API.DIRECT.GET.{copies}.{subjects.delivery(up.node)}")
    await refused(up, rogue, f"$JS.API.STREAM.MSG.GET.{copies}", json.dumps({"last_by_subj": subjects.delivery(up.node)}).encode())
    # What it may read of a job (its own view: what can stop a dispatch) holds neither.
    bus = await NatsBus.connect(up.url, name="peeker", creds=rogue)
    try:
        seen = await bus.node_history(job_id, "peek-1")
    finally:
        await bus.close()
    # (Other nodes' facts are on the job's own subjects, DESIGN §3, as its outcome is: no command, no output.)
    assert {r.kind for r in seen} == {"assigned", "accepted", "started", "exited", "succeeded"}
    assert all(not r.subject.endswith(f".{up.node}") for r in seen)
    assert b"for-local-1-only" not in b"".join(r.raw for r in seen)


async def subscribe_refused(up: Up, creds: Path, subject: str) -> None:
    """Subscribe as `creds` and see the server refuse it."""
    nc = await connect(up, creds)
    try:
        await nc.subscribe(subject)
        with contextlib.suppress(nats.errors.Error):
            await nc.flush(timeout=5)
        await wait_for(lambda: "permissions violation" in str(nc.last_error or "").lower(), 10, what=f"the server to refuse {subject}")
    finally:
        await nc.close()


async def test_an_agent_cannot_snoop_on_replies(up: Up) -> None:
    """A node's dispatches reach it as replies to its pull requests, and answers to queries
    travel on inboxes too: an agent may subscribe to its own inbox prefix only."""
    rogue = await _issue(up, "agent", "snooper", node="snoop-1")
    await subscribe_refused(up, rogue, "_INBOX.>")
    await subscribe_refused(up, rogue, f"{subjects.node_inbox(up.node)}.>")
    await subscribe_refused(up, rogue, ">")
    # Its own inbox works: the agent's bus connects under it and reads what it may.
    bus = await NatsBus.connect(up.url, name="snoop-1", creds=rogue)
    try:
        assert bus.nc._inbox_prefix == subjects.node_inbox("snoop-1").encode()
        info = await bus.js.stream_info(subjects.EVENTS_STREAM)
        assert info.config.name == subjects.EVENTS_STREAM and not bus.denied
    finally:
        await bus.close()
    # And the real agent, under its own prefix, still runs jobs.
    code, out = await up.nexus("run", "-q", "--", "echo", "still-runs")
    assert (code, out) == (0, "still-runs\n"), out


async def test_readers_may_watch_the_log_live_and_agents_may_not(up: Up) -> None:
    job_id = new_job_id()
    nc = await connect(up, up.creds / "submitter.creds")
    try:
        sub = await nc.subscribe(subjects.job_all(job_id))
        await nc.flush()
        await nc.publish(subjects.job(job_id, "requested"), _request("true"))
        first = await sub.next_msg(timeout=10)
        assert first.subject == subjects.job(job_id, "requested") and nc.last_error is None
    finally:
        await nc.close()
    rogue = await connect(up, await _issue(up, "agent", "watcher", node="watch-1"))
    try:
        await rogue.subscribe(f"nexus.evt.job.*.dispatch.{up.node}")
        with contextlib.suppress(nats.errors.Error):
            await rogue.flush(timeout=5)
        await wait_for(lambda: "permissions violation" in str(rogue.last_error or "").lower(), 10, what="the subscription refused")
    finally:
        await rogue.close()


async def test_credentials_issued_to_expire_stop_working_by_themselves(up: Up) -> None:
    short = await _issue(up, "viewer", "temp", None, "--expires", "3s")
    code, out = await up.nexus("jobs", creds=short)
    assert code == 0, out

    async def refused_now() -> bool:
        code, out = await up.nexus("jobs", creds=short)
        return code != 0 and "refused the credentials" in out

    await wait_for(refused_now, 30, what="the server to refuse the expired credentials")


async def test_a_revoked_identity_is_refused_at_once_and_others_keep_working(up: Up) -> None:
    eve = await _issue(up, "viewer", "eve")
    bob = await _issue(up, "viewer", "bob")
    node = await _issue(up, "agent", "agent-gone-1", node="gone-1")
    live = await connect(up, eve)
    try:
        assert live.is_connected
        code, out = await up.nexus("jobs", creds=eve)
        assert code == 0, out
        revoke = [NEXUS, "creds", "revoke", "eve", "agent-gone-1", "--keyring", str(up.creds), "--json"]
        done = await asyncio.to_thread(subprocess.run, revoke, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        said = json.loads(done.stdout)
        assert said["reloaded_pid"] and len(said["newly_revoked"]) == 2
        # The open connection is dropped, and no new one is let in.
        await wait_for(lambda: not live.is_connected, 10, what="the server to drop the revoked identity's connection")
    finally:
        await live.close()
    code, out = await up.nexus("jobs", creds=eve)
    assert code != 0 and "refused the credentials" in out and "may have been revoked" in out, out
    code, out = await up.nexus("jobs", creds=node)
    assert code != 0 and "refused the credentials" in out, out
    # Everyone else is untouched; the person gets new credentials, which work.
    code, out = await up.nexus("jobs", creds=bob)
    assert code == 0, out
    code, out = await up.nexus("jobs", creds=await _issue(up, "viewer", "eve"))
    assert code == 0, out
    listed = subprocess.run([NEXUS, "creds", "list", "--keyring", str(up.creds), "--json"], capture_output=True, text=True, check=True)
    revoked = {(i["name"], i["revoked_at"] is not None) for i in json.loads(listed.stdout)}
    assert {("eve", True), ("eve", False), ("bob", False), ("agent-gone-1", True)} <= revoked
    # Asked for someone it never issued: a clear error, nothing changed.
    done = subprocess.run([NEXUS, "creds", "revoke", "mallory", "--keyring", str(up.creds)], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "no identity named 'mallory'" in done.stderr and "Traceback" not in done.stderr


async def test_a_follower_whose_credentials_are_revoked_is_told_so(up: Up) -> None:
    """It said "lost the connection to NATS ... waiting up to 60s for it", and waited that long."""
    job_id = new_job_id()
    code, out = await up.nexus("submit", "--id", job_id, "--", "sleep 120")
    assert code == 0, out
    auditor = await _issue(up, "viewer", "auditor")
    env = {**os.environ, "NEXUS_NATS_URL": up.url, "NEXUS_NATS_CREDS": str(auditor)}
    follower = await asyncio.create_subprocess_exec(
        NEXUS, "logs", "-f", job_id, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        code, out = await up.nexus("history", job_id, creds=auditor)  # the same credentials work until now
        assert code == 0, out
        revoke = [NEXUS, "creds", "revoke", "auditor", "--keyring", str(up.creds)]
        done = await asyncio.to_thread(subprocess.run, revoke, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        _, err = await asyncio.wait_for(follower.communicate(), 45)
    finally:
        if follower.returncode is None:
            follower.kill()
            await follower.wait()
        await up.nexus("cancel", job_id)
    said = err.decode()
    assert follower.returncode == 1 and "the server refused the credentials" in said and "may have been revoked" in said, said


async def test_agents_read_their_dispatches_from_nexus_dispatch_and_older_credentials_from_the_log(
    up: Up, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent reads its node's consumer on NEXUS_DISPATCH; with credentials issued before that
    stream (no permission on its consumer there) it keeps its consumer on NEXUS_EVENTS, says so in
    its heartbeat, and the orchestrator makes that one. Issued again, the agent moves over."""
    from agent.service import Agent
    from orchestrator.trust import roles
    from orchestrator.trust.keyring import Keyring

    async def consumer_on(stream: str, node: str) -> bool:
        try:
            await up.admin.js.consumer_info(stream, f"agent-{node}")
        except nats.js.errors.NotFoundError:
            return False
        return True

    assert await consumer_on(subjects.DISPATCH_STREAM, up.node) and not await consumer_on(subjects.EVENTS_STREAM, up.node)
    with monkeypatch.context() as patch:
        now = roles._agent
        patch.setattr(roles, "_agent", lambda node: [p for p in now(node) if subjects.DISPATCH_STREAM not in p])
        old_creds = Keyring(up.creds).issue("agent", "old-agent", node="old-1", out=tmp_path / "old.creds").path
    new_creds = Keyring(up.creds).issue("agent", "new-agent", node="old-1", out=tmp_path / "new.creds").path

    async def run_on_old_1(creds: Path, word: str) -> NatsBus:
        bus = await NatsBus.connect(up.url, name="old-1", daemon=True, creds=creds)
        agent = Agent(bus, "old-1", heartbeat_s=0.5, state_dir=tmp_path / "old-1")
        task = asyncio.create_task(agent.run())
        try:
            code, out = await up.nexus("run", "--node", "old-1", "--", "echo", word)
            assert code == 0 and word in out, out
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            agent.ledger.close()
            await bus.close()
        return bus

    bus = await run_on_old_1(old_creds, "through-the-log")
    assert bus.dispatch_stream("old-1") == subjects.EVENTS_STREAM
    assert await consumer_on(subjects.EVENTS_STREAM, "old-1") and not await consumer_on(subjects.DISPATCH_STREAM, "old-1")
    # The same node with credentials issued now: its heartbeat names NEXUS_DISPATCH, the orchestrator
    # (which knows the node already) makes its consumer there, and its jobs arrive there.
    bus = await run_on_old_1(new_creds, "through-nexus-dispatch")
    assert bus.dispatch_stream("old-1") == subjects.DISPATCH_STREAM
    assert await consumer_on(subjects.DISPATCH_STREAM, "old-1")


async def test_an_agent_whose_credentials_may_not_read_its_heartbeat_runs_without_the_one_agent_check(
    up: Up, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agent credentials from before `perms:8` may not read their node's heartbeat back (agent.node_claim):
    the agent says so and runs as before, rather than not at all."""
    from agent.service import Agent
    from orchestrator.trust import roles
    from orchestrator.trust.keyring import Keyring

    with monkeypatch.context() as patch:
        now = roles._agent
        patch.setattr(roles, "_agent", lambda node: [p for p in now(node) if not p.startswith("$JS.API.DIRECT.GET.KV_")])
        old_creds = Keyring(up.creds).issue("agent", "old-agent", node="old-2", out=tmp_path / "old.creds").path
    bus = await NatsBus.connect(up.url, name="old-2", daemon=True, creds=old_creds)
    agent = Agent(bus, "old-2", heartbeat_s=0.5, state_dir=tmp_path / "old-2")
    # What it logs, whichever stream an earlier test left structlog printing to.
    with structlog_module().testing.capture_logs() as said:
        task = asyncio.create_task(agent.run())
        try:
            await asyncio.wait_for(agent.ready.wait(), 60)  # after its read was refused (a request that times out)
            await _row(up, "SELECT node_id FROM nodes WHERE node_id = 'old-2' AND status = 'online'")
            code, out = await up.nexus("run", "--node", "old-2", "--", "echo", "unchecked")
            assert code == 0 and "unchecked" in out, out
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            agent.ledger.close()
            await bus.close()
    assert "agent.cannot_check_node" in [e["event"] for e in said]


async def test_a_readers_consumer_made_to_outlive_everyone_is_removed_once_unused(up: Up, tmp_path: Path) -> None:
    viewer = await _issue(up, "viewer", "vic")
    nc = await connect(up, viewer)
    # A live reader: an ordered consumer on the log that its client still holds.
    live = await nc.jetstream().subscribe(subjects.EVENTS_ALL, ordered_consumer=True)
    try:
        # The attack: consumers meant to stay ~3 years after their maker went away.
        hoard = json.dumps({"stream_name": "x", "config": {"deliver_policy": "all", "ack_policy": "none", "inactive_threshold": 10**17}})
        made = []
        for stream in (subjects.EVENTS_STREAM, subjects.OUTPUT_STREAM, f"KV_{subjects.NODES_BUCKET}"):
            reply = await nc.request(f"$JS.API.CONSUMER.CREATE.{stream}", hoard.replace('"x"', json.dumps(stream)).encode(), timeout=5)
            name = json.loads(reply.data)["name"]
            made.append((stream, name))
            assert (await up.admin.js.consumer_info(stream, name)).config.inactive_threshold > 10**7  # the server kept it
        # A second orchestrator (two at once are supported) that removes consumers after 1 s unused.
        orch = await asyncio.create_subprocess_exec(
            NEXUS, "orchestrator", "--nats", up.url, "--creds", str(up.creds / "admin.creds"), "--db", str(tmp_path / "second.duckdb"),
            "--consumer-idle", "1s", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:

            async def gone() -> bool:
                for stream, name in made:
                    with contextlib.suppress(nats.js.errors.NotFoundError):
                        await up.admin.js.consumer_info(stream, name)
                        return False
                return True

            await wait_for(gone, 60, what="the unused consumers to be removed")
        finally:
            orch.send_signal(signal.SIGINT)
            await asyncio.wait_for(orch.wait(), 30)
        # What is in use stays: the live reader's consumer, and the agent's dispatch consumer.
        await up.admin.js.consumer_info(subjects.EVENTS_STREAM, live._consumer)
        await up.admin.js.consumer_info(subjects.DISPATCH_STREAM, f"agent-{up.node}")
        code, out = await up.nexus("run", "-q", "--", "echo", "still-works")
        assert (code, out.strip()) == (0, "still-works"), out
    finally:
        await live.unsubscribe()
        await nc.close()


async def test_the_api_with_tokens_refuses_to_start_as_an_identity_that_cannot_name_their_users(up: Up, tmp_path: Path) -> None:
    """DESIGN §9: the record names the token's user for the HTTP API, and only an admin service
    identity may name the user it authenticated. An audit followed the production guide (an admin
    identity without --service) and every request and approval was recorded as 'api-ops'."""
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('[[token]]\nuser = "otto"\nrole = "operator"\ntoken = "' + "t" * 32 + '"\n')
    plain = await _issue(up, "admin", "api-ops")
    code, out = await up.nexus("api", "--port", "0", "--auth", str(tokens), creds=plain)
    assert code == 2 and "not an admin service identity" in out and "--service" in out, out


async def test_an_agent_whose_credentials_are_revoked_says_so(up: Up, tmp_path: Path) -> None:
    """It logged "connection closed" once a second, and nothing about why (an audit)."""
    creds = await _issue(up, "agent", "rev-1", node="rev-1")
    env = {**os.environ, "NEXUS_NATS_URL": up.url, "NEXUS_NATS_CREDS": str(creds)}
    log_path = tmp_path / "agent.log"
    with log_path.open("wb") as sink:
        agent = await asyncio.create_subprocess_exec(
            NEXUS, "agent", "--node", "rev-1", "--state-dir", str(tmp_path / "rev-1"), "--heartbeat", "0.5",
            stdout=sink, stderr=asyncio.subprocess.STDOUT, env=env, cwd=tmp_path,
        )  # fmt: skip
    try:
        await wait_for(lambda: _node_online(up, "rev-1"), 30, what="node rev-1 online")
        revoke = [NEXUS, "creds", "revoke", "rev-1", "--keyring", str(up.creds)]
        done = await asyncio.to_thread(subprocess.run, revoke, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr

        def said() -> bool:
            text = log_path.read_text(errors="replace")
            return "agent.credentials_refused" in text and "may have been revoked" in text

        await wait_for(said, 30, what="the agent to say its credentials were refused")
    finally:
        agent.kill()
        await agent.wait()
