"""The cost of trust (issue 11): signing and verification on, beside the same stack without them.

Runs, in one process and on this machine, two private stacks one after the other:
  open     nats-server without auth; orchestrator, agent and client without credentials
  signed   nats-server with NATS decentralized auth (a fresh keyring); the orchestrator
           (admin), the agent (agent role, its node) and the client (submitter) each sign
           every event, the orchestrator verifies every record, the agent every dispatch
and measures requested -> succeeded one at a time (p50/p95) and a burst's jobs/s. Also
the raw cost of one signature and one verification (nkeys/PyNaCl), times the events of
a job. Prints the figures with the difference per job; record them in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from stack import pct, stop_processes, wait_ready, wait_status

from bus.identity import Identity, Verifier
from bus.nats_bus import NatsBus
from orchestrator.client import NexusClient, new_job_id
from orchestrator.embedded import EmbeddedNats
from orchestrator.trust.keyring import Keyring
from schemas.events import JobRequested
from schemas.records import Record

BIN = Path(sys.executable).parent


async def measure(signed: bool, sequential: int, burst: int, max_jobs: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix=f"nexus-trust-{'signed' if signed else 'open'}-"))
    ring = Keyring(tmp / "creds")
    creds: dict[str, Path | None] = {"orchestrator": None, "agent": None, "client": None}
    auth = None
    if signed:
        ring.ensure()
        creds = {
            "orchestrator": ring.issue("admin", "orchestrator").path,
            "agent": ring.issue("agent", "agent-bench-1", "bench-1").path,
            "client": ring.issue("submitter", "bench").path,
        }
        auth = ring.server_config()
    server = EmbeddedNats(tmp / "js", port=-1, auth=auth)
    url = await server.start()
    env = {**os.environ, "NEXUS_NATS_URL": url}

    def with_creds(name: str) -> dict[str, str]:
        path = creds[name]
        return {**env, "NEXUS_NATS_CREDS": str(path)} if path else env

    orchestrator = [BIN / "nexus", "orchestrator", "--db", tmp / "nexus.duckdb", "--log-level", "warning"]
    agent = [BIN / "nexus", "agent", "--node", "bench-1", "--max-jobs", str(max_jobs), "--log-level", "warning"]
    procs = [
        subprocess.Popen(orchestrator, env=with_creds("orchestrator")),
        subprocess.Popen([*agent, "--state-dir", tmp / "agent"], env=with_creds("agent")),
    ]
    bus = await NatsBus.connect(url, name="bench", creds=creds["client"])
    client = NexusClient(bus)
    try:
        await wait_ready(client)
        for _ in range(3):  # warm up: identities announced, consumers made, caches full
            warm = new_job_id()
            await client.submit(warm, JobRequested(command="true"))
            await wait_status(client, [warm])
        one = []
        for _ in range(sequential):
            job_id = new_job_id()
            t0 = time.perf_counter()
            await client.submit(job_id, JobRequested(command="true"))
            await wait_status(client, [job_id])
            one.append(time.perf_counter() - t0)
        ids = [new_job_id() for _ in range(burst)]
        t0 = time.perf_counter()
        for job_id in ids:
            await client.submit(job_id, JobRequested(command="true"))
        await wait_status(client, ids)
        took = time.perf_counter() - t0
        rows = await client.query("SELECT count(*), count(author) FROM events")
        events, authored = rows.rows[0]
        return {
            "p50_ms": statistics.median(one) * 1000,
            "p95_ms": pct(one, 95) * 1000,
            "jobs_per_s": burst / took,
            "events": float(events),
            "authored": float(authored),
        }
    finally:
        await bus.close()
        stop_processes(procs)
        await server.stop()


def crypto_cost(n: int = 2000) -> tuple[float, float]:
    """Microseconds for one signature and one verification of a typical event."""
    ring = Keyring(Path(tempfile.mkdtemp(prefix="nexus-trust-keys-")))
    ring.ensure()
    me = Identity.from_creds(ring.issue("admin", "orchestrator").path)
    subject, data = "nexus.evt.job.j-1.validated", b'{"type":"job.validated","v":1,"ts":"2026-12-05T10:00:00Z","severity":"info"}' * 2
    t0 = time.perf_counter()
    for _ in range(n):
        headers = me.sign(subject, data)
    sign_us = (time.perf_counter() - t0) / n * 1e6
    verifier = Verifier([ring.account_public_key])
    ann = me.announcement()
    from schemas import codec

    raw = codec.encode(ann.event)
    h = me.sign(ann.subject, raw)
    verifier.learn(
        Record(
            seq=1,
            subject=ann.subject,
            stream_ts=ann.event.ts or _now(),
            raw=raw,
            event=ann.event,
            signer=h["Nexus-Signer"],
            signature=h["Nexus-Sig"],
        )
    )
    rec = Record(seq=2, subject=subject, stream_ts=_now(), raw=data, signer=headers["Nexus-Signer"], signature=headers["Nexus-Sig"])
    t0 = time.perf_counter()
    for _ in range(n):
        assert verifier.check(rec).author is not None
    verify_us = (time.perf_counter() - t0) / n * 1e6
    return sign_us, verify_us


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)


async def main(sequential: int, burst: int, max_jobs: int) -> list[dict[str, object]]:
    """Prints the figures; returns them in the --json convention of bench/all.py."""
    print(f"machine: {os.uname().sysname} {os.uname().machine}, {os.cpu_count()} cores, python {sys.version.split()[0]}")
    sign_us, verify_us = crypto_cost()
    print(f"one signature {sign_us:.1f} us, one verification {verify_us:.1f} us (nkeys / PyNaCl Ed25519)")
    open_ = await measure(False, sequential, burst, max_jobs)
    signed = await measure(True, sequential, burst, max_jobs)
    per_job_events = signed["events"] / (sequential + burst + 3)
    authored = f"{signed['authored']:.0f}/{signed['events']:.0f}"
    print(f"events per job (signed stack, incl. announcements and checkpoints): {per_job_events:.1f}; authored rows {authored}")
    print(f"crypto per job (sign + verify each event once): {per_job_events * (sign_us + verify_us) / 1000:.3f} ms")
    for name in ("p50_ms", "p95_ms"):
        added = signed[name] - open_[name]
        print(f"requested -> succeeded {name[:3]}: open {open_[name]:6.1f} ms   signed {signed[name]:6.1f} ms   added {added:+6.1f} ms")
    rate_open, rate_signed = open_["jobs_per_s"], signed["jobs_per_s"]
    print(f"burst of {burst} on one agent (max {max_jobs}): open {rate_open:.0f} jobs/s   signed {rate_signed:.0f} jobs/s   "
          f"ratio {rate_signed / rate_open:.2f}")  # fmt: skip

    def fig(what: str, value: float, unit: str, peer: str | None = None, peer_value: float | None = None) -> dict[str, object]:
        ratio = round(value / peer_value, 3) if peer_value else None
        return {"what": what, "value": round(value, 3), "unit": unit, "target": None,
                "peer": peer, "peer_value": peer_value, "ratio": ratio}  # fmt: skip

    return [
        fig("one Ed25519 signature (nkeys)", sign_us, "us"),
        fig("one signature verification", verify_us, "us"),
        fig("signed stack: requested -> succeeded p50", signed["p50_ms"], "ms", "open stack", round(open_["p50_ms"], 3)),
        fig("signed stack: requested -> succeeded p95", signed["p95_ms"], "ms", "open stack", round(open_["p95_ms"], 3)),
        fig(f"signed stack: burst of {burst} on one agent", rate_signed, "jobs/s", "open stack", round(rate_open, 3)),
    ]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sequential", type=int, default=50)
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--max-jobs", type=int, default=8)
    ap.add_argument("--json", action="store_true", help="print one JSON object (the human figures go to stderr)")
    a = ap.parse_args()
    if a.json:
        with contextlib.redirect_stdout(sys.stderr):
            figures = asyncio.run(main(a.sequential, a.burst, a.max_jobs))
        print(json.dumps({"bench": "trust_cost", "figures": figures}))
    else:
        asyncio.run(main(a.sequential, a.burst, a.max_jobs))
