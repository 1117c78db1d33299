"""The agent process loads what it runs jobs with, nothing of the orchestrator, and no rich (issue 13).

Memory, not speed, and no figures here (bench/output_throughput.py prints the agent's RSS): a
real agent process (`nexus agent` and the agent-only `nexus-agent`) runs a job, then, idle,
writes the modules it has loaded. rich came in through structlog (bus.logs hides it) and was
~4 MiB of the agent's idle RSS; the analysis, DuckDB, YAML and the API must never be there.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from orchestrator.client import new_job_id
from schemas.events import JobRequested
from tests.conftest import Stack, wait_for

BIN = Path(sys.executable).parent

# Loaded by every Python process that has the probe's directory on PYTHONPATH, so it is still
# there after `nexus agent` has become the agent-only program (an exec keeps the environment):
# SIGUSR1 writes what the process has loaded.
_PROBE = """
import json, os, signal, sys
def dump(*_):
    with open(OUT + ".tmp", "w") as f:
        json.dump(sorted(sys.modules), f)
    os.rename(OUT + ".tmp", OUT)
signal.signal(signal.SIGUSR1, dump)
"""


NEVER_IN_AN_AGENT = (
    "rich", "pygments", "greenlet", "typer.rich_utils", "duckdb", "yaml", "litestar", "uvicorn", "bashlex", "re2",
    "orchestrator.core", "orchestrator.store", "orchestrator.service", "orchestrator.api", "orchestrator.app.jobs",
    "orchestrator.client", "orchestrator.cli.run", "orchestrator.cli.state",
)  # fmt: skip


@pytest.mark.parametrize("entry", [("nexus", "agent"), ("nexus-agent",)], ids=["nexus agent", "nexus-agent"])
async def test_an_idle_agent_has_loaded_no_rich_and_nothing_of_the_orchestrator(stack: Stack, entry: tuple[str, ...]) -> None:
    node = "probe-" + entry[-1]
    out = stack.tmp / f"{node}.modules.json"
    probe = stack.tmp / f"{node}-probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(_PROBE.replace("OUT", repr(str(out))))
    path = os.pathsep.join(p for p in (str(probe), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "NEXUS_NATS_URL": stack.url, "PYTHONPATH": path}
    agent = await asyncio.create_subprocess_exec(
        BIN / entry[0], *entry[1:], "--node", node, "--heartbeat", "0.5", "--log-level", "warning", "--state-dir", str(stack.tmp / node),
        env=env, cwd=stack.tmp, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_for(lambda: node in stack.orchestrator.nodes or agent.returncode is not None, what=f"{node} registered")
        assert agent.returncode is None, "the agent exited"
        # `nexus agent` is the agent-only program by now, in the same process (the URL not on its command line).
        argv = Path(f"/proc/{agent.pid}/cmdline").read_bytes().split(b"\0")
        assert any(a.endswith(b"/nexus-agent") for a in argv[:2]), argv  # the interpreter, then the script
        assert stack.url.encode() not in b" ".join(argv)
        job_id = new_job_id()
        await stack.client.submit(job_id, JobRequested(command="echo hi", node=node))
        assert (await stack.wait_job(job_id))["status"] == "succeeded"
        agent.send_signal(signal.SIGUSR1)
        modules = set(await wait_for(lambda: out.is_file() and json.loads(out.read_text()), what="the agent's module list"))
        agent.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(agent.wait(), 30) == 0
    finally:
        if agent.returncode is None:
            agent.kill()
            await agent.wait()
    assert {"agent.service", "bus.nats_bus", "structlog"} <= modules  # the probe saw a working agent
    loaded = sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in NEVER_IN_AN_AGENT))
    assert loaded == [], f"`{' '.join(entry)}` loaded modules an agent never uses"
    # Both are the agent-only program: neither the orchestrator nor typer (`nexus agent` drops them by its exec).
    assert not [m for m in modules if m.split(".")[0] in ("orchestrator", "typer", "click")]
