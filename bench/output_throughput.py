"""Output throughput: ~100 MB of job output through a real stack, against the physical limits.

In the same run it measures
  1. a bare ptyprocess read loop and a bare pipe read loop over the same generator
     (the physical limits: nothing Nexus does can be faster),
  2. the same generator as a Nexus job through a private nats-server, `nexus orchestrator`
     and `nexus agent` (separate processes), with `tty: true` (PTY) and `tty: false` (pipes):
     from the agent's `started` to the last byte received by a following client,
     byte-exact (SHA-256 of what the client received against what the generator wrote),
  3. the agent's memory: VmRSS/VmHWM of its process when idle and after the big jobs.
With `--signed` the stack runs with credentials, as `nexus up` does (every chunk signed).

Targets (issue 13): PTY >= 90% of the bare PTY loop; pipes >= 300 MB/s; agent peak RSS
<= 35 MiB idle and <= 60 MiB under output. `--json` prints one JSON object (bench/README convention).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
MIB = 1024 * 1024

# Writes `blocks` MiB: block i is a 1 MiB pseudo-random block with i in its first 8 bytes
# (so order matters to the hash), on a raw terminal when it has one (no \n -> \r\n).
GENERATOR = r"""
import os, random, sys, tty
blocks = int(sys.argv[1])
if os.isatty(1):
    tty.setraw(1)
base = random.Random(13).randbytes(1 << 20)
for i in range(blocks):
    block = i.to_bytes(8, "big") + base[8:]
    view = memoryview(block)
    while view:
        view = view[os.write(1, view):]
"""


def expected_digest(blocks: int) -> str:
    import random

    base = random.Random(13).randbytes(1 << 20)
    h = hashlib.sha256()
    for i in range(blocks):
        h.update(i.to_bytes(8, "big") + base[8:])
    return h.hexdigest()


def generator_argv(blocks: int) -> list[str]:
    return [sys.executable, "-c", GENERATOR, str(blocks)]


@dataclass
class Figure:
    what: str
    value: float
    unit: str
    target: str | None = None
    peer: str | None = None
    peer_value: float | None = None

    @property
    def ratio(self) -> float | None:
        return round(self.value / self.peer_value, 3) if self.peer_value else None

    def json(self) -> dict[str, object]:
        peer_value = None if self.peer_value is None else round(self.peer_value, 2)
        return {"what": self.what, "value": round(self.value, 2), "unit": self.unit, "target": self.target,
                "peer": self.peer, "peer_value": peer_value, "ratio": self.ratio}  # fmt: skip


# ---------------------------------------------------------------- physical limits


def bare_pty(blocks: int) -> tuple[float, str]:
    """MB/s of a bare ptyprocess read loop, and the digest of what it read."""
    from ptyprocess import PtyProcess  # type: ignore[import-untyped]

    h = hashlib.sha256()
    t0 = time.perf_counter()
    proc = PtyProcess.spawn(generator_argv(blocks))
    total = 0
    while True:
        try:
            data = os.read(proc.fd, 64 * 1024)
        except OSError:  # EIO: every slave fd closed
            break
        if not data:
            break
        h.update(data)
        total += len(data)
    took = time.perf_counter() - t0
    proc.close(force=True)
    return total / took / 1e6, h.hexdigest()


def bare_pipe(blocks: int) -> tuple[float, str]:
    """MB/s of a bare pipe read loop, and the digest of what it read."""
    h = hashlib.sha256()
    t0 = time.perf_counter()
    proc = subprocess.Popen(generator_argv(blocks), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    total = 0
    while data := os.read(fd, MIB):
        h.update(data)
        total += len(data)
    took = time.perf_counter() - t0
    proc.wait()
    proc.stdout.close()
    return total / took / 1e6, h.hexdigest()


# ---------------------------------------------------------------- through Nexus


def memory_kib(pid: int) -> dict[str, int]:
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


def cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of a process so far, and of its reaped children, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


@dataclass
class Through:
    received_mb_s: float  # the agent's `started` -> the last byte a following client received
    stored_mb_s: float  # the agent's `started` -> its `exited` (sent once every chunk is stored)
    digest: str
    stderr_bytes: int
    cpu: dict[str, float]  # CPU seconds per process over the job: submit -> the client's last item


async def through_nexus(client: object, blocks: int, tty: bool, pids: dict[str, int]) -> Through:
    """One job of `blocks` MiB, followed live by a client (as `nexus run` does).
    `pids`: the stack's processes by name, whose CPU seconds over the job are taken."""
    from orchestrator.client import NexusClient, new_job_id
    from schemas.events import JobExited, JobRequested, JobStarted

    assert isinstance(client, NexusClient)

    def cpu_now() -> dict[str, float]:
        now = {name: cpu_s(pid)[0] for name, pid in pids.items()}
        now["command"] = cpu_s(pids["agent"])[1]  # the job's own processes, reaped by the agent
        now["client"] = time.process_time()  # this process: nats-py, the follow loop and SHA-256
        return now

    job_id = new_job_id()
    cpu_before = cpu_now()
    await client.submit(job_id, JobRequested(command=shlex.join(generator_argv(blocks)), tty=tty))
    h = hashlib.sha256()
    started: float | None = None
    exited: float | None = None
    last_byte = 0.0
    total = errors = 0
    async for item in client.follow(job_id):
        if item.output is not None:
            if item.stream == "stderr":
                errors += len(item.output)
                continue
            h.update(item.output)
            total += len(item.output)
            last_byte = time.time()
        elif item.record is not None and isinstance(item.record.event, JobStarted) and item.record.event.ts is not None:
            started = item.record.event.ts.timestamp()
        elif item.record is not None and isinstance(item.record.event, JobExited) and item.record.event.ts is not None:
            exited = item.record.event.ts.timestamp()
    cpu_after = cpu_now()
    assert started is not None and exited is not None, "no started or exited event"
    cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
    return Through(total / (last_byte - started) / 1e6, total / (exited - started) / 1e6, h.hexdigest(), errors, cpu)


async def stack_figures(blocks: int, signed: bool) -> tuple[dict[bool, Through], dict[str, dict[str, int]]]:
    from bus.nats_bus import NatsBus
    from orchestrator.client import NexusClient, new_job_id
    from orchestrator.embedded import EmbeddedNats
    from orchestrator.trust.keyring import Keyring
    from schemas.events import JobRequested

    sys.path.insert(0, str(Path(__file__).parent))
    from stack import stop_processes, wait_ready, wait_status

    tmp = Path(tempfile.mkdtemp(prefix="nexus-bench-out-"))
    creds: dict[str, Path | None] = dict.fromkeys(("orchestrator", "agent", "client"))
    auth = None
    if signed:  # as `nexus up` runs: every process has credentials and signs what it publishes
        ring = Keyring(tmp / "creds")
        ring.ensure()
        creds = {"orchestrator": ring.issue("admin", "orchestrator").path,
                 "agent": ring.issue("agent", "agent-bench-out", "bench-out").path,
                 "client": ring.issue("submitter", "bench").path}  # fmt: skip
        auth = ring.server_config()
    server = EmbeddedNats(tmp / "js", port=-1, auth=auth)
    url = await server.start()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"NEXUS_NATS_URL": url}

    def env_of(name: str) -> dict[str, str]:
        path = creds[name]
        return env if path is None else env | {"NEXUS_NATS_CREDS": str(path)}

    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen([BIN / "nexus", "orchestrator", "--db", tmp / "nexus.duckdb", "--log-level", "warning"],
                         env=env_of("orchestrator"), **quiet),
        subprocess.Popen([BIN / "nexus", "agent", "--node", "bench-out", "--log-level", "warning", "--state-dir", tmp / "agent"],
                         env=env_of("agent"), cwd=tmp, **quiet),
    ]  # fmt: skip
    assert server.proc is not None
    pids = {"nats-server": server.proc.pid, "orchestrator": procs[0].pid, "agent": procs[1].pid}
    bus = await NatsBus.connect(url, name="bench-output", creds=creds["client"])
    client = NexusClient(bus)
    memory: dict[str, dict[str, int]] = {}
    try:
        await wait_ready(client)
        warm = new_job_id()
        await client.submit(warm, JobRequested(command="true"))
        await wait_status(client, [warm])
        memory["idle"] = memory_kib(pids["agent"])
        results = {}
        for tty in (True, False):
            results[tty] = await through_nexus(client, blocks, tty, pids)
        memory["after"] = memory_kib(pids["agent"])
        return results, memory
    finally:
        await bus.close()
        stop_processes(procs)
        await server.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # the streams hold what the jobs wrote


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=100, help="MiB of output per job (default 100)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--signed", action="store_true", help="a stack with credentials, as `nexus up` runs: every chunk signed")
    args = ap.parse_args()
    blocks = args.mb
    want = expected_digest(blocks)
    pty_limit, pty_digest = bare_pty(blocks)
    pipe_limit, pipe_digest = bare_pipe(blocks)
    assert pty_digest == want, "the bare PTY loop did not read what the generator wrote (terminal not raw?)"
    assert pipe_digest == want, "the bare pipe loop did not read what the generator wrote"
    results, memory = asyncio.run(stack_figures(blocks, args.signed))
    exact = {tty: r.digest == want and r.stderr_bytes == 0 for tty, r in results.items()}
    figures = [
        Figure("bare ptyprocess read loop", pty_limit, "MB/s"),
        Figure("bare pipe read loop", pipe_limit, "MB/s"),
        Figure(f"{blocks} MiB through Nexus, tty: true (PTY), received", results[True].received_mb_s, "MB/s",
               ">= 90% of the bare PTY loop", "bare ptyprocess read loop", pty_limit),
        Figure(f"{blocks} MiB through Nexus, tty: false (pipes), received", results[False].received_mb_s, "MB/s", ">= 300 MB/s",
               "bare pipe read loop", pipe_limit),
        Figure("  the same, tty: true, stored (started -> exited)", results[True].stored_mb_s, "MB/s", None,
               "bare ptyprocess read loop", pty_limit),
        Figure("  the same, tty: false, stored (started -> exited)", results[False].stored_mb_s, "MB/s", None,
               "bare pipe read loop", pipe_limit),
        Figure("byte-exact, tty: true (1 = yes)", float(exact[True]), "bool", "1"),
        Figure("byte-exact, tty: false (1 = yes)", float(exact[False]), "bool", "1"),
        *(Figure(f"  CPU s per 100 MiB, {'PTY' if tty else 'pipes'}, {name}", cpu * 100 / blocks, "s")
          for tty in (True, False) for name, cpu in [*results[tty].cpu.items(), ("all", sum(results[tty].cpu.values()))]),
        # Were the whole path's CPU seconds spread perfectly over this machine's cores, no faster than this.
        *(Figure(f"  {'PTY' if tty else 'pipes'}: the CPU limit on {os.cpu_count()} cores", blocks * MIB / sum(results[tty].cpu.values())
                 * (os.cpu_count() or 1) / 1e6, "MB/s") for tty in (True, False)),
        Figure("agent RSS idle (VmRSS)", memory["idle"]["VmRSS"] / 1024, "MiB", "<= 35 MiB"),
        Figure("agent peak RSS idle (VmHWM)", memory["idle"]["VmHWM"] / 1024, "MiB", "<= 35 MiB"),
        Figure(f"agent peak RSS after {blocks} MiB jobs (VmHWM)", memory["after"]["VmHWM"] / 1024, "MiB", "<= 60 MiB"),
    ]  # fmt: skip
    if args.json:
        print(json.dumps({"bench": "output_throughput", "figures": [f.json() for f in figures]}))
    else:
        print(f"machine: {os.uname().sysname} {os.uname().machine}, {os.cpu_count()} cores, python {sys.version.split()[0]}, "
              f"load {os.getloadavg()[0]:.1f}, {'signed' if args.signed else 'no credentials'}")
        for f in figures:
            ratio = f"  ({f.ratio:.0%} of {f.peer})" if f.ratio is not None else ""
            target = f"  target {f.target}" if f.target else ""
            print(f"{f.what:<52} {f.value:9.{2 if f.unit == 's' else 1}f} {f.unit}{ratio}{target}")
    if not all(exact.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
