"""`nexus replay` throughput (issue 13), beside its peers measured in the same run.

Makes a signed log of ~31k events (bench/replay_log.py: real orchestrator and agent
processes for a few hundred jobs, then their job events copied under new ids and signed
again by the same keys), then measures:

  replay      `nexus replay --db FILE` as a process: whole, and net of start-up (the same
              command with `--until 1` is the start-up); every signature verified, or
              vouched for by a signed checkpoint (orchestrator.lookahead)
  NATS        nats-py ordered consumer reading the same stream, nothing else done
  DuckDB      the replayed `events` rows inserted again in one transaction: as one list per
              column in one statement, and as the store writes them (JSON documents);
              and copied inside DuckDB (CREATE TABLE AS), the engine's own bulk rate
  verify      one Ed25519 verification (PyNaCl), serially: the floor of a verified replay
              is cores / (verify time), whatever else is made fast
  profile     where the time goes, stage by stage, in this process, each stage alone on
              one core (CPU time): fetch (nats-py receiving), decode, lookahead (the chain
              read ahead to the signed checkpoints that vouch for signature verdicts),
              verify (the signatures no checkpoint vouches for), authorship, load (views of
              older jobs from the file), fold, chain (digest and link), write; and the
              in-process replay without verification (not a mode of `nexus replay`: it
              shows what the checks cost)

`--json` prints one object (the bench convention of docs/benchmarks.md). `--keep DIR`
keeps the log there and uses it again on the next run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from replay_log import open_log

from bus.identity import Verifier, signatures_hold
from bus.nats_bus import NatsBus
from bus.nats_translate import to_record
from orchestrator.core.audit import GENESIS
from orchestrator.core.reducer import EventRow
from orchestrator.lookahead import Lookahead
from orchestrator.projection import Clock, Projection
from orchestrator.replay import replay
from orchestrator.store import EVENTS, DuckDBStore

BIN = Path(sys.executable).parent
TARGET = 60_000.0


def say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, flush=True)


def timed_replay(url: str, creds: Path, db: Path, *extra: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds (all its threads, user + system) of one `nexus replay` process."""
    env = {**os.environ, "NEXUS_NATS_URL": url, "NEXUS_NATS_CREDS": str(creds)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run([BIN / "nexus", "replay", "--db", db, "--force", "--json", *extra], env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"nexus replay failed: {done.stderr[-2000:]}")
    return took, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


async def nats_rate(url: str, creds: Path, events: int) -> tuple[float, float, list[Any]]:
    """Messages/s of a raw ordered consumer over the whole stream (nats-py, as the replay uses),
    the CPU µs per message it costs this process, and the messages."""
    from nats.js import api

    bus = await NatsBus.connect(url, name="bench-nats-peer", creds=creds)
    try:
        got: list[Any] = []
        done = asyncio.Event()

        async def on_msg(msg: Any) -> None:
            got.append(msg)
            if len(got) >= events:
                done.set()

        t0, c0 = time.perf_counter(), time.process_time()
        cfg = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL)
        sub = await bus.js.subscribe("nexus.evt.>", stream="NEXUS_EVENTS", ordered_consumer=True, cb=on_msg, config=cfg)
        await asyncio.wait_for(done.wait(), 120)
        took, cpu = time.perf_counter() - t0, time.process_time() - c0
        await sub.unsubscribe()
        return events / took, cpu / events * 1e6, got
    finally:
        await bus.close()


def duckdb_rates(db: Path, scratch: Path) -> tuple[float, float, float]:
    """Rows/s inserting the replayed `events` rows from Python lists in one statement, as the
    store does (JSON documents), and copying them inside DuckDB."""
    import duckdb

    src = duckdb.connect(str(db), read_only=True)
    cur = src.execute("SELECT * FROM events ORDER BY seq")
    names = [d[0] for d in cur.description or []]
    rows = cur.fetchall()
    src.close()
    columns = [list(c) for c in zip(*rows, strict=True)]
    path = scratch / "bulk.duckdb"
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone='UTC'")
    con.execute(EVENTS.ddl())
    kinds = dict(EVENTS.columns)
    select = ", ".join(f"unnest(?::{kinds[n]}[])" for n in names)
    t0 = time.perf_counter()
    con.execute("BEGIN")
    con.execute(f"INSERT INTO events ({', '.join(names)}) SELECT {select}", columns)
    con.execute("COMMIT")
    lists = len(rows) / (time.perf_counter() - t0)
    con.execute("DELETE FROM events")
    structs = [EventRow(**dict(zip(names, row, strict=True))) for row in rows]
    t0 = time.perf_counter()
    con.execute("BEGIN")
    EVENTS.upsert(con, structs, replace=False)
    con.execute("COMMIT")
    documents = len(rows) / (time.perf_counter() - t0)
    con.execute(f"ATTACH '{db}' AS src (READ_ONLY)")
    t0 = time.perf_counter()
    con.execute("CREATE TABLE copied AS SELECT * FROM src.events")
    copied = len(rows) / (time.perf_counter() - t0)
    con.close()
    return lists, documents, copied


def verify_us(records: list[Any], n: int = 2000) -> float:
    signed = [r for r in records if r.signer is not None][:n]
    t0 = time.thread_time()
    signatures_hold(signed)
    return (time.thread_time() - t0) / len(signed) * 1e6


def profile(msgs: list[Any], url_identity: Any, scratch: Path) -> tuple[dict[str, float], int]:
    """CPU µs per event of each stage, each run alone in this thread, and how many records a
    checkpoint vouched for (their signatures not checked again: orchestrator.lookahead).
    Without the cyclic garbage collector, as `orchestrator.replay` runs."""
    gc.disable()
    try:
        return _profile(msgs, url_identity, scratch)
    finally:
        gc.enable()


def _profile(msgs: list[Any], url_identity: Any, scratch: Path) -> tuple[dict[str, float], int]:
    per: dict[str, float] = {}
    n = len(msgs)
    t0 = time.thread_time()
    records = [to_record(m) for m in msgs]
    per["decode"] = (time.thread_time() - t0) / n * 1e6
    t0 = time.thread_time()
    verifier = Verifier.trusting_issuer_of(url_identity)
    assert verifier is not None
    ahead = Lookahead(verifier, GENESIS)
    parts = ahead.add(records) + ahead.finish()
    per["lookahead"] = (time.thread_time() - t0) / n * 1e6
    t0 = time.thread_time()
    holds = [h for p in parts for h in (p.holds if p.holds is not None else signatures_hold(p.records))]
    per["verify"] = (time.thread_time() - t0) / n * 1e6
    path = scratch / "profile.duckdb"
    path.unlink(missing_ok=True)
    store = DuckDBStore(path)
    projection = Projection(store, verifier=Verifier.trusting_issuer_of(url_identity))
    projection.clock = Clock(timer=time.thread_time)
    records = [r for p in parts for r in p.records]
    links = [link for p in parts for link in p.links]
    for i in range(0, n, 5000):
        projection.apply_batch(records[i : i + 5000], holds=holds[i : i + 5000], links=links[i : i + 5000])
    store.close()
    for stage, spent in projection.clock.spent.items():
        per[stage] = spent / n * 1e6
    return per, ahead.vouched


async def in_process(url: str, creds: Path, scratch: Path, *, verify: bool) -> float:
    """Events/s of the replay pipeline in this process (no process start-up)."""
    bus = await NatsBus.connect(url, name="bench-replay", creds=creds)
    try:
        path = scratch / f"inproc-{verify}.duckdb"
        path.unlink(missing_ok=True)
        store = DuckDBStore(path)
        verifier = Verifier.trusting_issuer_of(bus.identity) if verify else None
        projection = Projection(store, verifier=verifier)
        end = await bus.last_seq()
        t0 = time.perf_counter()
        await replay(bus, projection, until_seq=end)
        took = time.perf_counter() - t0
        store.close()
        return end / took
    finally:
        await bus.close()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    quiet = args.json
    keep = Path(args.keep) if args.keep else None
    root = keep or Path(tempfile.mkdtemp(prefix="nexus-bench-replay-"))
    scratch = Path(tempfile.mkdtemp(prefix="nexus-bench-replay-db-"))
    log = await open_log(root, real_jobs=args.real_jobs, events=args.events, quiet=quiet)
    try:
        events = log.events
        say(quiet, f"machine: {os.uname().sysname} {os.uname().machine}, {os.cpu_count()} cores, python {sys.version.split()[0]}, "
                   f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        say(quiet, f"log: {events} events ({log.real_events} from real processes)")
        db = scratch / "replay.duckdb"
        startup, startup_cpu = min(timed_replay(log.url, log.admin_creds, db, "--until", "1") for _ in range(2))
        whole, whole_cpu = min(timed_replay(log.url, log.admin_creds, db) for _ in range(args.runs))
        net = events / max(whole - startup, 1e-9)
        cpu_us = (whole_cpu - startup_cpu) / events * 1e6
        say(quiet, f"nexus replay: {whole:.2f} s for the process, start-up {startup:.2f} s: "
                   f"{events / whole:,.0f} events/s whole, {net:,.0f} events/s net of start-up; "
                   f"{cpu_us:.0f} µs CPU per event net (all threads; nats-server's not counted)")  # fmt: skip
        nats, fetch_us, msgs = await nats_rate(log.url, log.admin_creds, events)
        say(quiet, f"NATS (nats-py ordered consumer, nothing else): {nats:,.0f} msgs/s")
        lists, documents, copied = duckdb_rates(db, scratch)
        say(quiet, f"DuckDB bulk insert of the same rows: {lists:,.0f} rows/s from Python lists, {documents:,.0f} rows/s as the "
                   f"store writes them (JSON documents), {copied:,.0f} rows/s copied in-engine")  # fmt: skip
        bus = await NatsBus.connect(log.url, name="bench-id", creds=log.admin_creds)
        identity = bus.identity
        await bus.close()
        records = [to_record(m) for m in msgs]
        v_us = verify_us(records)
        cores = os.cpu_count() or 1
        floor = cores / v_us * 1e6
        say(quiet, f"Ed25519 verification: {v_us:.1f} µs CPU each: {cores} cores verify at most {floor:,.0f} events/s, doing nothing else")
        staged, vouched = profile(msgs, identity, scratch)
        per = {"fetch": fetch_us, **staged}
        say(quiet, f"signatures vouched for by signed checkpoints: {vouched} of {events} records (the rest verified one by one)")
        say(quiet, "profile, CPU µs per event, each stage alone on one core:")
        for stage in ("fetch", "decode", "lookahead", "verify", "authorship", "load", "fold", "chain", "write"):
            say(quiet, f"  {stage:<11} {per.get(stage, 0.0):6.1f}")
        say(quiet, f"  {'total':<11} {sum(per.values()):6.1f}")
        unverified = await in_process(log.url, log.admin_creds, scratch, verify=False)
        verified = await in_process(log.url, log.admin_creds, scratch, verify=True)
        say(quiet, f"in-process pipeline: {verified:,.0f} events/s verified, {unverified:,.0f} events/s with no verifier (not a mode)")
    finally:
        await log.server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    fig = [
        {"what": "nexus replay, net of start-up (every signature verified or vouched for)", "value": net, "unit": "events/s",
         "target": ">= 60000",
         "peer": "nats-py ordered consumer", "peer_value": nats, "ratio": net / nats},
        {"what": "nexus replay, CPU per event net of start-up (all its threads)", "value": cpu_us, "unit": "µs/event",
         "target": None, "peer": None, "peer_value": None, "ratio": None},
        {"what": "nexus replay, whole process", "value": events / whole, "unit": "events/s", "target": None,
         "peer": None, "peer_value": None, "ratio": None},
        {"what": "NATS raw replay (nats-py ordered consumer)", "value": nats, "unit": "msgs/s", "target": None,
         "peer": None, "peer_value": None, "ratio": None},
        {"what": "DuckDB insert of the events rows as the store writes them (JSON documents)", "value": documents,
         "unit": "rows/s", "target": None, "peer": "DuckDB in-engine copy", "peer_value": copied, "ratio": documents / copied},
        {"what": "DuckDB insert of the events rows from Python lists (one statement)", "value": lists, "unit": "rows/s",
         "target": None, "peer": "DuckDB in-engine copy", "peer_value": copied, "ratio": lists / copied},
        {"what": "Ed25519 verification (PyNaCl), CPU", "value": v_us, "unit": "µs/event", "target": None,
         "peer": None, "peer_value": None, "ratio": None},
        {"what": "verified replay ceiling from verification alone", "value": floor, "unit": "events/s", "target": ">= 60000",
         "peer": None, "peer_value": None, "ratio": None},
        {"what": "in-process replay pipeline, verified", "value": verified, "unit": "events/s", "target": None,
         "peer": "same, no verifier", "peer_value": unverified, "ratio": verified / unverified},
    ]  # fmt: skip
    fig += [{"what": f"profile: {stage}", "value": us, "unit": "µs CPU/event", "target": None, "peer": None,
             "peer_value": None, "ratio": None} for stage, us in per.items()]  # fmt: skip
    return {"bench": "replay", "figures": fig}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=31_000, help="events in the log")
    ap.add_argument("--real-jobs", type=int, default=400, help="jobs run by real processes (the rest are copies)")
    ap.add_argument("--runs", type=int, default=2, help="replays timed (the best counts)")
    ap.add_argument("--keep", help="keep the log in this directory and use it again")
    ap.add_argument("--json", action="store_true", help="print one JSON object (docs/benchmarks.md)")
    a = ap.parse_args()
    result = asyncio.run(main(a))
    if a.json:
        print(json.dumps(result))
