"""A realistic signed event log for bench/replay.py: made by real processes, then multiplied.

1. A private nats-server with NATS decentralized auth (a fresh keyring), `nexus orchestrator`
   (admin service identity) and `nexus agent` (its node's identity) as processes, and a
   client with a submitter identity: `real_jobs` jobs (`true`, in bursts) go through the
   whole path, so the log holds what the real processes publish, signed as they sign it
   (announcements, requested/validated/assigned/dispatch/accepted/started/exited/succeeded,
   checkpoints, node registrations).
2. Both processes are stopped; the job events of that log are published again under new
   job ids until the log holds `events` records: the same bytes with the job id replaced,
   re-signed by the key that signed the original (the bench holds every identity's seed),
   in the original interleaving. The reducer accepts them as the originals (every one is
   a valid, authentic event), so a replay does the same work per event as on a real log.
   Checkpoints are not copied (their chain values would not match): new ones are signed by
   the orchestrator's key over the copies, as the orchestrator signs them (every
   CHECKPOINT_EVERY events, with its verdicts on the signatures: all hold).

The store directory can be kept (`--keep DIR` in bench/replay.py) and used again.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bus.identity import SIG_HEADER, SIGNER_HEADER, Identity
from bus.nats_bus import NatsBus
from orchestrator.client import NexusClient, new_job_id
from orchestrator.core import audit
from orchestrator.embedded import EmbeddedNats
from orchestrator.trust.keyring import Keyring
from schemas import codec, subjects
from schemas.events import JobRequested
from schemas.records import Record
from schemas.trust import TrustCheckpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import stop_processes, wait_ready

BIN = Path(sys.executable).parent
TERMINAL_SQL = "('succeeded','failed','rejected','timed_out','cancelled','lost')"
CHECKPOINT_EVERY = 1000  # as orchestrator.service's


@dataclass
class Log:
    server: EmbeddedNats
    url: str
    admin_creds: Path
    """Credentials that may read everything (an admin): what `nexus replay` runs with."""
    events: int
    real_events: int


def _creds(ring: Keyring) -> dict[str, Path]:
    return {
        "orchestrator": ring.ensure_creds("admin", "orchestrator", service=True),
        "agent": ring.ensure_creds("agent", "agent-bench-1", "bench-1"),
        "client": ring.ensure_creds("submitter", "bench"),
        "admin": ring.ensure_creds("admin", "admin"),
    }


async def open_log(root: Path, *, real_jobs: int, events: int, quiet: bool = False) -> Log:
    """Start the server on the log in `root` (made first when `root` holds none)."""
    ring = Keyring(root / "creds")
    fresh = not ring.exists()
    ring.ensure()
    creds = _creds(ring)
    server = EmbeddedNats(root / "js", port=-1, auth=ring.server_config())
    url = await server.start()
    try:
        bus = await NatsBus.connect(url, name="bench-replay-log", creds=creds["admin"])
        try:
            if fresh or await bus.last_seq() == 0:
                t0 = time.perf_counter()
                await _run_real_jobs(url, root, creds, bus, real_jobs)
                real = await bus.last_seq()
                await _multiply(bus, creds, events)
                if not quiet:
                    print(f"log made in {time.perf_counter() - t0:.1f} s: {real} events from {real_jobs} real jobs, "
                          f"{await bus.last_seq() - real} more by copying them")  # fmt: skip
            total = await bus.last_seq()
            real = int((root / "real_events").read_text()) if (root / "real_events").exists() else total
        finally:
            await bus.close()
    except BaseException:
        await server.stop()
        raise
    return Log(server=server, url=url, admin_creds=creds["admin"], events=total, real_events=real)


async def _run_real_jobs(url: str, root: Path, creds: dict[str, Path], bus: NatsBus, jobs: int) -> None:
    env = {**os.environ, "NEXUS_NATS_URL": url}
    procs = [
        subprocess.Popen(
            [BIN / "nexus", "orchestrator", "--db", root / "live.duckdb", "--log-level", "warning"],
            env={**env, "NEXUS_NATS_CREDS": str(creds["orchestrator"])},
        ),
        subprocess.Popen(
            [BIN / "nexus", "agent", "--node", "bench-1", "--max-jobs", "8", "--state-dir", root / "agent", "--log-level", "warning"],
            env={**env, "NEXUS_NATS_CREDS": str(creds["agent"])},
        ),
    ]
    submitter = await NatsBus.connect(url, name="bench-submitter", creds=creds["client"])
    client = NexusClient(submitter)
    try:
        await wait_ready(client)
        ids: list[str] = []
        for start in range(0, jobs, 100):  # bursts of 100, as a busy fleet sends them
            burst = [new_job_id() for _ in range(min(100, jobs - start))]
            for job_id in burst:
                await client.submit(job_id, JobRequested(command="true"))
            ids.extend(burst)
            await _wait_done(client, ids)
    finally:
        await submitter.close()
        stop_processes(procs, timeout_s=30)
    (root / "real_events").write_text(str(await bus.last_seq()))


async def _wait_done(client: NexusClient, ids: list[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = await client.query(f"SELECT count(*) FROM jobs WHERE status IN {TERMINAL_SQL}")
        if rows.rows[0][0] >= len(ids):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the real jobs did not finish")


async def _multiply(bus: NatsBus, creds: dict[str, Path], events: int) -> None:
    """Publish the real jobs' events again under new job ids until the log holds `events`,
    with a signed checkpoint after every CHECKPOINT_EVERY of them."""
    signers = {ident.key: ident for ident in (Identity.from_creds(p) for p in creds.values())}
    orchestrator = Identity.from_creds(creds["orchestrator"])
    originals: list[Record] = [r async for batch in bus.read_records() for r in batch]
    job_records = [r for r in originals if (ent := subjects.entity_of(r.subject)) is not None and ent.family == "job"]
    chain = _chained(audit.GENESIS, originals)
    copies = [(copy, rec) for copy in range(1, events // max(len(job_records), 1) + 2) for rec in job_records]
    have = len(originals)
    while have < events and copies:
        verified_from = have + 1
        for copy, rec in copies[: min(CHECKPOINT_EVERY, events - have)]:
            ent = subjects.entity_of(rec.subject)
            assert ent is not None and rec.signer is not None
            old, new = ent.id, f"{ent.id}-c{copy}"
            subject = rec.subject.replace(old, new)
            data = rec.raw.replace(old.encode(), new.encode())
            headers = {**signers[rec.signer].sign(subject, data), "Nats-Msg-Id": f"bench:{copy}:{rec.seq}"}
            assert set(headers) >= {SIGNER_HEADER, SIG_HEADER}
            await bus.nc.publish(subject, data, headers=headers)
            have += 1
        del copies[: have - verified_from + 1]
        await bus.nc.flush()
        chain = _chained(chain, await _read(bus, verified_from, have))
        if have < events:  # the orchestrator's checkpoint over them (it trails by one here)
            cp = TrustCheckpoint(upto_seq=have, chain=chain, verified_from=verified_from, unverified=())
            data = codec.encode(cp)
            subject = subjects.trust("orchestrator", "checkpoint")
            await bus.nc.publish(subject, data, headers={**orchestrator.sign(subject, data), "Nats-Msg-Id": f"bench:cp:{have}"})
            await bus.nc.flush()
            have += 1
            chain = _chained(chain, await _read(bus, have, have))


async def _read(bus: NatsBus, first: int, last: int) -> list[Record]:
    deadline = time.monotonic() + 60
    while await bus.last_seq() < last:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the log holds {await bus.last_seq()} events, {last} published")
        await asyncio.sleep(0.01)
    return [r async for batch in bus.read_records(start_seq=first, until_seq=last) for r in batch]


def _chained(chain: str, records: list[Record]) -> str:
    for r in records:
        chain = audit.link(chain, r.seq, r.subject, r.stream_ts, audit.digest(r.raw), r.signer, r.signature)
    return chain
