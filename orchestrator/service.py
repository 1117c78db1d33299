"""The orchestrator process: projection, decisions and the query responder.

    log (NEXUS_EVENTS) --ordered consumer--> reducer (memory) --> WriteBehind --thread--> DuckDB (rows + checkpoint)
                                               |
                                  decisions (pure) --> Runner.publish (optimistic concurrency)

Decisions are taken from the in-memory views as soon as a batch is folded; the
batch is stored right after, in one transaction with its checkpoint, off the
event loop (orchestrator.write_behind, which says why a crash in between is safe).

Decisions are re-derived from state, never remembered: after a restart the
projection resumes at its checkpoint and every pending job is decided again;
the server refuses a decision whose job has moved on (StaleDecision).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import msgspec
import structlog

from bus.errors import BusError
from bus.identity import Verifier
from bus.port import EventBus, Request, StreamLimits, raise_if_cancelling
from bus.sealing import SealingKey
from orchestrator.audit import chain_upto
from orchestrator.core import assertions, decide, planner
from orchestrator.core.active_jobs import ActiveJobs
from orchestrator.core.admission import Candidate
from orchestrator.core.judge import judge, submission_of
from orchestrator.core.outgoing import reject
from orchestrator.core.pipeline import approved_with, step_companions
from orchestrator.core.pipeline_views import pipeline_jobs
from orchestrator.core.policy import Policy
from orchestrator.core.views import JobView, NodeView
from orchestrator.errors import QueryError, StateAheadOfLog
from orchestrator.output_gate import OutputGate
from orchestrator.projection import Projection, job_id_of, pipeline_id_of
from orchestrator.runner import Outcome, Runner
from orchestrator.secrets import RequestSecrets, key_beside, publish_key, secrets_for
from orchestrator.store import DuckDBStore, run_query
from orchestrator.write_behind import WriteBehind
from schemas import codec, msgids, subjects
from schemas.envelope import Outgoing
from schemas.errors import DecodeError
from schemas.events import JobAssigned, JobRolledBack, NodeHeartbeat
from schemas.records import Record
from schemas.rpc import QueryResult
from schemas.secrets import Redaction
from schemas.trust import TrustCheckpoint
from schemas.values import Finding, JobTest

log = structlog.get_logger("nexus.orchestrator")

TICK_S = 1.0
LOG_IDLE_S = 2.0  # see _project
QUERY_THREADS = 4  # queries run at once, each in a thread with its own DuckDB cursor
MAX_PENDING_QUERIES = 64  # beyond this many waiting, a query is answered "busy" at once
CHECKPOINT_EVERY = 1000  # a signed checkpoint after this many new events...
CHECKPOINT_S = 5.0  # ...or this long after the first one not covered yet
CHECKPOINT_ID = "orchestrator"  # nexus.evt.trust.<id>.checkpoint
STORE_EVERY_S = 0.1  # folded batches wait at most this long (plus one store) to be in DuckDB (see _store_folded)
FORMING_S = 60.0  # how long start-up publishes wait for a forming cluster's stream leaders
FORMING_PAUSE_S = 0.5
IDLE_CONSUMERS_EVERY_S = 60.0  # how often unused consumers are looked for (at most)
ENCODE_INLINE_ROWS = 1_000  # a query's answer with more rows is encoded in a thread
QUERY_SETTLE_S = 2.0  # a query waits at most this long for what the log held when it was asked
PROVISION_AT_ONCE = 16  # new nodes' dispatch consumers made at once
MOVE_OVERLAP = timedelta(minutes=1)  # a node's consumer made anew (see _on_beat) starts this long before the beat
NODE_DECISIONS_AT_ONCE = 64  # nodes' `registered` / `lost` in flight at once
PUBLISH_AT_ONCE = 64  # jobs of one decision round whose events are in flight at once
PROBE_S = 0.5  # how often we check that heartbeats can be stored (see _watch_heartbeat_store)


class Orchestrator:
    def __init__(
        self,
        bus: EventBus,
        store: DuckDBStore,
        *,
        node_ttl_s: float = 10.0,
        offline_grace_s: float = decide.Fleet.offline_grace_s,
        policy: Policy | None = None,
        limits: StreamLimits | None = None,
        sealing_key: SealingKey | None = None,
        redaction: Redaction | None = None,
    ) -> None:
        self.limits = msgspec.structs.replace(limits or StreamLimits(), node_ttl_s=node_ttl_s)
        self.bus = bus
        # Rows are queued and stored in a thread right after the decisions they lead to.
        self.store = store if isinstance(store, WriteBehind) else WriteBehind(store)
        self.policy = policy or Policy()
        self.node_ttl_s = node_ttl_s
        self.offline_grace_s = offline_grace_s  # how long jobs wait for a node not heard from (core.decide.Fleet)
        # Secrets: our key (default: sealing.key beside the DuckDB file) and which env names are secret.
        self.sealing_key = sealing_key or key_beside(store.path)
        self.redaction = redaction or Redaction()
        self._secrets: dict[str, RequestSecrets] = {}  # of jobs about to be placed; memory only
        verifier = Verifier.trusting_issuer_of(bus.identity)
        self.projection = Projection(
            self.store, on_ignored=_log_ignored, redaction=self.redaction, verifier=verifier, identity=bus.identity
        )
        self.beats: dict[str, NodeHeartbeat] = {}
        # The one publish path; it remembers our publishes the projection has not seen yet.
        self.runner = Runner(bus)
        self.started_at = datetime.now(UTC)
        self.stalled_at: datetime | None = None  # last time heartbeats could not be stored
        self.writable_at: datetime | None = None  # when the last probe that found them storable was sent
        self.caught_up = asyncio.Event()
        # Set once the stored heartbeats are known: before that, "no node has the
        # tool" would only mean "not heard from yet".
        self.fleet_known = asyncio.Event()
        # Nodes heard from whose dispatch consumer is being made (their latest heartbeat).
        self._new_beats: dict[str, NodeHeartbeat] = {}
        self._provisioning: set[asyncio.Task[None]] = set()
        self._provision_slots = asyncio.Semaphore(PROVISION_AT_ONCE)
        # Nodes to decide again (a heartbeat changed something, or the tick), by _decide_nodes_due.
        self._nodes_due: set[str] = set()
        self._nodes_joined = False  # a node was provisioned since the last round: jobs may place on it
        self._nodes_wake = asyncio.Event()
        self._candidates: tuple[decide.Fleet | None, datetime | None, Mapping[str, Candidate]] = (None, None, {})
        self._decide_lock = asyncio.Lock()
        # Rejections of undecodable requests and events about other jobs: kept until stored.
        self._queued: list[planner.Plan] = []
        self._touched_pipelines: set[str] = set()
        self._query_slots = asyncio.Semaphore(QUERY_THREADS)
        self._query_tasks: set[asyncio.Task[None]] = set()
        # Signed checkpoints over the log's hash chain (docs/security.md, "What `nexus audit verify` proves").
        self.checkpoint_every, self.checkpoint_s = CHECKPOINT_EVERY, CHECKPOINT_S
        self._unattested = 0  # events applied since the last checkpoint we published (checkpoints not counted)
        self._attest_now = asyncio.Event()

    async def run(self) -> None:
        """Run until cancelled; what is folded by then is stored before it returns."""
        try:
            await self._run()
        finally:
            self.store.flush_now()
            self.store.close_writer()

    async def _run(self) -> None:
        await self.bus.ensure_streams(self.limits)
        if self.applied_seq > (end := await self.bus.last_seq()):
            raise StateAheadOfLog(self.store.path, self.applied_seq, end)
        # Who signs its decisions and answers, on the log before it answers anyone. On a cluster
        # the streams exist before their leaders are elected: a publish then has no responder.
        await _while_forming(self.bus.announce, "announce")
        await _while_forming(lambda: publish_key(self.bus, self.sealing_key, self.redaction), "publish_key")
        if self.projection.chain is None:  # a file from before the chain: carry on from the log's
            self.projection.chain = await chain_upto(self.bus, self.applied_seq)
            log.warning(
                "audit.chain_resumed",
                seq=self.applied_seq,
                hint="rows before it carry no chain: replay the log into a new file to audit it",
            )
        log.info("orchestrator.started", checkpoint=self.applied_seq, active_jobs=len(self.jobs), db=self.store.path)
        # A cancellation that nats-py's wait_for swallowed during the setup above
        # must not be lost: the TaskGroup below would otherwise run forever.
        raise_if_cancelling()
        try:
            async with self.bus.responder(subjects.RPC_QUERY, "nexus-orchestrator") as queries, asyncio.TaskGroup() as tg:
                tg.create_task(self._project(), name="project")
                tg.create_task(self._store_folded(), name="store")
                tg.create_task(self.bus.watch_heartbeats(self._on_beat, self._on_snapshot), name="heartbeats")
                tg.create_task(self._tick(), name="tick")
                tg.create_task(self._watch_heartbeat_store(), name="heartbeat-store")
                tg.create_task(self._decide_nodes_due(), name="nodes")
                tg.create_task(self._serve_queries(queries), name="queries")
                tg.create_task(self._attest(), name="checkpoints")
                tg.create_task(self._remove_idle_consumers(), name="idle-consumers")
        finally:
            for task in list(self._provisioning):
                task.cancel()

    @property
    def jobs(self) -> ActiveJobs:
        return self.projection.jobs

    @property
    def nodes(self) -> dict[str, NodeView]:
        return self.projection.nodes

    @property
    def applied_seq(self) -> int:
        """The last sequence stored in DuckDB, what queries see: at most one flush behind
        `folded_seq`, the last one in memory, from which decisions are taken."""
        return self.store.stored_seq

    @property
    def folded_seq(self) -> int:
        return self.projection.applied_seq

    # ------------------------------------------------------------ projection

    async def _project(self) -> None:
        end = await self.bus.last_seq()
        if self.folded_seq >= end:
            self.caught_up.set()
        # A quiet log is checked every LOG_IDLE_S: on a cluster the ordered consumer dies with
        # its stream leader, and this is how the orchestrator notices and follows again.
        async for batch in self.bus.records(self.folded_seq + 1, idle_s=LOG_IDLE_S):
            t0 = time.perf_counter()
            touched = self.apply_batch(batch)
            t1 = time.perf_counter()
            if not self.caught_up.is_set() and self.folded_seq >= end:
                self.caught_up.set()
                log.info("orchestrator.caught_up", seq=self.folded_seq)
            await self.decide_jobs(touched)
            await self.decide_pipelines(self._touched_pipelines)
            await self._publish_queued()
            # For bench/trace.py (debug level only): where one batch's time went.
            log.debug("orchestrator.batch", records=len(batch), last_seq=self.folded_seq, apply_ms=_ms(t0, t1),
                      decide_ms=_ms(t1, time.perf_counter()), jobs=len(touched))  # fmt: skip

    async def _store_folded(self) -> None:
        """Store folded batches in one transaction per STORE_EVERY_S at most: one job's
        several batches (requested, accepted, started, exited...) or a burst's hundreds
        share a transaction, whose cost hardly grows with its rows (~15 ms of CPU for 5 or
        60 jobs: at 50 ms, a third of the orchestrator's CPU in a burst). Decisions never
        wait for it; a query waits for what the log held when it was asked (_settle)."""
        while True:
            await self.store.queued.wait()
            await asyncio.sleep(STORE_EVERY_S)
            await self.store.flush()

    def apply_batch(self, batch: list[Record]) -> set[str]:
        """Fold a batch (memory + DuckDB, one transaction); returns the job ids touched."""
        changed = self.projection.apply_batch(batch)
        self._unattested += sum(1 for r in batch if not isinstance(r.event, TrustCheckpoint))
        if self._unattested >= self.checkpoint_every:
            self._attest_now.set()
        self._touched_pipelines = planner.pipelines_touched(self.projection.changed_pipelines, changed.values())
        for pipeline_id, pipeline in self.projection.changed_pipelines.items():
            self.runner.folded(planner.pipeline_key(pipeline_id), pipeline.last_seq)
        for job_id, job in changed.items():
            self.runner.folded(planner.job_key(job_id), job.last_seq)
            if not job.state.before_dispatch:
                self._secrets.pop(job_id, None)
            if job.terminal:
                log.info("job.finished", job_id=job_id, status=job.status, exit_code=job.exit_code)
        now = datetime.now(UTC)
        self._queued.extend(self._rejections(batch, changed, now))
        self._queued.extend(planner.followups(changed.values(), now))
        return set(changed) | planner.parents_to_decide(changed.values())

    def _rejections(self, batch: list[Record], changed: Mapping[str, JobView], now: datetime) -> list[planner.Plan]:
        """A job's or a pipeline's `requested` payload that never decoded still needs its
        rejection published (unless that id already names a job or pipeline)."""
        quarantined = {r.seq: r for r in self.projection.quarantined}  # these carry the reason
        plans: list[planner.Plan] = []
        for rec in (quarantined.get(r.seq, r) for r in batch):
            if rec.error is None or not rec.subject.endswith(".requested"):
                continue
            job, pipeline = job_id_of(rec.subject), pipeline_id_of(rec.subject)
            fresh_job = job is not None and job not in changed and not self.store.load_jobs([job])
            known_pipeline = pipeline in self.projection.pipelines or bool(pipeline and self.store.load_pipelines([pipeline]))
            fresh_pipeline = pipeline is not None and not known_pipeline
            if fresh_job or fresh_pipeline:
                plans.extend(p for p in [planner.rejection(rec, now)] if p is not None)
        return plans

    # ------------------------------------------------------------ decisions

    @property
    def quiet_since(self) -> datetime:
        """Since when silence from a node means something: our start, our last reconnect to
        NATS (while we were cut off, every node looked silent), or the last moment heartbeats
        could not be stored (a stream leader's election silences the whole fleet)."""
        return max(t for t in (self.started_at, self.bus.reconnected_at, self.stalled_at) if t is not None)

    async def _watch_heartbeat_store(self) -> None:
        """Note when the heartbeat bucket cannot take writes, so that nodes are not declared
        lost for a silence the bus imposed on them: each gets a full TTL from its end."""
        stalled = False
        while True:
            raise_if_cancelling()
            asked = datetime.now(UTC)
            writable = await self.bus.heartbeats_writable(timeout_s=PROBE_S * 2)
            if writable:
                self.writable_at = asked
            else:
                self.stalled_at = datetime.now(UTC)
            if writable == stalled:
                stalled = not writable
                if stalled:
                    log.warning("nodes.heartbeats_stalled", reason="the heartbeat bucket takes no writes: no node declared lost meanwhile")
                else:
                    log.info("nodes.heartbeats_resumed", ttl_s=self.node_ttl_s)
            await asyncio.sleep(PROBE_S)

    @property
    def _deciding(self) -> bool:
        return self.caught_up.is_set() and self.fleet_known.is_set()

    def _fleet(self) -> decide.Fleet:
        return planner.fleet(
            self.nodes,
            self.beats,
            self.jobs,
            self.runner.pending,
            ttl_s=self.node_ttl_s,
            quiet_since=self.quiet_since,
            lag_s=self.bus.heartbeats_behind_s(),
            offline_grace_s=self.offline_grace_s,
        )

    async def decide_jobs(self, touched: Iterable[str]) -> None:
        """Decide every due job one after the other (each takes its slot in `fleet`), then
        publish the plans at once: one job's events stay a chain in order, but different
        jobs do not wait for each other's acks."""
        if not self._deciding:
            return
        async with self._decide_lock:
            await self._publish_queued()
            now = datetime.now(UTC)
            fleet = self._fleet()
            touched_ids = set(touched)
            # Counted only when a queued job could be skipped (it walks every node: 1,000 of them
            # on every batch of a fleet's fan-out, 6 % of the orchestrator's samples there).
            free = None if self.jobs.queued.keys() <= touched_ids else _free_slots(fleet, now)
            # No slot free: the queue waits, and is not even sorted (thousands deep in a burst).
            queued = () if free == 0 else self.jobs.queued
            due = planner.jobs_due(self.jobs, touched_ids, queued, self.runner.pending, self.policy.priority_of)
            plans: list[tuple[JobView, planner.Plan]] = []
            for job in due:
                if free == 0 and job.status == "queued" and job.job_id not in touched_ids:
                    # A queued job can only wait while every live node is full: deciding each again
                    # after every batch of a burst costs CPU for nothing (once the slots freed by the
                    # batch are taken, the rest of the queue is skipped). The tick decides all anyway.
                    continue
                self.runner.pending.pop(planner.job_key(job.job_id), None)
                ctx = await self._context(job, fleet, now)
                try:
                    outs = decide.decide_job(job, fleet, now, ctx)
                except Exception as exc:  # a bug met by this job's data must not stop every job
                    log.exception("decision.crashed", job_id=job.job_id)
                    outs = reject(job, now, "internal_error", f"the orchestrator could not decide: {type(exc).__name__}: {exc}")
                if outs:
                    plans.append((job, planner.plan_job(job, outs)))
                    if free and any(isinstance(o.event, JobAssigned) for o in outs):
                        free -= 1  # it took a free slot on a live node (decide._place)
            # Decided in priority order (placement counts each one), then published side by side,
            # PUBLISH_AT_ONCE jobs at a time: each job's chain is its own (optimistic concurrency
            # per job), so a fan-out of 1,000 jobs no longer waits for 3,000 acks one after the
            # other (bench/fleet.py). All are settled before the lock is released.
            if len(plans) == 1:
                await self._publish_job(*plans[0])
            elif plans:
                slots = asyncio.Semaphore(PUBLISH_AT_ONCE)

                async def publish(job: JobView, plan: planner.Plan) -> None:
                    async with slots:
                        await self._publish_job(job, plan)

                await asyncio.gather(*(publish(job, plan) for job, plan in plans))

    async def _publish_job(self, job: JobView, plan: planner.Plan) -> None:
        """A retryable failure leaves the job as it is: the next tick decides again and
        publishes the same message ids. A refusal that retrying cannot fix (too large,
        say) rejects the job, so it never holds a node's slot."""
        t0 = time.perf_counter()
        done = await self.runner.publish(plan)
        # For bench/trace.py (debug level only).
        log.debug("decision.timing", job_id=job.job_id, status=job.status, events=len(plan.outs), publish_ms=_ms(t0, time.perf_counter()))
        if done.outcome is Outcome.REFUSED and done.expected is not None:
            # Stale or away again: the next tick decides again.
            await self.runner.publish(planner.refused(job, done.expected, datetime.now(UTC), str(done.error)))

    async def _context(self, job: JobView, fleet: decide.Fleet, now: datetime) -> decide.Context:
        sealer = await self._sealer(job)
        review = self._review(job, fleet, now, sealer) if job.status == "requested" else None
        # The tests judged now: the attempt's own on exit, and those of a later test run.
        judged = [*(job.tests if job.status == "exited" else ()), *job.retest]
        output = await self._scan_output(job, judged) if assertions.needs_output(judged) else None
        verification = None
        if job.retest and job.retest_job:
            verification = self.jobs.get(job.retest_job) or self.store.load_jobs([job.retest_job]).get(job.retest_job)
        statuses: dict[str, str] = {}
        if job.after:  # only jobs requested before this one count (decide.Context.statuses)
            statuses = {j: v.status for j, v in self._jobs_named(job.after).items() if 0 < v.first_seq < job.first_seq}
        return decide.Context(
            policy=self.policy, review=review, statuses=statuses, output=output, verification=verification, sealer=sealer
        )

    def _jobs_named(self, job_ids: Iterable[str]) -> dict[str, JobView]:
        """The known jobs among `job_ids`: from memory while active, else from the store."""
        ids = set(job_ids)
        return {**self.store.load_jobs(ids - self.jobs.keys()), **{j: self.jobs[j] for j in ids if j in self.jobs}}

    async def _sealer(self, job: JobView) -> RequestSecrets | None:
        """What seals the job's secrets for its node, while it may be dispatched; None when
        it has none, or its request cannot be read now (it is decided again later)."""
        if not job.secrets or not (job.state.before_dispatch or job.status == "assigned"):
            self._secrets.pop(job.job_id, None)
            return None
        if job.job_id not in self._secrets:
            try:
                self._secrets[job.job_id] = await secrets_for(self.bus, self.sealing_key, job.job_id, job.secrets, job.requested_by)
            except BusError as exc:
                log.warning("job.secrets_unavailable", job_id=job.job_id, error=str(exc))
                return None
        return self._secrets[job.job_id]

    def _review(self, job: JobView, fleet: decide.Fleet, now: datetime, sealer: RequestSecrets | None = None) -> decide.Review:
        """Phase 1's one verdict (core.judge), timed: the time goes into `validated`. A pipeline
        step's run job is judged with the step's health check and rollback, and any job with its
        secret values opened (judged, never shown)."""
        pipeline = job.metadata.get("pipeline")
        view = self.projection.pipelines.get(pipeline) if isinstance(pipeline, str) else None
        started = time.perf_counter()
        # Every node as admission sees it, made once per decision round, not once per job: a
        # fan-out of 1,000 jobs over 1,000 nodes built a million of them (bench/fleet.py).
        if self._candidates[0] is not fleet or self._candidates[1] != now:
            self._candidates = (fleet, now, decide.candidates(fleet, now))
        secrets = sealer.opened() if sealer is not None else None
        verdict = judge(submission_of(job, step_companions(view, job.metadata)), self.policy, self._candidates[2], secrets)
        if verdict.approval_needed and (run := approved_with(view, job, self._job_view, enforcing=self.projection.enforcing)):
            # Approved once, with the step's run job on this node: not held a second time.
            said = f"approved with the step's run job {run.job_id} on {run.node} by {run.approved_by}"
            note = Finding(type="approved_with_step", severity="info", message=said)
            verdict = msgspec.structs.replace(verdict, approval_needed=False, approval_reason=None, findings=[*verdict.findings, note])
        return decide.Review(judgement=verdict, duration_ms=round((time.perf_counter() - started) * 1000, 3))

    def _job_view(self, job_id: str) -> JobView | None:
        """A job's view, active or not (from the store: a finished job is dropped from memory)."""
        return self.jobs.get(job_id) or self.store.load_jobs([job_id]).get(job_id)

    async def _scan_output(self, job: JobView, tests: Sequence[JobTest]) -> assertions.OutputScan | None:
        """The output tests run over the attempt's stored output chunk by chunk, in
        bounded memory (see OutputMatcher), over the chunks that count (from the attempt's
        node, orchestrator.output_gate); None when the output cannot be read."""
        matcher = assertions.OutputMatcher(tests)
        gate = OutputGate(self.projection.verifier)
        if job.node is not None:
            gate.nodes[job.attempt] = job.node
        try:
            async with contextlib.aclosing(self.bus.output_chunks(job.job_id)) as chunks:
                async for chunk in chunks:
                    if chunk.attempt != job.attempt:
                        continue
                    refused = gate.judge(chunk, final=True)
                    if refused is not None:
                        log.warning("output.refused", job_id=job.job_id, seq=chunk.seq, reason=refused)
                        continue
                    matcher.feed(chunk.data)
                    if matcher.settled:
                        break  # every pattern has matched: the rest cannot change a verdict
                    await asyncio.sleep(0)  # chunks already queued do not yield: let others run
        except BusError as exc:
            log.error("job.output_unavailable", job_id=job.job_id, error=str(exc))
            return None
        return matcher.finish()

    async def decide_pipelines(self, pipeline_ids: Iterable[str]) -> None:
        if not self._deciding:
            return
        async with self._decide_lock:
            for pipeline_id in sorted(pipeline_ids):
                view = self.projection.pipelines.get(pipeline_id)
                if view is None or planner.waiting(self.runner.pending, planner.pipeline_key(pipeline_id), view.last_seq):
                    continue
                wanted = pipeline_jobs(view)
                jobs = {j: self.jobs[j] for j in wanted if j in self.jobs}
                jobs.update(self.store.load_jobs(j for j in wanted if j not in jobs))
                plan = planner.plan_pipeline(view, jobs, self._fleet(), datetime.now(UTC), self.policy, enforcing=self.projection.enforcing)
                done = await self.runner.publish(plan)
                if done.outcome is Outcome.REFUSED and done.expected is not None:
                    # Decided again it would be refused again: end it with the reason instead.
                    end = planner.pipeline_refused(view, done.refused, done.expected, datetime.now(UTC), str(done.error))
                    await self.runner.publish(end)

    async def _publish_queued(self) -> None:
        """Rejections of undecodable requests, then events about other jobs (rollback
        done): each kept until stored or settled, never dropped."""
        if not self.caught_up.is_set():
            return
        while self._queued:
            plan = self._queued[0]
            if not self._already_seen(plan) and not (await self.runner.publish(plan)).settled:
                return
            self._queued.pop(0)

    def _already_seen(self, plan: planner.Plan) -> bool:
        """A rollback already in the log, met again while catching up."""
        out = plan.outs[0]
        if not isinstance(out.event, JobRolledBack):
            return False
        target = job_id_of(out.subject) or ""
        done = self.jobs.get(target) or self.store.load_jobs([target]).get(target)
        return done is not None and done.rollback_job == out.event.rollback_job

    async def _on_beat(self, hb: NodeHeartbeat) -> None:
        """Only records the beat: what it changes is decided and published by
        _decide_nodes_due. Awaiting each `registered` / `lost` here, one after the other,
        held the watch back: with 5,000 nodes it fell over a TTL behind the beats, and
        nodes were declared lost while they beat (bench/fleet.py)."""
        if hb.node in self.beats:
            if hb.dispatches_from != self.beats[hb.node].dispatches_from:
                # The agent reads elsewhere now (upgraded, or credentials issued again): its new
                # consumer starts a while before this heartbeat, so nothing sent to the node meanwhile
                # is missed (what came before and was handled, the agent refuses to run again).
                self._background(self._move(hb, self.beats[hb.node].dispatches_from), f"provision-{hb.node}")
            self.beats[hb.node] = hb
            self._decide_node_soon(hb.node)
            return
        # A new node: its dispatch consumer is made before it can be registered, so before any
        # dispatch to it (the agent's own credentials may not create it). In the background,
        # PROVISION_AT_ONCE at a time: made one by one inside this watch, a thousand new nodes
        # held every other node's heartbeat back past its TTL (bench/fleet.py), and those
        # nodes were declared lost while they beat.
        first = hb.node not in self._new_beats
        self._new_beats[hb.node] = hb  # the latest one is registered
        if first:
            self._background(self._join(hb), f"provision-{hb.node}")

    def _background(self, work: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._provisioning.add(task)
        task.add_done_callback(self._provisioning.discard)

    async def _provision(self, hb: NodeHeartbeat, since: datetime | None = None) -> bool:
        try:
            async with self._provision_slots:
                await self.bus.provision_dispatches(hb.node, hb.dispatches_from, since=since)
        except BusError as exc:
            log.warning("node.provision_failed", node=hb.node, stream=hb.dispatches_from, error=str(exc))
            return False
        return True

    async def _move(self, hb: NodeHeartbeat, was: str) -> None:
        # A minute back: a margin over any clock skew between the bucket's and the stream's servers.
        if not await self._provision(hb, since=hb.ts - MOVE_OVERLAP) and hb.node in self.beats:  # the next heartbeat tries again
            self.beats[hb.node] = msgspec.structs.replace(self.beats[hb.node], dispatches_from=was)

    async def _join(self, hb: NodeHeartbeat) -> None:
        node_id = hb.node
        if not await self._provision(hb):
            self._new_beats.pop(node_id, None)  # the next heartbeat tries again
            return
        hb = self._new_beats.pop(node_id)
        log.info("node.seen", node=node_id, tools=len(hb.tools), max_jobs=hb.max_jobs)
        self.beats[node_id] = hb
        self._nodes_joined = True
        self._decide_node_soon(node_id)

    def _decide_node_soon(self, node_id: str) -> None:
        self._nodes_due.add(node_id)
        self._nodes_wake.set()

    async def _decide_nodes_due(self) -> None:
        """Decide the nodes due, in rounds: the beats that come in meanwhile join the next
        round. Once per round, the jobs too if nodes joined (one may take a queued job)."""
        while True:
            await self._nodes_wake.wait()
            self._nodes_wake.clear()
            due, self._nodes_due = self._nodes_due, set()
            joined, self._nodes_joined = self._nodes_joined, False
            await self.decide_nodes(due)
            if joined:
                await self.decide_jobs(())

    def _on_snapshot(self) -> None:
        """The stored heartbeats are all delivered: the fleet is known once the nodes among
        them are provisioned too ("no node has the tool" must not mean "not provisioned yet")."""
        pending = list(self._provisioning)

        async def known() -> None:
            await asyncio.gather(*pending, return_exceptions=True)
            self.fleet_known.set()

        task = asyncio.create_task(known(), name="fleet-known")
        self._provisioning.add(task)
        task.add_done_callback(self._provisioning.discard)

    async def decide_nodes(self, node_ids: Iterable[str]) -> None:
        if not self._deciding:
            return
        plans = planner.plan_nodes(
            self.nodes,
            self.beats,
            node_ids,
            self.runner.pending,
            datetime.now(UTC),
            ttl_s=self.node_ttl_s,
            quiet_since=self.quiet_since,
            lag_s=self.bus.heartbeats_behind_s(),
            # Silence is counted only up to the last probe that found the store taking writes: a
            # probe under way when a leader dies answers only after its timeout, and meanwhile a
            # node whose beat was refused must not pass for a node that stopped beating.
            heard_until=self.writable_at if self.writable_at is not None else self.quiet_since,
        )
        # Side by side: each node's decision is its own chain (optimistic concurrency per node),
        # and 5,000 nodes declared lost one ack after the other took longer than their TTL.
        slots = asyncio.Semaphore(NODE_DECISIONS_AT_ONCE)

        async def publish(plan: planner.Plan) -> None:
            async with slots:
                await self.runner.publish(plan)

        await asyncio.gather(*(publish(plan) for plan in plans))

    async def _tick(self) -> None:
        await self.caught_up.wait()
        await self.fleet_known.wait()
        while True:
            raise_if_cancelling()
            self._nodes_due.update(self.nodes.keys() | self.beats.keys())
            self._nodes_wake.set()
            await self.decide_jobs(list(self.jobs))
            await self.decide_pipelines(list(self.projection.pipelines))
            async with self._decide_lock:
                await self._publish_queued()
            await asyncio.sleep(TICK_S)

    async def _remove_idle_consumers(self) -> None:
        """Readers may make consumers on the log, the output and the buckets (they read through
        them), with any inactive threshold, so one could make them outlive everyone: those
        unused for `limits.consumer_idle_s` are removed here."""
        idle_s = self.limits.consumer_idle_s
        while True:
            raise_if_cancelling()
            await asyncio.sleep(min(max(idle_s / 4, 0.5), IDLE_CONSUMERS_EVERY_S))
            try:
                if removed := await self.bus.remove_idle_consumers(idle_s):
                    log.info("consumers.removed", consumers=removed, idle_s=idle_s, reason="unused for longer than --consumer-idle")
            except BusError as exc:
                log.warning("consumers.not_removed", error=str(exc))

    # ------------------------------------------------------------ checkpoints

    async def _attest(self) -> None:
        """Publish a signed checkpoint (the chain value of the last applied record) every
        `checkpoint_every` events, or `checkpoint_s` after new ones, never when idle. Only
        when we sign (a bus with credentials): an unsigned checkpoint would prove nothing."""
        if self.bus.identity is None:
            return
        await self.caught_up.wait()
        while True:
            raise_if_cancelling()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.checkpoint_s):
                    await self._attest_now.wait()
            self._attest_now.clear()
            if self._unattested:
                await self.publish_checkpoint()

    async def publish_checkpoint(self) -> bool:
        """One checkpoint for the last applied record; False when the chain is unknown or the bus refused it."""
        seq, chain = self.folded_seq, self.projection.chain
        if seq == 0 or chain is None:
            return False
        pending = self._unattested
        verified_from, unverified = self.projection.verdicts()  # lets a replay skip re-checking them (orchestrator.replay)
        event = TrustCheckpoint(ts=datetime.now(UTC), upto_seq=seq, chain=chain, verified_from=verified_from, unverified=unverified)
        out = Outgoing(subjects.trust(CHECKPOINT_ID, "checkpoint"), event, msgids.trust(CHECKPOINT_ID, "checkpoint", str(seq)))
        done = await self.runner.publish(planner.Plan(key=f"trust:{CHECKPOINT_ID}", outs=(out,)))
        if done.outcome is Outcome.DONE:
            self.projection.attested(seq)
            self._unattested = max(0, self._unattested - pending)
            log.info("audit.checkpoint", upto_seq=seq, chain=chain)
            return True
        return False

    # ------------------------------------------------------------ queries

    async def _serve_queries(self, queries: AsyncIterator[Request]) -> None:
        async for req in queries:
            await self._on_query(req)

    async def _on_query(self, msg: Request) -> None:
        """Answer each query in its own task, so one slow query (up to the store's
        time limit) does not hold the others back."""
        if len(self._query_tasks) >= MAX_PENDING_QUERIES:
            busy = QueryResult(error=f"the orchestrator is busy with {MAX_PENDING_QUERIES} queries; try again", checkpoint=self.applied_seq)
            await self._respond(msg, busy)
            return
        task = asyncio.create_task(self._answer_query(msg))
        self._query_tasks.add(task)
        task.add_done_callback(self._query_tasks.discard)

    async def _answer_query(self, msg: Request) -> None:
        in_parts = False
        try:
            req = codec.decode_query_request(msg.data)
            in_parts = req.in_parts
            await self._settle()
            async with self._query_slots:
                cursor = self.store.con.cursor()  # made here: DuckDB connections are not shared across threads
                try:
                    columns, rows = await asyncio.to_thread(run_query, cursor, req.sql, req.params)
                finally:
                    cursor.close()
            result = QueryResult(columns=columns, rows=[list(r) for r in rows], checkpoint=self.applied_seq)
        except (DecodeError, QueryError) as exc:
            result = QueryResult(error=str(exc), checkpoint=self.applied_seq)
        await self._respond(msg, result, in_parts=in_parts)

    async def _settle(self) -> None:
        """Let a query see every event the log held when it was asked: a client that has just
        seen its job end on the log then reads it ended (decisions run ahead of DuckDB by up to
        one store, see write_behind). Waits at most QUERY_SETTLE_S; a later answer is still given,
        and its checkpoint says how far it goes."""
        try:
            end = await self.bus.last_seq()
        except BusError:
            return
        deadline = time.monotonic() + QUERY_SETTLE_S
        while self.applied_seq < end and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    @staticmethod
    async def _respond(msg: Request, result: QueryResult, *, in_parts: bool = False) -> None:
        # An answer too big for one message goes in parts to an asker that takes them; a long
        # one is encoded in a thread, so that the event loop goes on meanwhile.
        encode = functools.partial(codec.encode_query_result, result, in_parts=in_parts)
        parts = await asyncio.to_thread(encode) if len(result.rows) > ENCODE_INLINE_ROWS else encode()
        await msg.respond(*parts)  # never raises: the asker may have gone


async def _while_forming(step: Callable[[], Awaitable[None]], what: str) -> None:
    """A start-up step, tried again while the bus says it may pass soon (a stream of a cluster
    that is forming has no leader yet), for at most FORMING_S."""
    started = time.monotonic()
    while True:
        try:
            return await step()
        except BusError as exc:
            if not exc.retryable or time.monotonic() - started > FORMING_S:
                raise
            log.info("orchestrator.waiting", step=what, reason=str(exc), hint="a forming cluster elects its stream leaders first")
            await asyncio.sleep(FORMING_PAUSE_S)


def _free_slots(fleet: decide.Fleet, now: datetime) -> int | None:
    """How many more jobs the live nodes may run; None when no node is live."""
    live = [(n, hb) for n, hb in fleet.heartbeats.items() if fleet.is_live(n, now)]
    return sum(max(0, hb.max_jobs - fleet.load.get(n, 0)) for n, hb in live) if live else None


def _ms(t0: float, t1: float) -> float:
    return round((t1 - t0) * 1000, 3)


def _log_ignored(rec: Record, reason: str) -> None:
    log.warning("event.ignored", seq=rec.seq, subject=rec.subject, reason=reason)
