"""Nexus on a real 3-node JetStream cluster (issue 15): tests/integration/test_cluster*.py and
bench/cluster_failover.py.

    NexusCluster   three nats-servers from ops/nats-cluster-{1,2,3}.conf (TLS, operator JWT
                   auth, authenticated routes, sync_interval: always; copied on loopback by
                   test_ops_configs' helpers), then `nexus orchestrator --replicas 3` and
                   `nexus agent` processes given all three URLs, each with its own .creds
    Work           the jobs' own record: a marker file per job (one line per run) and, per
                   node, `+ id` / `- id` lines appended under flock when a command starts
                   and ends, so the highest concurrency a node reached is read off the disk

Everything here is a real process; waits are on conditions (wait_for), never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors

from bus.errors import BusError
from bus.identity import SIGNER_HEADER
from bus.nats_bus import NatsBus
from orchestrator.client import NexusClient, Rows
from orchestrator.trust.keyring import Keyring
from schemas import codec, subjects
from schemas.errors import NexusError
from schemas.events import JobRequested
from schemas.records import Record
from schemas.rpc import QueryRequest, QueryResult
from tests.conftest import NEXUS, wait_for
from tests.integration.faults_support import _dying_with_us
from tests.integration.ops_support import CLUSTER, Fleet, Pki, Server, cluster_conf, free_ports, make_pki, routes_conf

TERMINAL = ("rejected", "denied", "succeeded", "failed", "timed_out", "cancelled", "lost")
OPS_ENV = Path(__file__).resolve().parents[2] / "ops" / "nexus-cluster.env"


def ops_env() -> dict[str, str]:
    """ops/nexus-cluster.env as systemd reads an EnvironmentFile (KEY=VALUE lines, # comments)."""
    pairs = (line.split("=", 1) for line in OPS_ENV.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def orchestrator_flags() -> list[str]:
    """The orchestrator's flags as the ops env file gives them (--replicas 3, a node TTL above a
    stream leader's failover): the tests run what operators are told to run."""
    flags = ops_env()["NEXUS_ORCHESTRATOR_ARGS"].split()
    assert flags[flags.index("--replicas") + 1] == "3", flags
    return flags


HEARTBEAT_S = 0.5
LOG_LEVEL = os.environ.get("NEXUS_CLUSTER_LOG_LEVEL", "info")


@dataclass
class Work:
    """What the jobs record themselves (see the module docstring)."""

    root: Path

    def __post_init__(self) -> None:
        (self.root / "marks").mkdir(parents=True, exist_ok=True)
        (self.root / "nodes").mkdir(parents=True, exist_ok=True)

    def command(self, job_id: str, sleep_s: float) -> str:
        marks, nodes = self.root / "marks", self.root / "nodes"
        # $NEXUS_NODE is set by the agent that runs it. flock orders the lines across the node's jobs.
        line = f"""flock {nodes}/"$NEXUS_NODE".lock sh -c 'echo "$1 {job_id}" >> {nodes}/"$NEXUS_NODE"' mark"""
        return f"echo {job_id} >> {marks}/{job_id}; {line} +; sleep {sleep_s:g}; {line} -"

    def runs(self, job_id: str) -> int:
        path = self.root / "marks" / job_id
        return len(path.read_text().splitlines()) if path.exists() else 0

    def peak(self) -> dict[str, int]:
        """The highest number of this node's commands that ran at once, per node."""
        peaks: dict[str, int] = {}
        for path in (self.root / "nodes").iterdir():
            if path.suffix == ".lock":
                continue
            now = top = 0
            for line in path.read_text().splitlines():
                assert line[:2] in ("+ ", "- "), f"{path}: {line!r}"
                now += 1 if line.startswith("+") else -1
                top = max(top, now)
            peaks[path.name] = top
        return peaks


@dataclass
class NexusCluster:
    root: Path
    fleet: Fleet = field(default_factory=Fleet)
    keyring: Keyring | None = None
    pki: Pki | None = None
    confs: dict[str, Path] = field(default_factory=dict)
    members: dict[str, Server] = field(default_factory=dict)
    orchestrators: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    agents: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    identities: dict[str, str] = field(default_factory=dict)  # public key -> name
    observer: NexusClient | None = None
    submitter: NexusClient | None = None
    _spawned: list[asyncio.subprocess.Process] = field(default_factory=list)
    _cert_file: str | None = None

    # ------------------------------------------------------------ nats-servers

    async def start(self, members: int = 3) -> None:
        """The cluster's configs, `members` of its servers started (the rest: start_rest), the clients."""
        self.pki = make_pki(self.root / "tls")
        self.keyring = Keyring(self.root / "keyring")
        self.keyring.ensure()
        # NatsBus's default TLS context (ours and the processes') trusts the test CA; put back in close().
        self._cert_file = os.environ.get("SSL_CERT_FILE")
        os.environ["SSL_CERT_FILE"] = str(self.pki.ca)
        ports = free_ports(3)
        routes = routes_conf(*(f"127.0.0.1:{p}" for p in ports))
        for n, name in enumerate(CLUSTER, 1):
            self.confs[name] = cluster_conf(self.root / f"nats-{n}", n, self.pki, self.keyring, ports[n - 1], routes)
        started = await asyncio.gather(*(self.fleet.start(self.confs[name]) for name in CLUSTER[:members]))
        self.members = dict(zip(CLUSTER, started, strict=False))
        if members == len(CLUSTER):
            await self.formed()
        self.observer = NexusClient(await self.connect("observer", "admin"))
        self.submitter = NexusClient(await self.connect("submitter", "submitter"))

    async def start_rest(self) -> None:
        """Start the members start() left out, and wait for the cluster to form."""
        rest = [name for name in CLUSTER if name not in self.members]
        started = await asyncio.gather(*(self.fleet.start(self.confs[name]) for name in rest))
        self.members.update(zip(rest, started, strict=True))
        await self.formed()

    async def formed(self, timeout: float = 60) -> None:
        """Every live member routes to the others and is current with one JetStream meta leader."""

        async def ok() -> bool:
            try:
                for m in self.members.values():
                    if m.proc.returncode is not None:
                        continue
                    meta = (await m.monitor("/jsz")).get("meta_cluster") or {}
                    if not meta.get("leader") or not await m.healthy():
                        return False
            except OSError:
                return False
            return True

        await wait_for(ok, timeout, what="the cluster to have a JetStream meta leader, every member current")

    @property
    def urls(self) -> str:
        """All members, comma separated, as --nats / NEXUS_NATS_URL take them."""
        return ",".join(f"tls://127.0.0.1:{m.client_port}" for m in self.members.values())

    async def connect(self, name: str, role: str, node: str | None = None) -> NatsBus:
        creds = self.creds(name, role, node)
        return await NatsBus.connect(self.urls, name=f"test-{name}", daemon=True, creds=creds)

    def creds(self, name: str, role: str, node: str | None = None) -> Path:
        assert self.keyring is not None
        path = self.keyring.dir / f"{name}.creds"
        if not path.exists():
            issued = self.keyring.issue(role, name, node)  # type: ignore[arg-type]
            self.identities[issued.public_key] = name
        return path

    async def stream_leader(self, stream: str = subjects.EVENTS_STREAM) -> str:
        async def leader() -> str | None:
            try:
                info = await self.js.stream_info(stream)
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
                return None
            return info.cluster.leader if info.cluster is not None else None

        return await wait_for(leader, 60, what=f"{stream} to have a leader")

    @property
    def js(self) -> Any:
        assert self.observer is not None
        return self.observer.bus.js  # type: ignore[attr-defined]

    async def kill_member(self, name: str) -> None:
        """kill -9 one nats-server."""
        await self.fleet.stop(self.members[name])

    async def restart_member(self, name: str) -> None:
        """Start a killed member again on its store (its client port changes: clients learn it from the others)."""
        self.members[name] = await self.fleet.start(self.confs[name])
        await self.formed()

    async def member_of(self, connection_name: str) -> str | None:
        """The member a client (by its connection name) is connected to now."""
        for name, m in self.members.items():
            if m.proc.returncode is not None:
                continue
            with contextlib.suppress(OSError):
                conns = (await m.monitor("/connz?limit=1024")).get("connections") or []
                if any(c.get("name") == connection_name for c in conns):
                    return name
        return None

    # ------------------------------------------------------------ nexus processes

    def logs(self) -> Path:
        path = self.root / "logs"
        path.mkdir(exist_ok=True)
        return path

    async def _spawn(self, name: str, creds: Path, *args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
        argv, preexec = _dying_with_us([NEXUS, *args, "--log-level", LOG_LEVEL])
        environ = {**os.environ, "NEXUS_NATS_URL": self.urls, "NEXUS_NATS_CREDS": str(creds), **(env or {})}
        with (self.logs() / f"{name}.log").open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, env=environ, preexec_fn=preexec
            )
        self._spawned.append(proc)
        return proc

    async def nexus(self, *args: str) -> tuple[int, str]:
        """A CLI verb against the cluster (all three URLs) as the observer's admin identity."""
        env = {**os.environ, "NEXUS_NATS_URL": self.urls, "NEXUS_NATS_CREDS": str(self.creds("observer", "admin"))}
        p = await asyncio.create_subprocess_exec(
            NEXUS, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env, cwd=self.root
        )
        out, _ = await asyncio.wait_for(p.communicate(), 120)
        assert p.returncode is not None
        return p.returncode, out.decode(errors="replace")

    def log_text(self, name: str) -> str:
        path = self.logs() / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def start_orchestrator(self, name: str, *extra: str, wait: bool = True) -> asyncio.subprocess.Process:
        """`nexus orchestrator --replicas 3` with its own DuckDB file and identity (and `extra` flags,
        which override the ops env's); the sealing key is the first orchestrator's (orchestrators
        sharing a log share it: docs/operations.md)."""
        data = self.root / name
        data.mkdir(exist_ok=True)
        first = next(iter(self.orchestrators), None)
        if first is not None and not (data / "sealing.key").exists() and (self.root / first / "sealing.key").exists():
            shutil.copy2(self.root / first / "sealing.key", data / "sealing.key")
        creds = self.creds(name, "admin")
        proc = await self._spawn(name, creds, "orchestrator", "--db", str(data / "nexus.duckdb"), *orchestrator_flags(), *extra)
        self.orchestrators[name] = proc
        if not wait:
            return proc

        async def answering() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log_text(name)[-3000:]}")
            return "orchestrator.started" in self.log_text(name) and await self.try_query("SELECT 1") is not None

        await wait_for(answering, 90, what=f"{name} started and answering")
        return proc

    async def start_agent(self, node: str, *, max_jobs: int = 2, labels: dict[str, str] | None = None) -> asyncio.subprocess.Process:
        creds = self.creds(f"agent-{node}", "agent", node)
        state = self.root / "agents" / node
        args = ("agent", "--node", node, "--heartbeat", f"{HEARTBEAT_S:g}", "--kill-grace", "0.5", "--max-jobs", str(max_jobs))
        flags = [f for k, v in (labels or {}).items() for f in ("--label", f"{k}={v}")]
        proc = await self._spawn(f"agent-{node}", creds, *args, *flags, "--state-dir", str(state))
        self.agents[node] = proc

        async def registered() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"agent {node} exited with {proc.returncode}:\n{self.log_text(f'agent-{node}')[-3000:]}")
            if "agent.started" not in self.log_text(f"agent-{node}"):
                return False
            rows = await self.try_query("SELECT status FROM nodes WHERE node_id = ?", [node])
            return rows is not None and rows.rows == [["online"]]

        await wait_for(registered, 90, what=f"agent {node} registered")
        return proc

    @staticmethod
    async def kill(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()

    async def close(self) -> None:
        for proc in self._spawned:
            with contextlib.suppress(ProcessLookupError):
                await self.kill(proc)
        for client in (self.observer, self.submitter):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.bus.close(timeout_s=2.0)
        await self.fleet.stop_all()
        if self.pki is not None:
            if self._cert_file is None:
                os.environ.pop("SSL_CERT_FILE", None)
            else:
                os.environ["SSL_CERT_FILE"] = self._cert_file

    # ------------------------------------------------------------ jobs and state

    async def submit(self, job_id: str, command: str, *, node: str | None = None) -> int:
        """`requested` until acked (retried under the same message id: harmless); its sequence."""
        assert self.submitter is not None
        req = JobRequested(command=command, node=node)
        deadline = time.monotonic() + 60
        while True:
            try:
                return await self.submitter.submit(job_id, req)
            except BusError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def try_query(self, sql: str, params: Iterable[Any] = ()) -> Rows | None:
        assert self.observer is not None
        try:
            return await self.observer.query(sql, list(params), timeout_s=5.0)
        except (NexusError, nats.errors.Error, TimeoutError):
            return None

    async def statuses(self, ids: list[str]) -> dict[str, str] | None:
        rows = await self.try_query("SELECT job_id, status FROM jobs WHERE job_id IN (SELECT unnest(?::VARCHAR[]))", [ids])
        return None if rows is None else {r[0]: r[1] for r in rows.rows}

    async def all_ended(self, ids: list[str], timeout: float) -> dict[str, str]:
        async def ended() -> dict[str, str] | None:
            got = await self.statuses(ids)
            if got is None or len(got) < len(ids) or any(s not in TERMINAL for s in got.values()):
                return None
            return got

        return await wait_for(ended, timeout, what=f"all {len(ids)} jobs to end")

    async def ask(self, sql: str, params: list[Any] | None = None) -> tuple[str, QueryResult]:
        """One query, answered by whichever orchestrator the queue group picks: (its name, its answer)."""
        assert self.observer is not None
        nc = self.observer.bus.nc  # type: ignore[attr-defined]
        msg = await nc.request(subjects.RPC_QUERY, codec.encode(QueryRequest(sql=sql, params=params or [])), timeout=5)
        signer = (msg.headers or {}).get(SIGNER_HEADER, "")
        return self.identities.get(signer, signer), codec.decode_query_result(msg.data)

    async def history(self, job_id: str) -> list[Record]:
        assert self.observer is not None
        return await self.observer.history(job_id)

    async def records(self, job_id: str) -> list[Record]:
        """The job's records as the log holds them (`history` shows them as the orchestrator
        judged them: of a job it never saw requested, nothing counts)."""
        assert self.observer is not None
        return [r async for batch in self.observer.bus.read_records(subjects.job_all(job_id)) for r in batch]

    async def stored_subject(self, seq: int) -> str | None:
        """The subject stored at `seq` of the event stream (None: nothing there), once the
        stream answers (right after a member's loss it may still be electing a leader: 503)."""

        async def answer() -> tuple[str | None] | None:
            try:
                msg = await self.js.get_msg(subjects.EVENTS_STREAM, seq)
            except nats.js.errors.NotFoundError:
                return (None,)
            except (nats.js.errors.ServiceUnavailableError, nats.errors.TimeoutError, nats.errors.NoRespondersError):
                return None
            return (str(msg.subject),)

        (subject,) = await wait_for(answer, 60, what=f"the event stream to answer for seq {seq}")
        return subject


# Decisions and facts a job has at most once per attempt (a decision published twice shows here).
ONCE = ("validated", "assigned", "dispatch", "accepted", "started", "exited", *TERMINAL)


async def facts_once(cluster: NexusCluster, job_ids: list[str]) -> dict[str, list[str]]:
    """Per job, the facts and decisions that appear more than once for one attempt (empty: none)."""
    twice: dict[str, list[str]] = {}
    for job_id in job_ids:
        seen: dict[tuple[str, int], int] = {}
        for rec in await cluster.history(job_id):
            attempt = getattr(rec.event, "attempt", None)
            if rec.kind in ONCE and rec.event is not None:
                key = (rec.kind, attempt if isinstance(attempt, int) else 0)
                seen[key] = seen.get(key, 0) + 1
        dup = [f"{k}#{a} x{n}" for (k, a), n in seen.items() if n > 1]
        if dup:
            twice[job_id] = dup
    return twice
