"""The peer of issue 13: Ansible ad-hoc `echo hi`, beside Nexus on real agents and the bare PTY.

Measured in one run, on this machine:
  ansible    `ansible all -m shell -a 'echo hi' -f 20` over an inventory of 20 hosts, each
             `ansible_connection=local` (no SSH: the cheapest Ansible can be), wall time of the
             CLI; then over `--large` hosts (default 100), from which 1,000 hosts is
             extrapolated linearly and labelled so (`--large 1000` measures it: minutes)
  nexus      `echo hi` on 20 real `nexus agent` processes (one job per node, submitted at
             once by one client): submit -> all succeeded, and `nexus run` on one node (a new
             CLI process, as the ansible figure is)
  pty        20 `bash -c 'echo hi'` through agent.pty_runner.PtyRunner at once in one process:
             the physical limit of running them at all on this machine
Needs ansible-core in the venv (`make bench` installs it; it is no dependency of Nexus).
Functions `ansible_adhoc(hosts, forks)` and `pty_floor(n)` are for the other benches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fleet import die_with_parent
from stack import stop_processes, wait_ready, wait_status

from agent.pty_runner import PtyRunner, RunSpec
from bus.nats_bus import NatsBus
from orchestrator.client import NexusClient, new_job_id
from orchestrator.embedded import EmbeddedNats
from schemas.events import JobRequested

BIN = Path(sys.executable).parent


def ansible_available() -> bool:
    return (BIN / "ansible").exists() or shutil.which("ansible") is not None


def ansible_adhoc(hosts: int, forks: int = 20) -> float:
    """Wall seconds of one ad-hoc `echo hi` over `hosts` local targets; raises if any host failed."""
    tmp = Path(tempfile.mkdtemp(prefix="nexus-ansible-"))
    try:
        inventory = tmp / "hosts.ini"
        lines = ["[all]", *(f"h{i} ansible_connection=local ansible_python_interpreter={sys.executable}" for i in range(hosts))]
        inventory.write_text("\n".join(lines) + "\n")
        env = {
            **os.environ,
            "ANSIBLE_LOCAL_TEMP": str(tmp / "local"),
            "ANSIBLE_REMOTE_TEMP": str(tmp / "remote"),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_PYTHON_WARNINGS": "ignore",
            "PYTHONWARNINGS": "ignore",
        }
        ansible = str(BIN / "ansible") if (BIN / "ansible").exists() else "ansible"
        t0 = time.perf_counter()
        done = subprocess.run(
            [ansible, "all", "-i", str(inventory), "-m", "shell", "-a", "echo hi", "-f", str(forks), "-o"],
            env=env, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        took = time.perf_counter() - t0
        ok = sum(1 for line in done.stdout.splitlines() if "CHANGED" in line and "hi" in line)
        if done.returncode != 0 or ok != hosts:
            raise RuntimeError(f"ansible: {ok} of {hosts} hosts ran it (rc {done.returncode}): {done.stderr[-500:]}")
        return took
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def pty_floor(n: int) -> float:
    """Wall seconds of `n` `bash -c 'echo hi'` in PTYs at once, in this process."""
    runner = PtyRunner()

    async def one() -> None:
        async def on_output(_data: bytes) -> None:
            return None

        async def on_started(_pid: int) -> None:
            return None

        spec = RunSpec(argv=["bash", "-c", "echo hi"], cwd=None, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, timeout_s=30)
        result = await runner.run(spec, on_output, asyncio.Event(), on_started)
        if result.exit_code != 0:
            raise RuntimeError(f"echo hi in a PTY exited {result.exit_code}")

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - t0


async def nexus_real_agents(agents: int) -> dict[str, float]:
    """`echo hi` on `agents` real agent processes: one job per node at once, and `nexus run` on one."""
    tmp = Path(tempfile.mkdtemp(prefix="nexus-peer-"))
    server = EmbeddedNats(tmp / "js", port=-1)
    url = await server.start()
    env = {**os.environ, "NEXUS_NATS_URL": url}
    nodes = [f"peer-{i}" for i in range(agents)]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "preexec_fn": die_with_parent}
    procs = [subprocess.Popen([BIN / "nexus", "orchestrator", "--db", tmp / "nexus.duckdb", "--log-level", "warning"], env=env, **quiet)]  # type: ignore[call-overload]
    for node in nodes:
        cmd = [BIN / "nexus", "agent", "--node", node, "--state-dir", tmp / node, "--log-level", "warning"]
        procs.append(subprocess.Popen(cmd, env=env, **quiet))  # type: ignore[call-overload]
    bus = await NatsBus.connect(url, name="bench-peer")
    client = NexusClient(bus)
    try:
        await wait_ready(client)
        deadline = time.monotonic() + 120
        while (await client.query("SELECT count(*) FROM nodes WHERE status = 'online'")).rows[0][0] < agents:
            if time.monotonic() > deadline:
                raise TimeoutError("the agents did not all come online")
            await asyncio.sleep(0.1)
        warm = [new_job_id() for _ in nodes]  # every agent runs one job first (imports, consumers)
        for job_id, node in zip(warm, nodes, strict=True):
            await client.submit(job_id, JobRequested(command="true", node=node))
        await wait_status(client, warm)

        ids = [new_job_id() for _ in nodes]
        t0 = time.perf_counter()
        await asyncio.gather(*(client.submit(j, JobRequested(command="echo hi", node=n)) for j, n in zip(ids, nodes, strict=True)))
        await wait_status(client, ids)
        fanout = time.perf_counter() - t0
        rows = await client.query(
            f"SELECT count(*) FROM jobs WHERE status = 'succeeded' AND job_id IN ({','.join('?' for _ in ids)})", ids
        )
        if rows.rows[0][0] != agents:
            raise RuntimeError(f"only {rows.rows[0][0]} of {agents} `echo hi` jobs succeeded")

        t0 = time.perf_counter()
        run = await asyncio.create_subprocess_exec(BIN / "nexus", "run", "-q", "--node", nodes[0], "--", "echo", "hi", env=env,
                                                   stdout=asyncio.subprocess.PIPE)  # fmt: skip
        out, _ = await run.communicate()
        one_cli = time.perf_counter() - t0
        if run.returncode != 0 or out != b"hi\n":
            raise RuntimeError(f"nexus run printed {out!r} (exit {run.returncode})")
        return {"fanout": fanout, "run_cli": one_cli}
    finally:
        await bus.close()
        stop_processes(procs, timeout_s=20)
        await server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def fig(
    what: str, value: float, unit: str, *, target: str | None = None, peer: str | None = None, peer_value: float | None = None
) -> dict[str, object]:
    ratio = round(value / peer_value, 3) if peer_value else None
    return {"what": what, "value": round(value, 4), "unit": unit, "target": target, "peer": peer, "peer_value": peer_value, "ratio": ratio}


async def main(hosts: int, large: int, forks: int, as_json: bool) -> None:
    figures: list[dict[str, object]] = []
    notes: list[str] = []
    floor = await pty_floor(hosts)
    nexus = await nexus_real_agents(hosts)
    if ansible_available():
        small = ansible_adhoc(hosts, forks)
        figures.append(fig(f"ansible ad-hoc `echo hi`, {hosts} local hosts, forks {forks}", small, "s", peer="bare PTY", peer_value=floor))
        peer: tuple[str | None, float | None] = (f"ansible {hosts} hosts", round(small, 4))
    else:
        notes.append("ansible-core is not installed (make bench installs it): no peer figures")
        peer = (None, None)
    what = f"nexus `echo hi` on {hosts} real agents, submit -> all succeeded"
    figures.append(fig(what, nexus["fanout"], "s", peer=peer[0], peer_value=peer[1]))
    figures.append(fig("nexus run --node N -- echo hi (new CLI process)", nexus["run_cli"], "s", peer=peer[0], peer_value=peer[1]))
    figures.append(fig(f"bare PTY `echo hi` x {hosts} at once (physical limit)", floor, "s"))
    if ansible_available() and large > 0:
        big = ansible_adhoc(large, forks)
        figures.append(fig(f"ansible ad-hoc `echo hi`, {large} local hosts, forks {forks}", big, "s"))
        if large < 1000:
            figures.append(fig(f"ansible ad-hoc `echo hi`, 1000 local hosts (EXTRAPOLATED from {large})", big * 1000 / large, "s"))
    if as_json:
        print(json.dumps({"bench": "ansible_peer", "figures": figures, "notes": notes}))
        return
    for f in figures:
        ratio = f"  x{f['ratio']} of {f['peer']}" if f["ratio"] is not None else ""
        print(f"{f['what']:<72} {f['value']:>9.3f} {f['unit']}{ratio}")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--large", type=int, default=100, help="hosts of the larger ansible run (0: none); 1000 is extrapolated below 1000")
    ap.add_argument("--forks", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    asyncio.run(main(a.hosts, a.large, a.forks, a.json))
