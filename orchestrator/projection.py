"""Projection: folds batches of log records into memory and the DuckDB store.

Shared by the orchestrator (live) and `nexus replay` (rebuild into a new file).
Only non-terminal jobs stay in memory; a record about an older job loads its
view from the store first, so the fold is the same as one over the whole log.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import msgspec

from bus.identity import Identity, Verifier, signatures_hold
from orchestrator.core import audit, reducer
from orchestrator.core.active_jobs import ActiveJobs
from orchestrator.core.pipeline_views import PIPELINE_TERMINAL, PipelineView
from orchestrator.core.views import TERMINAL, JobView, NodeView
from orchestrator.secrets import redact_record
from orchestrator.store import DuckDBStore
from orchestrator.vetting import vet
from schemas import subjects
from schemas.limits import MAX_REASON_CHARS
from schemas.records import Record
from schemas.secrets import Redaction
from schemas.trust import MAX_UNVERIFIED


class Link(NamedTuple):
    """A record's digest and chain value, and the chain value before it (core.audit), computed
    ahead (orchestrator.lookahead): taken only when that chain value is the projection's own."""

    digest: str
    prev: str
    chain: str


class Projection:
    def __init__(
        self,
        store: DuckDBStore,
        on_ignored: Callable[[Record, str], None] | None = None,
        redaction: Redaction | None = None,
        verifier: Verifier | None = None,
        identity: Identity | None = None,
    ) -> None:
        self.store = store
        # Who made each record (signatures, announcements): None on a bus without credentials.
        self.verifier = verifier
        # Who writes this file: signs each row whose payload is a copy, not the log's bytes (core.audit).
        self.identity = identity
        if identity is not None:
            store.add_copy_signer(identity.key, identity.jwt)
            store.head_signer = (identity.key, identity.sign_copy)
        # Secret env values that came in clear are masked before anything is folded or stored.
        self.redaction = redaction or Redaction()
        self.on_ignored = on_ignored
        self.applied_seq = store.checkpoint()
        if verifier is not None:  # what it learnt before a restart: the identities announced so far
            for rec in store.announcements(self.applied_seq):
                verifier.learn(rec)
        self.jobs = ActiveJobs(store.active_jobs(TERMINAL))
        self.nodes: dict[str, NodeView] = store.all_nodes()
        self.pipelines: dict[str, PipelineView] = store.load_pipelines(running_only=True)
        self.changed_pipelines: dict[str, PipelineView] = {}
        self.quarantined: list[Record] = []
        # The log's hash chain after the last applied record (None: a file from before the chain;
        # the orchestrator then recomputes it from the log), and digests of the bytes as published.
        self.chain: str | None = store.chain_at(self.applied_seq)
        self._digests: dict[int, str] = {}
        self._links: dict[int, Link] = {}
        self._masked: set[int] = set()  # seqs whose secrets came in clear, masked before folding
        # The signature verdicts of the records folded since the last signed checkpoint (from the
        # first record this projection checked): what the next checkpoint tells a replay.
        self._verdicts_from = self.applied_seq + 1
        self._unverified: list[int] = []
        # Where the time goes, stage by stage (bench/replay.py turns it on); off, it costs nothing.
        self.clock: Clock = Clock(enabled=False)

    def apply_batch(
        self,
        batch: list[Record],
        *,
        vetted: bool = False,
        holds: Sequence[bool | None] | None = None,
        links: Sequence[Link | None] = (),
    ) -> dict[str, JobView]:
        """Fold a batch and store it with the checkpoint in one transaction; returns changed
        jobs (changed pipelines are left in `changed_pipelines`).

        `holds`: for each record of `batch`, whether its signature verifies
        (`bus.identity.signatures_hold`), when the caller checked ahead (a replay does,
        in threads, while the previous batch folds); otherwise checked here, in threads
        for a large batch (`signatures`). `links`: for each record, its Link when the
        caller computed it ahead (a replay does), else none.

        Never stops on a record: when a batch cannot be folded or stored, its records
        are applied one by one, and a record that still fails is quarantined (kept in
        `events` with the reason, no effect on any view; listed in `quarantined`)."""
        self.changed_pipelines = {}
        self.quarantined = []
        clock = self.clock
        clock.start()
        if not vetted:  # (records retried one by one below were vetted and masked already)
            if holds is not None and len(holds) == len(batch):
                fresh = [(r, h) for r, h in zip(batch, holds, strict=True) if r.seq > self.applied_seq]
            else:  # (a record applied already, delivered again, is not checked again)
                new = [r for r in batch if r.seq > self.applied_seq]
                fresh = list(zip(new, signatures(new, self.identity) if self.verifier is not None else [None] * len(new), strict=True))
                clock.lap("verify")
            self._unverified.extend(r.seq for r, h in fresh if h is False)
            for r, linked in zip(batch, links, strict=False):
                if linked is not None and r.seq > self.applied_seq:
                    self._links[r.seq] = linked
            for r, _ in fresh:  # of the bytes as the log holds them, before anything is masked
                if r.seq not in self._digests:
                    linked = self._links.get(r.seq)
                    self._digests[r.seq] = linked.digest if linked is not None else audit.digest(r.raw)
            clock.lap("chain")
            # Vetted before masking: the signature is over the bytes as published.
            vetted_records = [self._vet(r, h) for r, h in fresh]
            batch = [redact_record(r, self.redaction) for r in vetted_records]
            self._masked.update(m.seq for m, r in zip(batch, vetted_records, strict=True) if m is not r)
            clock.lap("authorship")
        batch = [r for r in batch if r.seq > self.applied_seq]
        if not batch:
            return {}
        self._load_missing(batch)
        clock.lap("load")
        saved = (self.jobs.snapshot(), dict(self.nodes), dict(self.pipelines))
        try:
            return self._apply(batch)
        except Exception as exc:  # a poison record: isolate it, never stop the fold
            self.jobs, self.nodes, self.pipelines = ActiveJobs(saved[0]), saved[1], saved[2]
            if len(batch) > 1:
                changed: dict[str, JobView] = {}
                pipes: dict[str, PipelineView] = {}
                quarantined: list[Record] = []
                for rec in batch:
                    changed.update(self.apply_batch([rec], vetted=True))
                    pipes.update(self.changed_pipelines)
                    quarantined.extend(self.quarantined)
                self.changed_pipelines, self.quarantined = pipes, quarantined
                return changed
            self._quarantine(batch[0], f"cannot be projected: {type(exc).__name__}: {exc}"[:MAX_REASON_CHARS])
            return {}

    @property
    def enforcing(self) -> bool:
        """Whether the log's identities are enforced (core.authorship): the log holds a
        trusted identity's announcement. False on a bus without credentials."""
        return self.verifier is not None and bool(self.verifier.known)

    def verdicts(self) -> tuple[int | None, tuple[int, ...]]:
        """What a checkpoint of `applied_seq` may say of the signatures (schemas.trust.TrustCheckpoint):
        the first seq checked since the last `attested`, and those of them whose signature did
        not hold. (None, ()) when there is nothing to say: no signatures checked (no verifier),
        no record since, or more failures than a checkpoint may name."""
        if self.verifier is None or self._verdicts_from > self.applied_seq or len(self._unverified) > MAX_UNVERIFIED:
            return None, ()
        return self._verdicts_from, tuple(self._unverified)

    def attested(self, upto_seq: int) -> None:
        """A signed checkpoint up to `upto_seq` is in the log: the next one's verdicts start after it."""
        self._verdicts_from = max(self._verdicts_from, upto_seq + 1)
        self._unverified = [s for s in self._unverified if s > upto_seq]

    def _vet(self, rec: Record, holds: bool | None = None) -> Record:
        """The record with its verified author, or refused (orchestrator.vetting)."""
        return rec if self.verifier is None else vet(self.verifier, rec, holds)

    def _load_missing(self, batch: list[Record]) -> None:
        """Bring the views of older jobs and pipelines the batch names into memory."""
        missing = {j for r in batch if (j := job_id_of(r.subject)) and j not in self.jobs}  # what the batch names, not all active
        for job in self.store.load_jobs(missing).values():
            self.jobs.put(job)
        missing_pipes = {p for r in batch if (p := pipeline_id_of(r.subject)) and p not in self.pipelines}
        self.pipelines.update(self.store.load_pipelines(missing_pipes))

    def _apply(self, batch: list[Record]) -> dict[str, JobView]:
        folded = []
        dirty_jobs: dict[str, JobView] = {}
        dirty_nodes: dict[str, NodeView] = {}
        dirty_pipes: dict[str, PipelineView] = {}
        for rec in batch:
            applied = reducer.apply(self.jobs, self.nodes, rec, self.pipelines)
            folded.append(applied.row)
            if applied.row.error and self.on_ignored:
                self.on_ignored(rec, applied.row.error)
            if applied.job is not None:
                self.jobs.put(applied.job)
                dirty_jobs[applied.job.job_id] = applied.job
            if applied.node is not None:
                self.nodes[applied.node.node_id] = dirty_nodes[applied.node.node_id] = applied.node
            if applied.pipeline is not None:
                self.pipelines[applied.pipeline.pipeline_id] = dirty_pipes[applied.pipeline.pipeline_id] = applied.pipeline
        self.clock.lap("fold")
        rows = []
        chain = self.chain
        for rec, folded_row in zip(batch, folded, strict=True):
            row, chain = self._linked(folded_row, rec, chain)
            rows.append(row)
        self.clock.lap("chain")
        self.store.write_batch(rows, dirty_jobs.values(), dirty_nodes.values(), batch[-1].seq, dirty_pipes.values())
        self.clock.lap("write")
        self.applied_seq, self.chain = batch[-1].seq, chain
        for rec in batch:
            self._digests.pop(rec.seq, None)
            self._links.pop(rec.seq, None)
            self._masked.discard(rec.seq)
        for job_id in list(self.jobs.settled):
            self.jobs.drop(job_id)
        for pipeline_id in [p for p, v in self.pipelines.items() if v.status in PIPELINE_TERMINAL]:
            del self.pipelines[pipeline_id]
        self.changed_pipelines = dirty_pipes
        return dirty_jobs

    def _linked(self, row: reducer.EventRow, rec: Record, prev: str | None) -> tuple[reducer.EventRow, str | None]:
        """The row with its digest and chain value, the chain going on from `prev` (core.audit)."""
        digest = self._digests.get(rec.seq) or audit.digest(rec.raw)
        ahead = self._links.get(rec.seq)
        if prev is None:
            chain = None
        elif ahead is not None and ahead.prev == prev and ahead.digest == digest:  # the same link, computed ahead
            chain = ahead.chain
        else:
            chain = audit.link(prev, row.seq, row.subject, row.ts, digest, row.signer, row.signature)
        if rec.event is None or rec.seq in self._masked:  # (anything that decoded was UTF-8)
            return msgspec.structs.replace(row, digest=digest, chain=chain, **self._copy(row, rec, digest)), chain
        return msgspec.structs.replace(row, digest=digest, chain=chain), chain

    def _copy(self, row: reducer.EventRow, rec: Record, digest: str) -> dict[str, str]:
        """For a row whose payload is not the log's bytes: which copy it is, signed by our
        identity (core.audit.copy_statement), so the file alone proves it."""
        kind: audit.CopyKind
        if rec.seq in self._masked:
            kind = "masked" if rec.event is not None else "masked-invalid"
        elif not _utf8(rec.raw):
            kind = "lossy"
        else:
            return {}
        if self.identity is None:
            return {"copy_kind": kind}
        statement = audit.copy_statement(kind, row.seq, row.subject, digest, row.payload)
        return {"copy_kind": kind, "copy_signer": self.identity.key, "copy_signature": self.identity.sign_copy(statement)}

    def _quarantine(self, rec: Record, reason: str) -> None:
        """Store the record as an `events` row with the reason and move the checkpoint past it.
        If even that fails, the store itself is broken: that error is raised."""
        row, chain = self._linked(reducer.quarantine_row(rec, reason), rec, self.chain)
        if self.on_ignored:
            self.on_ignored(rec, reason)
        job, node, pipeline = reducer.touch_entities(rec, self.jobs, self.nodes, self.pipelines)
        jobs, nodes, pipes = [job] if job else [], [node] if node else [], [pipeline] if pipeline else []
        self.store.write_batch([row], jobs, nodes, rec.seq, pipes)
        self.chain = chain
        self._digests.pop(rec.seq, None)
        self._links.pop(rec.seq, None)
        self._masked.discard(rec.seq)
        for j in jobs:
            self.jobs.put(j)
        for n in nodes:
            self.nodes[n.node_id] = n
        for p in pipes:
            self.pipelines[p.pipeline_id] = p
        self.applied_seq = rec.seq
        self.quarantined = [msgspec.structs.replace(rec, error=reason)]


class Clock:
    """Seconds spent per stage, summed: `lap(stage)` charges the time since the last lap to
    `stage`. Disabled, it does nothing (one attribute test)."""

    def __init__(self, *, enabled: bool = True, timer: Callable[[], float] = time.perf_counter) -> None:
        self.enabled = enabled
        self.timer = timer
        self.spent: dict[str, float] = {}
        self._last = timer()

    def start(self) -> None:
        if self.enabled:
            self._last = self.timer()

    def lap(self, stage: str) -> None:
        if self.enabled:
            now = self.timer()
            self.spent[stage] = self.spent.get(stage, 0.0) + now - self._last
            self._last = now


# ---------------------------------------------------------------- signatures, on every core

PARALLEL_FROM = 256
"""Records in a batch from which its signatures are checked in threads: below, the hand-offs
cost more than they save (a live batch is a few records; a replay or a catch-up, thousands)."""
CHUNK = 250
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def verification_pool() -> ThreadPoolExecutor:
    """Threads that check signatures (one per core), made on first use, shared by the process."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="nexus-verify")
        return _pool


def chunks(batch: Sequence[Record]) -> list[Sequence[Record]]:
    return [batch[i : i + CHUNK] for i in range(0, len(batch), CHUNK)]


def signatures(batch: Sequence[Record], own: Identity | None = None) -> list[bool | None]:
    """`signatures_hold` over a batch: in this thread for a small one, on every core for a large one.
    `own`: this process's identity (its own recent publishes need no verification)."""
    if len(batch) < PARALLEL_FROM:
        return signatures_hold(batch, own)
    return [h for part in verification_pool().map(functools.partial(signatures_hold, own=own), chunks(batch)) for h in part]


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def job_id_of(subject: str) -> str | None:
    ent = subjects.entity_of(subject)
    return ent.id if ent is not None and ent.family == "job" else None


def pipeline_id_of(subject: str) -> str | None:
    ent = subjects.entity_of(subject)
    return ent.id if ent is not None and ent.family == "pipeline" else None
