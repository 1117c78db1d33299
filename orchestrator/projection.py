"""Projection: folds batches of log records into memory and the DuckDB store.

Shared by the orchestrator (live) and `nexus replay` (rebuild into a new file).
Only non-terminal jobs stay in memory; a record about an older job loads its
view from the store first, so the fold is the same as one over the whole log.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from bus.identity import Checked, Verifier
from orchestrator.core import audit, authorship, reducer
from orchestrator.core.pipeline_views import PIPELINE_TERMINAL, PipelineView
from orchestrator.core.views import TERMINAL, JobView, NodeView
from orchestrator.secrets import redact_record
from orchestrator.store import DuckDBStore
from schemas import subjects
from schemas.limits import MAX_REASON_CHARS
from schemas.records import Record
from schemas.secrets import Redaction


class Projection:
    def __init__(
        self,
        store: DuckDBStore,
        on_ignored: Callable[[Record, str], None] | None = None,
        redaction: Redaction | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self.store = store
        # Who made each record (signatures, announcements): None on a bus without credentials.
        self.verifier = verifier
        # Secret env values that came in clear are masked before anything is folded or stored.
        self.redaction = redaction or Redaction()
        self.on_ignored = on_ignored
        self.applied_seq = store.checkpoint()
        if verifier is not None:  # what it learnt before a restart: the identities announced so far
            for rec in store.announcements(self.applied_seq):
                verifier.learn(rec)
        self.jobs: dict[str, JobView] = store.active_jobs(TERMINAL)
        self.nodes: dict[str, NodeView] = store.all_nodes()
        self.pipelines: dict[str, PipelineView] = store.load_pipelines(running_only=True)
        self.changed_pipelines: dict[str, PipelineView] = {}
        self.quarantined: list[Record] = []
        # The log's hash chain after the last applied record (None: a file from before the chain;
        # the orchestrator then recomputes it from the log), and digests of the bytes as published.
        self.chain: str | None = store.chain_at(self.applied_seq)
        self._digests: dict[int, str] = {}

    def apply_batch(self, batch: list[Record], *, vetted: bool = False) -> dict[str, JobView]:
        """Fold a batch and store it with the checkpoint in one transaction; returns changed
        jobs (changed pipelines are left in `changed_pipelines`).

        Never stops on a record: when a batch cannot be folded or stored, its records
        are applied one by one, and a record that still fails is quarantined (kept in
        `events` with the reason, no effect on any view; listed in `quarantined`)."""
        self.changed_pipelines = {}
        self.quarantined = []
        if not vetted:  # (records retried one by one below were vetted and masked already)
            for r in batch:  # of the bytes as the log holds them, before anything is masked
                if r.seq > self.applied_seq:
                    self._digests.setdefault(r.seq, audit.digest(r.raw))
            # Vetted before masking: the signature is over the bytes as published.
            batch = [redact_record(self._vet(r), self.redaction) for r in batch if r.seq > self.applied_seq]
        batch = [r for r in batch if r.seq > self.applied_seq]
        if not batch:
            return {}
        self._load_missing(batch)
        saved = (dict(self.jobs), dict(self.nodes), dict(self.pipelines))
        try:
            return self._apply(batch)
        except Exception as exc:  # a poison record: isolate it, never stop the fold
            self.jobs, self.nodes, self.pipelines = saved
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

    def _vet(self, rec: Record) -> Record:
        """The record with its verified author; refused (no event, the reason as its error)
        when its signature fails or its author may not make it (core.authorship)."""
        if self.verifier is None:
            return rec
        problem = self.verifier.learn(rec)
        checked = self.verifier.check(rec) if problem is None else Checked(None, problem)
        rec = msgspec.structs.replace(rec, author=checked.author)
        enforcing = bool(self.verifier.known)
        why = authorship.refusal(rec, problem=checked.problem, enforcing=enforcing)
        if why is not None:
            return msgspec.structs.replace(rec, event=None, error=why[:MAX_REASON_CHARS])
        return authorship.named(rec, enforcing=enforcing)

    def _load_missing(self, batch: list[Record]) -> None:
        """Bring the views of older jobs and pipelines the batch names into memory."""
        missing = {job_id_of(r.subject) for r in batch} - set(self.jobs) - {None}
        self.jobs.update(self.store.load_jobs(j for j in missing if j))
        missing_pipes = {pipeline_id_of(r.subject) for r in batch} - set(self.pipelines) - {None}
        self.pipelines.update(self.store.load_pipelines(p for p in missing_pipes if p))

    def _apply(self, batch: list[Record]) -> dict[str, JobView]:
        rows = []
        dirty_jobs: dict[str, JobView] = {}
        dirty_nodes: dict[str, NodeView] = {}
        dirty_pipes: dict[str, PipelineView] = {}
        chain = self.chain
        for rec in batch:
            applied = reducer.apply(self.jobs, self.nodes, rec, self.pipelines)
            row, chain = self._linked(applied.row, rec, chain)
            rows.append(row)
            if applied.row.error and self.on_ignored:
                self.on_ignored(rec, applied.row.error)
            if applied.job is not None:
                self.jobs[applied.job.job_id] = dirty_jobs[applied.job.job_id] = applied.job
            if applied.node is not None:
                self.nodes[applied.node.node_id] = dirty_nodes[applied.node.node_id] = applied.node
            if applied.pipeline is not None:
                self.pipelines[applied.pipeline.pipeline_id] = dirty_pipes[applied.pipeline.pipeline_id] = applied.pipeline
        self.store.write_batch(rows, dirty_jobs.values(), dirty_nodes.values(), batch[-1].seq, dirty_pipes.values())
        self.applied_seq, self.chain = batch[-1].seq, chain
        for rec in batch:
            self._digests.pop(rec.seq, None)
        for job_id in [j for j, v in self.jobs.items() if v.settled]:
            del self.jobs[job_id]
        for pipeline_id in [p for p, v in self.pipelines.items() if v.status in PIPELINE_TERMINAL]:
            del self.pipelines[pipeline_id]
        self.changed_pipelines = dirty_pipes
        return dirty_jobs

    def _linked(self, row: reducer.EventRow, rec: Record, prev: str | None) -> tuple[reducer.EventRow, str | None]:
        """The row with its digest and chain value, the chain going on from `prev` (core.audit)."""
        digest = self._digests.get(rec.seq) or audit.digest(rec.raw)
        chain = None if prev is None else audit.link(prev, row.seq, row.subject, row.ts, digest, row.signer, row.signature)
        return msgspec.structs.replace(row, digest=digest, chain=chain), chain

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
        for j in jobs:
            self.jobs[j.job_id] = j
        for n in nodes:
            self.nodes[n.node_id] = n
        for p in pipes:
            self.pipelines[p.pipeline_id] = p
        self.applied_seq = rec.seq
        self.quarantined = [msgspec.structs.replace(rec, error=reason)]


def job_id_of(subject: str) -> str | None:
    ent = subjects.entity_of(subject)
    return ent.id if ent is not None and ent.family == "job" else None


def pipeline_id_of(subject: str) -> str | None:
    ent = subjects.entity_of(subject)
    return ent.id if ent is not None and ent.family == "pipeline" else None
