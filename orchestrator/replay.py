"""`nexus replay`: the whole log folded into a new DuckDB file, as fast as the checks allow.

The same projection as the live orchestrator (every signature verified, every authorship
rule, the chain, every rejection recorded, secrets masked), fed so that the cores overlap:

    event loop      receives the log (ordered consumer) and decodes it, batch after batch
    verify threads  check the signatures of batch N+1 (libsodium lets go of the GIL)
    apply thread    folds batch N and writes it, with the checkpoint, in one transaction

Batches are large (BATCH records a transaction), so DuckDB writes columns in bulk and
commits rarely. What goes into the file is what one record at a time would give:
tests/integration/test_replay_equivalence.py compares the two row for row.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from bus.identity import signatures_hold
from bus.port import EventBus
from orchestrator.projection import Projection, chunks, verification_pool
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
    loop = asyncio.get_running_loop()
    pending: collections.deque[tuple[list[Record], asyncio.Future[list[Holds]]]] = collections.deque()

    def verify(records: list[Record]) -> list[asyncio.Future[Holds]]:
        """Start checking the signatures of `records` now, in the pool."""
        if projection.verifier is None:
            done: asyncio.Future[Holds] = loop.create_future()
            done.set_result([None] * len(records))
            return [done]
        pool = verification_pool()
        return [loop.run_in_executor(pool, signatures_hold, part) for part in chunks(records)]

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="nexus-replay") as applier:

        async def apply_oldest() -> None:
            records, checked = pending.popleft()
            holds = [h for part in await checked for h in part]
            await loop.run_in_executor(applier, functools.partial(projection.apply_batch, records, holds=holds))
            if progress is not None:
                progress(projection.applied_seq)

        if until_seq > projection.applied_seq:
            gathered: list[Record] = []
            checks: list[asyncio.Future[Holds]] = []
            async for records in bus.read_records(start_seq=projection.applied_seq + 1, until_seq=until_seq):
                if until_ts is not None:
                    kept = [r for r in records if r.stream_ts <= until_ts]
                    stop = len(kept) < len(records)
                    records = kept
                else:
                    stop = False
                gathered.extend(records)
                checks.extend(verify(records))  # checked as they come, folded when their batch's turn comes
                if len(gathered) >= batch or (stop and gathered):
                    pending.append((gathered, asyncio.gather(*checks)))
                    gathered, checks = [], []
                while len(pending) > 1:
                    await apply_oldest()
                if stop:
                    break
            if gathered:
                pending.append((gathered, asyncio.gather(*checks)))
        while pending:
            await apply_oldest()
    return projection.applied_seq
