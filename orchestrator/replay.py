"""`nexus replay`: the whole log folded into a new DuckDB file, as fast as the checks allow.

The same projection as the live orchestrator (every signature verified, every authorship
rule, the chain, every rejection recorded, secrets masked), fed so that the cores overlap:

    event loop      receives the log (ordered consumer) and decodes it, batch after batch, and
                    reads ahead to the signed checkpoint that vouches for the records'
                    signatures (orchestrator.lookahead): those are not checked again
    verify threads  check the signatures no checkpoint vouches for (libsodium lets go of the GIL)
    apply thread    folds batch N and writes it, with the checkpoint, in one transaction

Batches are large (BATCH records a transaction), so DuckDB writes columns in bulk and
commits rarely. What goes into the file is what one record at a time would give:
tests/integration/test_replay_equivalence.py compares the two row for row.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import gc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from bus.identity import signatures_hold
from bus.port import EventBus
from orchestrator.lookahead import Lookahead, Released
from orchestrator.projection import Link, Projection, chunks, verification_pool
from schemas.records import Record

BATCH = 5000
"""Records folded and stored per transaction."""

Holds = list[bool | None]


async def replay(
    bus: EventBus,
    projection: Projection,
    *,
    until_seq: int,
    until_ts: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    batch: int = BATCH,
) -> int:
    """Fold the log up to `until_seq` (and records stamped at or before `until_ts`) into
    `projection`; returns the last applied sequence."""
    # The fold makes next to no reference cycles (35 objects in a replay of 31k records), but it
    # keeps tens of thousands of records alive (read ahead, batches in flight), which the cyclic
    # collector walked again and again: ~12 µs of CPU a record (bench/replay.py). Off meanwhile.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return await _replay(bus, projection, until_seq=until_seq, until_ts=until_ts, progress=progress, batch=batch)
    finally:
        if collecting:
            gc.enable()


async def _replay(
    bus: EventBus,
    projection: Projection,
    *,
    until_seq: int,
    until_ts: datetime | None,
    progress: Callable[[int], None] | None,
    batch: int,
) -> int:
    loop = asyncio.get_running_loop()
    pending: collections.deque[tuple[list[Record], list[Link | None], asyncio.Future[list[Holds]]]] = collections.deque()

    def verify(part: Released) -> list[asyncio.Future[Holds]]:
        """The verdicts on the signatures of `part`: known (a checkpoint vouched for them, or
        no verifier), or being checked from now on, in the pool."""
        if part.holds is not None or projection.verifier is None:
            done: asyncio.Future[Holds] = loop.create_future()
            done.set_result(part.holds if part.holds is not None else [None] * len(part.records))
            return [done]
        pool = verification_pool()
        return [loop.run_in_executor(pool, signatures_hold, chunk) for chunk in chunks(part.records)]

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="nexus-replay") as applier:

        async def apply_oldest() -> None:
            records, links, checked = pending.popleft()
            holds = [h for part in await checked for h in part]
            await loop.run_in_executor(applier, functools.partial(projection.apply_batch, records, holds=holds, links=links))
            if progress is not None:
                progress(projection.applied_seq)

        if until_seq > projection.applied_seq:
            ahead = Lookahead(projection.verifier, projection.chain) if projection.verifier is not None else None
            gathered: list[Record] = []
            links: list[Link | None] = []
            checks: list[asyncio.Future[Holds]] = []
            async for records in bus.read_records(start_seq=projection.applied_seq + 1, until_seq=until_seq):
                if until_ts is not None:
                    kept = [r for r in records if r.stream_ts <= until_ts]
                    stop = len(kept) < len(records)
                    records = kept
                else:
                    stop = False
                parts = ahead.add(records) if ahead is not None else [Released(records, None, [None] * len(records))]
                if stop and ahead is not None:
                    parts += ahead.finish()
                for part in parts:  # checked as they come, folded when their batch's turn comes
                    gathered.extend(part.records)
                    links.extend(part.links)
                    checks.extend(verify(part))
                if len(gathered) >= batch or (stop and gathered):
                    pending.append((gathered, links, asyncio.gather(*checks)))
                    gathered, links, checks = [], [], []
                while len(pending) > 1:
                    await apply_oldest()
                if stop:
                    break
            for part in ahead.finish() if ahead is not None else []:
                gathered.extend(part.records)
                links.extend(part.links)
                checks.extend(verify(part))
            if gathered:
                pending.append((gathered, links, asyncio.gather(*checks)))
        while pending:
            await apply_oldest()
    return projection.applied_seq
