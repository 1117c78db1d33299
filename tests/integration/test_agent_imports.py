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

import pytest

from orchestrator.client import new_job_id
from schemas.events import JobRequested
from tests.conftest import Stack, wait_for

# The child runs the entry point as its console script does; SIGUSR1 writes what it has loaded.
_PROBE = """
import json, signal, sys
def dump(*_):
    with open(OUT + ".tmp", "w") as f:
        json.dump(sorted(sys.modules), f)
    import os
    os.rename(OUT + ".tmp", OUT)
signal.signal(signal.SIGUSR1, dump)
entry = sys.argv[1]
sys.argv = sys.argv[1:]
if entry == "nexus":
    from orchestrator.cli.main import main
else:
    from agent.main import main
sys.exit(main())
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
    env = {**os.environ, "NEXUS_NATS_URL": stack.url}
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PROBE.replace("OUT", repr(str(out))), *entry, "--node", node, "--heartbeat", "0.5",
        "--log-level", "warning", "--state-dir", str(stack.tmp / node),
        env=env, cwd=stack.tmp, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_for(lambda: node in stack.orchestrator.nodes or agent.returncode is not None, what=f"{node} registered")
        assert agent.returncode is None, "the agent exited"
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
    if entry == ("nexus-agent",):  # the agent-only install has neither the orchestrator nor typer
        assert not [m for m in modules if m.split(".")[0] in ("orchestrator", "typer")]
