"""`nexus up` keeps its embedded nats-server: killed, it is started again on the same port and
store, and the services reconnect by themselves (a fault reviewer found `nexus up` staying "up"
with no server, for ever, after `kill -9` of the server)."""

from __future__ import annotations

import os
import signal

import pytest

from orchestrator.embedded import pid_path, running_pid
from tests.conftest import wait_for
from tests.integration.test_bus_auth import Up, up  # noqa: F401  (`up`: the stack fixture)

pytestmark = pytest.mark.timeout(180)


async def test_a_killed_embedded_server_is_started_again_and_jobs_run(up: Up) -> None:  # noqa: F811
    code, out = await up.nexus("run", "--", "echo before")
    assert code == 0 and "before" in out, out
    first = running_pid(up.data)
    assert first is not None, pid_path(up.data)
    os.kill(first, signal.SIGKILL)

    async def restarted() -> int | None:
        pid = running_pid(up.data)
        return pid if pid is not None and pid != first else None

    await wait_for(restarted, 60, what="nexus up to start its nats-server again")

    async def runs() -> bool:
        code, out = await up.nexus("run", "--", "echo after")
        return code == 0 and "after" in out

    await wait_for(runs, 90, what="a job to run after the restart")
    assert up.proc.returncode is None  # still up


async def test_a_second_nexus_up_on_the_same_data_starts_nothing(up: Up) -> None:  # noqa: F811
    server = running_pid(up.data)
    log = (up.data / "nats-server.log").read_text()
    code, out = await up.nexus("up", "--data", str(up.data), "--port", "-1", "--no-api", "--node", "second")
    assert code == 1 and f"another `nexus up` runs on {up.data} (pid {up.proc.pid})" in out and "Nothing was started" in out, out
    # No second server opened the store; the first one still runs it and its pid file names it.
    assert (up.data / "nats-server.log").read_text() == log
    assert running_pid(up.data) == server is not None
    code, out = await up.nexus("run", "--", "echo still up")
    assert code == 0 and "still up" in out, out
