"""Write-behind for the orchestrator's DuckDB store: decide first, store right after.

The projection folds a batch into memory and hands its rows to `write_batch`; here
that only queues them, so the orchestrator decides and publishes from memory at
once, and `flush()` stores everything queued in ONE transaction (rows, views and the
checkpoint together, as before), in a thread, while the event loop goes on.

Why this is safe (DESIGN §8): the log is the truth and every decision is re-derived
from state. A crash after a decision was published but before its batch was stored
restarts the projection at the older checkpoint; the fold reads the decision back
from the log before the orchestrator decides anything (it decides only once caught
up), so nothing is decided twice, and every republish would carry the same msg id.

While a batch is queued its views are newer than the file's: `load_jobs` and
`load_pipelines` (a record about a job the projection dropped from memory) read
through the queue first. Queries see the file, so they lag by at most one flush;
`stored_seq` is the checkpoint they see.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import msgspec
import structlog

from orchestrator.core.pipeline_views import PipelineView
from orchestrator.core.reducer import EventRow
from orchestrator.core.views import JobView, NodeView
from orchestrator.store import DuckDBStore
from schemas.limits import MAX_REASON_CHARS

log = structlog.get_logger("nexus.orchestrator")


@dataclass
class _Queued:
    rows: list[EventRow] = field(default_factory=list)
    jobs: dict[str, JobView] = field(default_factory=dict)
    nodes: dict[str, NodeView] = field(default_factory=dict)
    pipelines: dict[str, PipelineView] = field(default_factory=dict)
    last_seq: int = 0

    def add(self, rows: Sequence[EventRow], jobs: Iterable[JobView], nodes: Iterable[NodeView],
            last_seq: int, pipelines: Iterable[PipelineView]) -> None:  # fmt: skip
        self.rows.extend(rows)
        self.jobs.update((j.job_id, j) for j in jobs)
        self.nodes.update((n.node_id, n) for n in nodes)
        self.pipelines.update((p.pipeline_id, p) for p in pipelines)
        self.last_seq = max(self.last_seq, last_seq)


class _Connection(DuckDBStore):
    """The store's writes on another connection to the same database (a cursor), for the writer thread."""

    def __init__(self, con: object, path: str) -> None:  # no super().__init__: the file is open already
        self.con = con  # type: ignore[assignment]
        self.path = path
        self.head_signer = None


class WriteBehind(DuckDBStore):
    """The orchestrator's store: reads as DuckDBStore (same connection), writes queued until `flush`."""

    def __init__(self, store: DuckDBStore) -> None:  # no super().__init__: wraps an open store
        self.path = store.path
        self.con = store.con
        self.stored_seq = store.checkpoint()
        self._writer = _Connection(store.con.cursor(), store.path)
        self._lock = threading.Lock()  # one writer at a time: the flushing thread, or the last flush at stop
        self._queued = _Queued()
        self._flushing = _Queued()  # taken by the flush in progress, until it is stored
        self.queued = asyncio.Event()

    @property  # type: ignore[override]
    def head_signer(self) -> tuple[str, Callable[[bytes], str]] | None:
        """The writer thread's connection signs the file's end as it stores (DuckDBStore.head_signer)."""
        return self._writer.head_signer

    @head_signer.setter
    def head_signer(self, signer: tuple[str, Callable[[bytes], str]] | None) -> None:
        self._writer.head_signer = signer

    @property
    def pending(self) -> bool:
        return bool(self._queued.rows or self._queued.jobs or self._queued.nodes or self._queued.pipelines)

    def write_batch(
        self,
        rows: Sequence[EventRow],
        jobs: Iterable[JobView],
        nodes: Iterable[NodeView],
        last_seq: int,
        pipelines: Iterable[PipelineView] = (),
    ) -> None:
        self._queued.add(rows, jobs, nodes, last_seq, pipelines)
        self.queued.set()

    def load_jobs(self, job_ids: Iterable[str]) -> dict[str, JobView]:
        ids = list(job_ids)
        newer = {**self._flushing.jobs, **self._queued.jobs}
        queued = {j: newer[j] for j in ids if j in newer}
        # Most ids asked for on the hot path are new jobs: ask whether they exist (the key
        # alone: a fraction of a full row's cost), and load full rows only for those that do.
        rest = self._existing("jobs", "job_id", [j for j in ids if j not in queued])
        return {**super().load_jobs(rest), **queued} if rest else queued

    def load_pipelines(self, ids: Iterable[str] | None = None, *, running_only: bool = False) -> dict[str, PipelineView]:
        if ids is None:
            return super().load_pipelines(running_only=running_only)
        wanted = list(ids)
        newer = {**self._flushing.pipelines, **self._queued.pipelines}
        queued = {p: newer[p] for p in wanted if p in newer}
        rest = self._existing("pipelines", "pipeline_id", [p for p in wanted if p not in queued])
        return {**super().load_pipelines(rest), **queued} if rest else queued

    def _existing(self, table: str, key: str, ids: list[str]) -> list[str]:
        if not ids:
            return []
        if len(ids) == 1:
            rows = self.con.execute(f"SELECT {key} FROM {table} WHERE {key} = ?", ids).fetchall()
        else:
            rows = self.con.execute(f"SELECT {key} FROM {table} WHERE {key} IN (SELECT unnest(?::VARCHAR[]))", [ids]).fetchall()
        return [r[0] for r in rows]

    async def flush(self) -> None:
        """Store what is queued now, in a thread; what is queued meanwhile waits for the next flush."""
        self.queued.clear()
        if not self.pending:
            return
        taken = self._flushing = self._queued
        self._queued = _Queued()
        try:
            await asyncio.to_thread(self._store, taken)
            self._flushing = _Queued()
        except asyncio.CancelledError:
            # Stored or not (the thread may finish): kept, so the flush at stop sees to it; rows
            # already stored are skipped by their sequence, views are written again (idempotent).
            self._queued = _merged(taken, self._queued)
            raise

    def flush_now(self) -> None:
        """Store what is queued, here and now (at stop; waits for a flush in progress)."""
        taken, self._queued = self._queued, _Queued()
        self._store(taken)

    def _store(self, q: _Queued) -> None:
        with self._lock:
            rows = [r for r in q.rows if r.seq > self.stored_seq]
            if not (rows or q.jobs or q.nodes or q.pipelines):
                return
            last = max(q.last_seq, self.stored_seq)
            began, cpu = time.perf_counter(), time.thread_time()
            try:
                self._writer.write_batch(rows, q.jobs.values(), q.nodes.values(), last, q.pipelines.values())
            except Exception:
                log.exception("store.write_failed", rows=len(rows), last_seq=last, hint="storing the batch piece by piece")
                self._store_piecewise(rows, q, last)
            self.stored_seq = last
            # For bench/trace.py (debug level only): what one transaction costs.
            log.debug("store.flushed", rows=len(rows), jobs=len(q.jobs), last_seq=last,
                      ms=round((time.perf_counter() - began) * 1000, 3), cpu_ms=round((time.thread_time() - cpu) * 1000, 3))  # fmt: skip

    def _store_piecewise(self, rows: list[EventRow], q: _Queued, last: int) -> None:
        """A batch DuckDB refused as a whole (a value it cannot hold: decoding checks the
        limits, so only a schema slip gets here). Each row and view alone; a row that still
        fails is kept as a quarantined row with the reason, a view that fails is left out
        (logged); the checkpoint moves on, as the projection's own quarantine does."""
        w = self._writer
        for row in rows:
            try:
                w.write_batch([row], (), (), row.seq)
            except Exception as exc:
                reason = f"cannot be stored: {type(exc).__name__}: {exc}"[:MAX_REASON_CHARS]
                w.write_batch([msgspec.structs.replace(row, payload="{}", error=reason)], (), (), row.seq)
        views: list[tuple[str, Callable[[], None]]] = [
            *((j.job_id, lambda j=j: w.write_batch((), [j], (), last)) for j in q.jobs.values()),
            *((n.node_id, lambda n=n: w.write_batch((), (), [n], last)) for n in q.nodes.values()),
            *((p.pipeline_id, lambda p=p: w.write_batch((), (), (), last, [p])) for p in q.pipelines.values()),
        ]
        for entity, write in views:
            try:
                write()
            except Exception:
                log.exception("store.view_not_stored", entity=entity)
        w.write_batch((), (), (), last)

    def close_writer(self) -> None:
        with self._lock:
            self._writer.con.close()


def _merged(first: _Queued, then: _Queued) -> _Queued:
    out = _Queued()
    for q in (first, then):
        out.add(q.rows, q.jobs.values(), q.nodes.values(), q.last_seq, q.pipelines.values())
    return out
