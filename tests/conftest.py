"""Shared fixtures: a real nats-server per test (random port, own store dir),
an in-process orchestrator and agent on a real DuckDB file, and `wait_for`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.service import Agent
from bus.nats_bus import NatsBus
from orchestrator.client import NexusClient
from orchestrator.embedded import EmbeddedNats
from orchestrator.service import Orchestrator
from orchestrator.store import DuckDBStore

T = TypeVar("T")
NEXUS = str(Path(sys.executable).parent / "nexus")


async def wait_for(predicate: Callable[[], Awaitable[T | None] | T | None], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_stalled(progress: Callable[[], int], task: asyncio.Task[Any], timeout: float, quiet_s: float = 0.5) -> int:
    """Until `progress()` has not moved for `quiet_s` while `task` still runs (a writer blocked
    by back-pressure); its last value. Fails if the task ends first or it never stalls."""
    last, stable_since = progress(), time.monotonic()
    deadline = stable_since + timeout
    while time.monotonic() - stable_since < quiet_s:  # the condition: no progress for quiet_s
        assert not task.done() and time.monotonic() < deadline, "the command never stopped making progress"
        await asyncio.sleep(0.05)  # the polling period of that condition
        if (now := progress()) != last:
            last, stable_since = now, time.monotonic()
    return last


@dataclass
class LogsJson:
    """`nexus logs --json` read back: per stream, its bytes and its text view, and the `end` line."""

    data: dict[str, bytes]
    text: dict[str, str]
    end: dict[str, Any]


def read_logs_json(out: bytes | str) -> LogsJson:
    """The JSON lines of `nexus logs --json`: `output_chunk`s, then one `end`, last."""
    *chunks, end = [json.loads(line) for line in (out.decode() if isinstance(out, bytes) else out).splitlines()]
    assert end["type"] == "end" and all(c["type"] == "output_chunk" for c in chunks), out
    data: dict[str, list[bytes]] = {}
    text: dict[str, list[str]] = {}
    for c in chunks:
        data.setdefault(c["stream"], []).append(base64.b64decode(c["data_b64"]))
        text.setdefault(c["stream"], []).append(c["text"])
    logs = LogsJson({k: b"".join(v) for k, v in data.items()}, {k: "".join(v) for k, v in text.items()}, end)
    assert end["bytes"] == sum(map(len, logs.data.values()))
    return logs


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    server = EmbeddedNats(tmp_path / "jetstream", port=-1)
    url = await server.start()
    try:
        yield url
    finally:
        await server.stop()


@dataclass
class Stack:
    url: str
    db: Path
    tmp: Path
    client: NexusClient
    orchestrators: list[tuple[Orchestrator, asyncio.Task[None], NatsBus, DuckDBStore]] = field(default_factory=list)
    agents: dict[str, tuple[Agent, asyncio.Task[None], NatsBus]] = field(default_factory=dict)

    @property
    def orchestrator(self) -> Orchestrator:
        return self.orchestrators[-1][0]

    async def start_orchestrator(self, node_ttl_s: float = 5.0, **kwargs: Any) -> Orchestrator:
        bus = await NatsBus.connect(self.url, name="test-orchestrator", daemon=True)
        store = DuckDBStore(self.db)
        orch = Orchestrator(bus, store, node_ttl_s=node_ttl_s, **kwargs)
        task = asyncio.create_task(orch.run())
        self.orchestrators.append((orch, task, bus, store))
        await wait_for(lambda: orch.caught_up.is_set() or task.done(), what="orchestrator caught up")
        if task.done():
            task.result()
        return orch

    async def stop_orchestrator(self) -> None:
        _orch, task, bus, store = self.orchestrators.pop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await bus.close()
        store.close()

    async def start_agent(self, node: str = "node-1", **kwargs: Any) -> Agent:
        bus = await NatsBus.connect(self.url, name=f"test-agent-{node}", daemon=True)
        kwargs.setdefault("kill_grace_s", 0.5)
        kwargs.setdefault("heartbeat_s", 0.5)
        agent = Agent(bus, node, **kwargs)
        task = asyncio.create_task(agent.run())
        self.agents[node] = (agent, task, bus)
        await wait_for(lambda: agent.ready.is_set() or task.done(), what=f"agent {node} ready")
        if task.done():
            task.result()
        # The orchestrator must have registered the node before jobs can target it.
        if self.orchestrators:
            await wait_for(lambda: node in self.orchestrator.nodes, what=f"node {node} registered")
        return agent

    async def stop_agent(self, node: str) -> None:
        _agent, task, bus = self.agents.pop(node)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await bus.close()

    async def job(self, job_id: str) -> dict[str, Any] | None:
        rows = await self.client.query("SELECT * FROM jobs WHERE job_id = ?", [job_id])
        return rows.dicts()[0] if rows.rows else None

    async def wait_job(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        terminal = {"rejected", "denied", "succeeded", "failed", "timed_out", "cancelled", "lost"}

        async def done() -> dict[str, Any] | None:
            row = await self.job(job_id)
            return row if row and row["status"] in terminal else None

        return await wait_for(done, timeout, what=f"job {job_id} to finish")

    async def nexus(
        self, *args: str, stdin: bytes | None = None, timeout: float = 60.0, env: dict[str, str] | None = None
    ) -> tuple[int, bytes, bytes]:
        """Run the real `nexus` CLI against this stack (async, so the in-process services keep running).
        `env`: variables to set for it (this bus has no credentials: $USER names the person)."""
        env = {**os.environ, "NEXUS_NATS_URL": self.url, **(env or {})}
        proc = await asyncio.create_subprocess_exec(
            NEXUS, *args, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=self.tmp,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        return proc.returncode, out, err


@pytest.fixture
async def stack(nats_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    bus = await NatsBus.connect(nats_url, name="test-client")
    s = Stack(url=nats_url, db=tmp_path / "nexus.duckdb", tmp=tmp_path, client=NexusClient(bus))
    await s.start_orchestrator()
    await s.start_agent("node-1")
    try:
        yield s
    finally:
        for node in list(s.agents):
            await s.stop_agent(node)
        while s.orchestrators:
            await s.stop_orchestrator()
        await bus.close()
