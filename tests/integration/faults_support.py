"""Real processes for the fault-injection suite (tests/integration/test_faults.py).

    ProcessStack   a nats-server (EmbeddedNats), `nexus orchestrator` and `nexus agent`
                   subprocesses, each with its log in a file, killable with SIGKILL and
                   restartable on the same store, DuckDB file, port or node id
    Submitter      a plain nats-py client: JetStream publish with ack, one `requested` per
                   job, retried under the same Nats-Msg-Id until acked; records each seq
    Marks          one file per job; each run of its command appends a line, so a
                   command run twice is visible on disk
    malformed()    the 2,000 hostile messages of the flood scenario

Nothing here waits for a fixed time: readiness is a log line, a query that answers
or a heartbeat that is seen (`wait_for`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import os
import random
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from bus.nats_bus import NatsBus
from orchestrator.client import NexusClient, Rows
from orchestrator.embedded import EmbeddedNats
from schemas import codec, subjects
from schemas.errors import DecodeError, NexusError
from tests.conftest import NEXUS, wait_for

TERMINAL = ("rejected", "denied", "succeeded", "failed", "timed_out", "cancelled", "lost")
NODE_TTL_S = 5.0
HEARTBEAT_S = 0.5
LOG_LEVEL = os.environ.get("NEXUS_FAULTS_LOG_LEVEL", "info")


SETPRIV = shutil.which("setpriv")


def _die_with_parent() -> None:
    """In the child: SIGKILL when the test process dies, so even a crashed run leaves no orphan."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _dying_with_us(argv: list[str]) -> tuple[list[str], Callable[[], None] | None]:
    """The command, set to get SIGKILL when the test process dies: through setpriv when
    there is one (a preexec_fn runs Python in a child forked from a threaded process,
    which can deadlock), else through a preexec_fn."""
    if SETPRIV is not None:
        return [SETPRIV, "--pdeathsig", "KILL", *argv], None
    return argv, _die_with_parent


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MB (None once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def processes_under(root: Path) -> list[int]:
    """Pids whose command line names `root` or whose working directory is inside it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(root) in cmdline or cwd == str(root) or cwd.startswith(f"{root}/"):
            found.append(int(entry.name))
    return found


@dataclass
class ProcessStack:
    """nats-server + `nexus orchestrator` + `nexus agent`s as real OS processes under `root`."""

    root: Path
    server: EmbeddedNats | None = None
    orchestrator: asyncio.subprocess.Process | None = None
    agents: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    client: NexusClient | None = None
    _spawned: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def db(self) -> Path:
        return self.root / "nexus.duckdb"

    @property
    def logs(self) -> Path:
        path = self.root / "logs"
        path.mkdir(exist_ok=True)
        return path

    # ------------------------------------------------------------ nats-server

    async def start_nats(self, port: int = -1) -> None:
        self.server = EmbeddedNats(self.root / "jetstream", port=port, log_file=self.logs / "nats-server.log")
        await self.server.start()
        if self.client is None:
            # A daemon connection: it reconnects by itself after a broker restart.
            self.client = NexusClient(await NatsBus.connect(self.url, name="faults-observer", daemon=True))

    async def kill_nats(self) -> None:
        assert self.server is not None and self.server.proc is not None
        self.server.proc.kill()
        await self.server.proc.wait()
        await self.server.stop()  # reaps the log drain

    # ------------------------------------------------------------ nexus processes

    async def _spawn(self, name: str, *args: str, wrapper: tuple[str, ...] = ()) -> asyncio.subprocess.Process:
        argv, preexec = _dying_with_us([*wrapper, NEXUS, *args, "--log-level", LOG_LEVEL])
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                env={**os.environ, "NEXUS_NATS_URL": self.url}, preexec_fn=preexec,
            )  # fmt: skip
        self._spawned.append(proc)
        return proc

    async def start_orchestrator(self) -> asyncio.subprocess.Process:
        self.orchestrator = await self._spawn("orchestrator", "orchestrator", "--db", str(self.db), "--node-ttl", f"{NODE_TTL_S:g}")
        proc = self.orchestrator

        async def answers() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"the orchestrator exited with {proc.returncode}; see {self.logs / 'orchestrator.log'}")
            return await self.try_query("SELECT 1") is not None

        await wait_for(answers, 60, what="the orchestrator answering queries")
        return proc

    async def spawn_agent(
        self, node: str, *extra: str, name: str | None = None, wrapper: tuple[str, ...] = ()
    ) -> asyncio.subprocess.Process:
        """`nexus agent --node NODE` (this suite's flags, then `extra`), its log in logs/<name>.log; not waited for."""
        args = ("agent", "--node", node, "--heartbeat", f"{HEARTBEAT_S:g}", "--kill-grace", "0.5", "--max-jobs", "4", *extra)
        return await self._spawn(name or f"agent-{node}", *args, wrapper=wrapper)

    async def start_agent(self, node: str, *extra: str, wrapper: tuple[str, ...] = ()) -> asyncio.subprocess.Process:
        before = await self.heartbeat_instance(node)
        proc = await self.spawn_agent(node, *extra, wrapper=wrapper)
        self.agents[node] = proc

        async def heard() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"agent {node} exited with {proc.returncode}; see {self.logs / f'agent-{node}.log'}")
            instance = await self.heartbeat_instance(node)
            if instance is None or instance == before:
                return False
            rows = await self.try_query("SELECT status FROM nodes WHERE node_id = ?", [node])
            return rows is not None and rows.rows == [["online"]]

        await wait_for(heard, 60, what=f"agent {node} heartbeating and registered")
        return proc

    async def heartbeat_instance(self, node: str) -> str | None:
        """The `instance` of the node's current heartbeat (a new one after each agent start)."""
        assert self.client is not None
        try:
            entry = await (await self.client.bus.nodes_kv()).get(node)
            value: dict[str, Any] = json.loads(entry.value or b"{}")
        except (nats.errors.Error, nats.js.errors.Error, ValueError, RecursionError, TimeoutError):
            return None  # absent, or garbage the flood put there
        instance = value.get("instance")
        return instance if isinstance(instance, str) else None

    @staticmethod
    async def kill(proc: asyncio.subprocess.Process) -> None:
        """kill -9, and reap it."""
        if proc.returncode is None:
            proc.kill()
        await proc.wait()

    async def close(self) -> None:
        """Kill every process this stack started, then the server; never raises."""
        for proc in self._spawned:
            with contextlib.suppress(ProcessLookupError):
                await self.kill(proc)
        if self.client is not None:
            await self.client.bus.close()
        if self.server is not None:
            await self.server.stop()

    def running(self) -> dict[str, bool]:
        """Which of the long-running processes are alive now."""
        alive = {"nats-server": self.server is not None and self.server.proc is not None and self.server.proc.returncode is None}
        alive["orchestrator"] = self.orchestrator is not None and self.orchestrator.returncode is None
        alive.update({f"agent {n}": p.returncode is None for n, p in self.agents.items()})
        return alive

    # ------------------------------------------------------------ state

    async def try_query(self, sql: str, params: Iterable[Any] = ()) -> Rows | None:
        """A query, or None while the orchestrator or the broker is away."""
        assert self.client is not None
        try:
            return await self.client.query(sql, list(params), timeout_s=5.0)
        except (NexusError, nats.errors.Error, TimeoutError):
            return None

    async def statuses(self, ids: list[str]) -> dict[str, str] | None:
        rows = await self.try_query("SELECT job_id, status FROM jobs WHERE job_id IN (SELECT unnest(?::VARCHAR[]))", [ids])
        return None if rows is None else {r[0]: r[1] for r in rows.rows}


@dataclass
class Marks:
    """One marker file per job: the command appends its id, so each line is one run."""

    root: Path

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def command(self, job_id: str, sleep_s: float) -> str:
        return f"echo {job_id} >> {self.root / job_id}; sleep {sleep_s:g}"

    def runs(self, job_id: str) -> list[str]:
        path = self.root / job_id
        return path.read_text().splitlines() if path.exists() else []


class Submitter:
    """Submits jobs as an external NATS client would (DESIGN.md section 4), with JetStream
    acks; `acked` maps each job id to the stream sequence its ack named."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=2.0)
        self.acked: dict[str, int] = {}
        self.retries = 0
        self.connection_errors: list[str] = []

    @classmethod
    async def connect(cls, url: str) -> Submitter:
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            # Expected while the broker is away; kept (not logged) so reports stay readable.
            errors.append(f"{type(exc).__name__}: {exc}")

        nc = await nats.connect(url, name="faults-submitter", max_reconnect_attempts=-1, reconnect_time_wait=0.25, error_cb=on_error)
        submitter = cls(nc)
        submitter.connection_errors = errors
        return submitter

    async def submit(self, job_id: str, command: str, *, node: str | None = None, **fields: object) -> int:
        """Publish `requested` (`fields`: more of its fields) until acked; the same Nats-Msg-Id makes
        every retry harmless (a duplicate ack names the sequence of the message first stored)."""
        payload = json.dumps({"command": command, **({} if node is None else {"node": node}), **fields}).encode()
        headers = {"Nats-Msg-Id": f"job:{job_id}:requested:1"}
        while True:
            try:
                ack = await self.js.publish(subjects.job(job_id, "requested"), payload, headers=headers)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.Error, nats.errors.ConnectionReconnectingError):
                self.retries += 1
                await wait_for(self._stream_answers, 60, what="the event stream answering again")
                continue
            self.acked[job_id] = ack.seq
            return ack.seq

    async def _stream_answers(self) -> bool:
        try:
            await asyncio.wait_for(self.js.stream_info(subjects.EVENTS_STREAM), 1.0)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
            return False
        return True

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.close()


# ------------------------------------------------------------------ the flood


@dataclass(frozen=True)
class Malformed:
    """One hostile message. With `msg_id`, it goes out through JetStream (acked, with a
    Nats-Msg-Id header a real publisher would use); `kv_key`: a put in `nexus-nodes`."""

    category: str
    subject: str
    data: bytes
    msg_id: str | None = None
    kv_key: str | None = None


JOB_KINDS = ("requested", "validated", "assigned", "accepted", "started", "exited", "succeeded", "cancel_requested", "approved", "tested")
COUNTS = {
    "random_bytes": 200,
    "truncated_json": 200,
    "wrong_types": 200,
    "command_500kb": 100,
    "unknown_kind": 150,
    "deep_nesting": 150,
    "invalid_utf8": 150,
    "int_above_int64": 150,
    "forged_exited": 100,
    "forged_dispatch": 150,
    "forged_node": 100,
    "pipeline": 150,
    "random_subject": 100,
    "heartbeat_garbage": 100,
}
assert sum(COUNTS.values()) == 2000


def malformed(rng: random.Random, job_ids: list[str], nodes: list[str], forged_targets: list[str]) -> list[Malformed]:
    """The flood: 2,000 messages in a shuffled order (see COUNTS). Undecodable ones land on
    the subjects of the scenario's own jobs half of the time; forged `exited` facts name
    only `forged_targets`; forged dispatches carry argv that cannot run anything (a random
    program name) and name job ids that do not exist."""
    ghosts = [f"ghost-{i}" for i in range(5)]

    def some_id() -> str:
        return rng.choice(job_ids) if rng.random() < 0.5 else f"flood-{rng.getrandbits(40):x}"

    def token(n: int) -> str:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-$#@!%&") for _ in range(n))

    def any_subject() -> str:
        match rng.randrange(4):
            case 0:
                return subjects.job(some_id(), rng.choice(JOB_KINDS))
            case 1:
                return subjects.dispatch(some_id(), rng.choice(nodes + ghosts))
            case 2:
                return subjects.node(rng.choice(nodes + ghosts), rng.choice(("registered", "lost", "drained")))
            case _:
                return subjects.pipeline(f"flood-{rng.getrandbits(32):x}", rng.choice(("requested", "step_started", "succeeded")))

    def request(command: str = "echo flood") -> dict[str, Any]:
        return {"type": "job.requested", "v": 1, "ts": "2026-12-05T10:00:00Z", "command": command, "tool": "bash"}

    def random_bytes() -> Malformed:
        return Malformed("random_bytes", any_subject(), rng.randbytes(rng.randrange(0, 4096)))

    def truncated_json() -> Malformed:
        whole = json.dumps({**request(), "labels": {"a": "b"}, "env": {"X": "y" * 40}}).encode()
        return Malformed("truncated_json", any_subject(), whole[: rng.randrange(1, len(whole))])

    def wrong_types() -> Malformed:
        field_, value = rng.choice(
            [("command", 123), ("command", ["echo", "x"]), ("command", None), ("priority", "high"), ("timeout_s", "soon"),
             ("labels", ["a"]), ("env", {"X": 1}), ("tests", {"type": "exit_code"}), ("attempt", "one"), ("exit_code", "zero"),
             ("node", 7), ("ts", 12), ("v", "1"), ("tool", {"x": 1}), ("after", "j-1"), ("retries", -1)]
        )  # fmt: skip
        return Malformed("wrong_types", any_subject(), json.dumps({**request(), field_: value}).encode())

    def command_500kb() -> Malformed:
        subject = subjects.job(some_id(), "requested") if rng.random() < 0.7 else subjects.dispatch(some_id(), rng.choice(nodes))
        return Malformed("command_500kb", subject, json.dumps(request("x" * 500_000)).encode())

    def unknown_kind() -> Malformed:
        kind = rng.choice(("frobnicated", "exploded", "requested_v2", "x" * 64, "dispatched_twice"))
        return Malformed("unknown_kind", subjects.job(some_id(), kind), json.dumps(request()).encode())

    def deep_nesting() -> Malformed:
        depth = 1000
        opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
        nested = opener * depth + b"1" + closer * depth
        return Malformed("deep_nesting", any_subject(), b'{"command": "echo deep", "x": ' + nested + b"}")

    def invalid_utf8() -> Malformed:
        bad = rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
        return Malformed("invalid_utf8", any_subject(), b'{"command": "echo ' + bad + b'", "tool": "bash"}')

    def int_above_int64() -> Malformed:
        field_ = rng.choice(("priority", "v", "attempt", "exit_code", "pid", "max_jobs", "chunks", "retries", "duration_ms"))
        big = rng.choice((2**63, 2**64 + 1, -(2**63) - 1, 10**30))
        fact = {**request(), "node": rng.choice(nodes), "attempt": 1, "pid": 1, field_: big}
        return Malformed("int_above_int64", any_subject(), json.dumps(fact).encode())

    def forged_exited() -> Malformed:
        job_id = rng.choice(forged_targets)
        fact = {"type": "job.exited", "v": 1, "node": rng.choice(nodes), "attempt": 1, "exit_code": rng.choice((0, 1, 137, None))}
        # Some carry the message id the real agent will use for its own `exited`.
        msg_id = f"job:{job_id}:exited:1" if rng.random() < 0.3 else None
        return Malformed("forged_exited", subjects.job(job_id, "exited"), json.dumps(fact).encode(), msg_id=msg_id)

    def forged_dispatch() -> Malformed:
        argv = [f"nexus-no-such-program-{rng.getrandbits(32):x}", *(token(rng.randrange(1, 20)) for _ in range(rng.randrange(4)))]
        fact = {"type": "job.dispatch", "v": 1, "attempt": rng.randrange(1, 4), "tool": "bash", "command": " ".join(argv), "argv": argv}
        node = rng.choice(nodes + ghosts)
        return Malformed("forged_dispatch", subjects.dispatch(f"flood-{rng.getrandbits(40):x}", node), json.dumps(fact).encode())

    def forged_node() -> Malformed:
        node = rng.choice(nodes + ghosts)
        if rng.random() < 0.5:
            return Malformed("forged_node", subjects.node(node, "lost"), json.dumps({"type": "node.lost", "reason": "forged"}).encode())
        fact = {"type": "node.registered", "tools": [token(8) for _ in range(rng.randrange(50))], "max_jobs": rng.choice((0, -5, 10**6)),
                "labels": {token(4): token(4) for _ in range(rng.randrange(10))}}  # fmt: skip
        return Malformed("forged_node", subjects.node(node, "registered"), json.dumps(fact).encode())

    def pipeline() -> Malformed:
        pid = f"flood-{rng.getrandbits(32):x}"
        data = rng.choice([
            b'{"steps": "not a list"}', b'{"steps": [{"id": "a", "command": 5}]}', b"{}",
            json.dumps({"steps": [{"id": f"s{i}", "command": "true", "after": [f"s{i + 1}"]} for i in range(50)]}).encode(),
            rng.randbytes(200),
        ])  # fmt: skip
        kind = rng.choice(("requested", "requested", "advanced", "step_done"))
        return Malformed("pipeline", subjects.pipeline(pid, kind), data)

    def random_subject() -> Malformed:
        tokens = [token(rng.randrange(1, 70)) for _ in range(rng.randrange(1, 8))]
        return Malformed("random_subject", "nexus.evt." + ".".join(tokens), rng.randbytes(rng.randrange(0, 300)))

    def heartbeat_garbage() -> Malformed:
        key = rng.choice([*nodes, *ghosts, "a.b.c", "-", "x" * 200])
        data = rng.choice([
            rng.randbytes(rng.randrange(0, 500)), b"{", b"[]", b"null",
            b'{"node": "' + key.encode() + b'", "ts": "yesterday"}',
            b'{"node": "' + key.encode() + b'", "ts": "2026-12-05T10:00:00Z", "max_jobs": 9223372036854775808}',
            b'{"node": "bad id with spaces", "ts": "2026-12-05T10:00:00Z"}',
            b'{"node": "x", "ts": "2026-12-05T10:00:00Z", "deep": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        ])  # fmt: skip
        if key in ghosts and rng.random() < 0.3:  # decodes, but offers no tool a job could want
            data = json.dumps({"node": key, "ts": datetime.now(UTC).isoformat(), "tools": ["no-such-tool"], "max_jobs": 10**6}).encode()
        return Malformed("heartbeat_garbage", f"$KV.{subjects.NODES_BUCKET}.{key}", data, kv_key=key)

    scope = locals()
    messages = [_generate(scope[name], name) for name, n in COUNTS.items() for _ in range(n)]
    rng.shuffle(messages)
    return messages


FORGED = ("forged_exited", "forged_dispatch", "forged_node")


def _generate(maker: Callable[[], Malformed], category: str) -> Malformed:
    """Draw until the message is what its category says: refused by our own codec, except
    the forged facts, which decode (they are wrong only in who sent them)."""
    for _ in range(100):
        m = maker()
        if m.kv_key is not None:
            if _decodes(codec.decode_heartbeat, m.data) is None or m.data.startswith(b'{"node": "ghost'):
                return m  # refused, or a ghost's heartbeat that decodes on purpose
        elif (_decodes(functools.partial(codec.decode, m.subject), m.data) is not None) == (category in FORGED):
            return m
    raise AssertionError(f"could not draw a {category} message")


def _decodes(decode: Callable[[bytes], object], data: bytes) -> object | None:
    try:
        return decode(data)
    except DecodeError:
        return None


async def publish_flood(nc: Client, messages: list[Malformed], *, flush_every: int = 50) -> dict[str, int]:
    """Publish the flood: core NATS publishes (as any client may) with a flush every
    `flush_every` (backpressure, not a pause); msg-id ones through JetStream. Returns
    how many of each category the server took."""
    js = nc.jetstream(timeout=5.0)
    kv = await js.key_value(subjects.NODES_BUCKET)
    sent: dict[str, int] = {}
    for i, m in enumerate(messages, 1):
        if m.kv_key is not None:
            try:
                await kv.put(m.kv_key, m.data)
            except (nats.errors.Error, nats.js.errors.Error):
                continue  # an invalid key is refused by the client: nothing reached the bus
        elif m.msg_id is not None:
            await js.publish(m.subject, m.data, headers={"Nats-Msg-Id": m.msg_id})
        else:
            await nc.publish(m.subject, m.data)
        sent[m.category] = sent.get(m.category, 0) + 1
        if i % flush_every == 0:
            await nc.flush()
    await nc.flush()
    return sent
