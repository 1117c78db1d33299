"""The orchestrator process: projection, decisions and the query responder.

    log (NEXUS_EVENTS) --ordered consumer--> reducer --> DuckDBStore (rows + checkpoint)
                                               |
                                  decisions (pure) --> NatsBus.publish_chain (optimistic concurrency)

Decisions are re-derived from state, never remembered: after a restart the
projection resumes at its checkpoint and every pending job is decided again;
the server refuses a decision whose job has moved on (StaleDecision).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import structlog
from nats.aio.msg import Msg

from bus.errors import BusError, StaleDecision
from bus.nats_bus import NatsBus, StreamLimits, raise_if_cancelling
from orchestrator.core import assertions, decide
from orchestrator.core.analysis import analyze
from orchestrator.core.pipeline import decide_pipeline
from orchestrator.core.pipeline_views import PipelineView, pipeline_jobs
from orchestrator.core.policy import Policy
from orchestrator.core.views import ON_NODE, JobView, NodeView
from orchestrator.errors import QueryError
from orchestrator.projection import Projection, job_id_of
from orchestrator.store import DuckDBStore, run_query
from schemas import codec, msgids, subjects
from schemas.errors import DecodeError, InvalidSubject
from schemas.events import JobAssigned, JobRejected, JobRolledBack, NodeHeartbeat
from schemas.limits import MAX_REASON_CHARS
from schemas.records import Record
from schemas.rpc import QueryResult
from schemas.values import Finding, JobTest

log = structlog.get_logger("nexus.orchestrator")

TICK_S = 1.0
QUERY_THREADS = 4  # queries run at once, each in a thread with its own DuckDB cursor
MAX_PENDING_QUERIES = 64  # beyond this many waiting, a query is answered "busy" at once


class Orchestrator:
    def __init__(
        self,
        bus: NatsBus,
        store: DuckDBStore,
        *,
        node_ttl_s: float = 10.0,
        policy: Policy | None = None,
        limits: StreamLimits | None = None,
    ) -> None:
        self.limits = dataclasses.replace(limits or StreamLimits(), node_ttl_s=node_ttl_s)
        self.bus = bus
        self.store = store
        self.policy = policy or Policy()
        self.node_ttl_s = node_ttl_s
        self.projection = Projection(store, on_ignored=_log_ignored)
        self.beats: dict[str, NodeHeartbeat] = {}
        # job id -> (node, seq of our last publish): decisions the projection has not seen yet.
        self.inflight: dict[str, tuple[str | None, int]] = {}
        self.node_inflight: dict[str, int] = {}
        self.started_at = datetime.now(UTC)
        self.caught_up = asyncio.Event()
        # Set once the stored heartbeats are known: before that, "no node has the
        # tool" would only mean "not heard from yet".
        self.fleet_known = asyncio.Event()
        self._decide_lock = asyncio.Lock()
        self._undecodable_requests: list[Record] = []
        self._touched_pipelines: set[str] = set()
        self._followups: list[decide.Outgoing] = []  # events about other jobs, idempotent by msg id
        self.pipe_inflight: dict[str, int] = {}
        self._query_slots = asyncio.Semaphore(QUERY_THREADS)
        self._query_tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Run until cancelled."""
        await self.bus.ensure_streams(self.limits)
        log.info("orchestrator.started", checkpoint=self.applied_seq, active_jobs=len(self.jobs), db=self.store.path)
        sub = await self.bus.nc.subscribe(subjects.RPC_QUERY, queue="nexus-orchestrator", cb=self._on_query)
        try:
            # A cancellation that nats-py's wait_for swallowed during the setup above
            # must not be lost: the TaskGroup below would otherwise run forever.
            raise_if_cancelling()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._project(), name="project")
                tg.create_task(self.bus.watch_heartbeats(self._on_beat, self.fleet_known.set), name="heartbeats")
                tg.create_task(self._tick(), name="tick")
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    @property
    def jobs(self) -> dict[str, JobView]:
        return self.projection.jobs

    @property
    def nodes(self) -> dict[str, NodeView]:
        return self.projection.nodes

    @property
    def applied_seq(self) -> int:
        return self.projection.applied_seq

    # ------------------------------------------------------------ projection

    async def _project(self) -> None:
        end = await self.bus.last_seq()
        if self.applied_seq >= end:
            self.caught_up.set()
        async for batch in self.bus.records(self.applied_seq + 1):
            touched = self.apply_batch(batch)
            if not self.caught_up.is_set() and self.applied_seq >= end:
                self.caught_up.set()
                log.info("orchestrator.caught_up", seq=self.applied_seq)
            await self.decide_jobs(touched)
            await self.decide_pipelines(self._touched_pipelines)
            await self._publish_followups()

    def apply_batch(self, batch: list[Record]) -> set[str]:
        """Fold a batch (memory + DuckDB, one transaction); returns the job ids touched."""
        changed = self.projection.apply_batch(batch)
        self._touched_pipelines = set(self.projection.changed_pipelines) | {
            str(j.metadata["pipeline"]) for j in changed.values() if isinstance(j.metadata.get("pipeline"), str)
        }
        for job_id, job in changed.items():
            if job.terminal:
                log.info("job.finished", job_id=job_id, status=job.status, exit_code=job.exit_code)
        # A `requested` payload that never decoded still needs its rejection published.
        quarantined = {r.seq: r for r in self.projection.quarantined}  # these carry the reason
        for rec in batch:
            rec = quarantined.get(rec.seq, rec)
            job_id = job_id_of(rec.subject)
            unusable = rec.error is not None and rec.subject.endswith(".requested")
            if unusable and job_id and job_id not in changed and not self.store.load_jobs([job_id]):
                self._undecodable_requests.append(rec)
        for job in changed.values():
            if (done := decide.rollback_done(job, datetime.now(UTC))) is not None:
                self._followups.append(done)
        # A finished verification job moves its parent's test run on.
        parents = {j.parent for j in changed.values() if j.terminal and j.parent and j.metadata.get("verifies") == j.parent}
        return set(changed) | {p for p in parents if p}

    # ------------------------------------------------------------ decisions

    @property
    def quiet_since(self) -> datetime:
        """Since when silence from a node means something: our start, or our last reconnect
        to NATS (while we were cut off, every node looked silent)."""
        back = self.bus.reconnected_at
        return max(self.started_at, back) if back is not None else self.started_at

    def _fleet(self) -> decide.Fleet:
        load: dict[str, int] = {}
        for job_id, job in self.jobs.items():
            node = job.node if job.status in ON_NODE else None
            pending = self.inflight.get(job_id)
            if pending and pending[1] > job.last_seq and pending[0]:
                node = pending[0]
            if node:
                load[node] = load.get(node, 0) + 1
        warming_until = self.quiet_since + timedelta(seconds=self.node_ttl_s)
        return decide.Fleet(views=self.nodes, heartbeats=self.beats, load=load, ttl_s=self.node_ttl_s, warming_until=warming_until)

    async def decide_jobs(self, touched: Iterable[str]) -> None:
        if not (self.caught_up.is_set() and self.fleet_known.is_set()):
            return
        async with self._decide_lock:
            await self._publish_rejections()
            ids = set(touched) | {j for j, v in self.jobs.items() if v.status == "queued"}
            jobs = sorted(
                (self.jobs[j] for j in ids if j in self.jobs),
                key=lambda v: (-self.policy.priority_of(v.requested_by, v.priority), v.first_seq),
            )
            now = datetime.now(UTC)
            fleet = self._fleet()
            for job in jobs:
                pending = self.inflight.get(job.job_id)
                if pending and pending[1] > job.last_seq:
                    continue  # our last decision is not folded in yet
                self.inflight.pop(job.job_id, None)
                ctx = await self._context(job)
                try:
                    outs = decide.decide_job(job, fleet, now, ctx)
                except Exception as exc:  # a bug met by this job's data must not stop every job
                    log.exception("decision.crashed", job_id=job.job_id)
                    outs = [decide.reject(job, now, "internal_error", f"the orchestrator could not decide: {type(exc).__name__}: {exc}")]
                if outs:
                    await self._publish(job, outs)

    async def _context(self, job: JobView) -> decide.Context:
        review = review_command(job.command, job.tool, job.working_dir) if job.status == "requested" else None
        # The tests judged now: the attempt's own on exit, and those of a later test run.
        judged = [*(job.tests if job.status == "exited" else ()), *job.retest]
        output = await self._scan_output(job.job_id, job.attempt, judged) if assertions.needs_output(judged) else None
        verification = None
        if job.retest and job.retest_job:
            verification = self.jobs.get(job.retest_job) or self.store.load_jobs([job.retest_job]).get(job.retest_job)
        statuses: dict[str, str] = {}
        if job.after:
            missing = [j for j in job.after if j not in self.jobs]
            known = {**self.store.load_jobs(missing), **{j: self.jobs[j] for j in job.after if j in self.jobs}}
            statuses = {j: v.status for j, v in known.items()}
        return decide.Context(policy=self.policy, review=review, statuses=statuses, output=output, verification=verification)

    async def _scan_output(self, job_id: str, attempt: int, tests: Sequence[JobTest]) -> assertions.OutputScan | None:
        """The output tests run over the attempt's stored output chunk by chunk, in
        bounded memory (see OutputMatcher); None when the output cannot be read."""
        matcher = assertions.OutputMatcher(tests)
        try:
            async with contextlib.aclosing(self.bus.output_chunks(job_id)) as chunks:
                async for chunk in chunks:
                    if chunk.attempt == attempt:
                        matcher.feed(chunk.data)
                        if matcher.settled:
                            break  # every pattern has matched: the rest cannot change a verdict
                    await asyncio.sleep(0)  # chunks already queued do not yield: let others run
        except BusError as exc:
            log.error("job.output_unavailable", job_id=job_id, error=str(exc))
            return None
        return matcher.finish()

    async def _publish(self, job: JobView, outs: list[decide.Outgoing]) -> None:
        """The job's own events go out as one chain expecting its last sequence; events
        for other jobs (a verification job's `requested`) are idempotent by their ids.

        A retryable failure leaves the job as it is: the next tick decides again and
        publishes the same message ids. A refusal that retrying cannot fix (too large,
        say) rejects the job, so it never holds a node's slot."""
        own_prefix = subjects.job(job.job_id, "")
        own = [o for o in outs if o.subject.startswith(own_prefix)]
        node = next((o.event.node for o in own if isinstance(o.event, JobAssigned)), None)
        expected = job.last_seq
        try:
            for out in own:
                expected = (await self.bus.publish(out, expected_seq=expected)).seq
                self.inflight[job.job_id] = (node, expected)
            for out in outs:
                if out not in own:
                    await self.bus.publish(out)
        except StaleDecision:
            log.debug("decision.stale", job_id=job.job_id, expected=expected)
            return
        except BusError as exc:
            log.error("decision.publish_failed", job_id=job.job_id, error=str(exc), retryable=exc.retryable)
            if not exc.retryable:
                await self._reject_unpublishable(job, expected, exc)
            return
        for out in outs:
            log.info("job.decided", job_id=job.job_id, subject=out.subject, kind=codec.event_type(out.event), node=node)

    async def _reject_unpublishable(self, job: JobView, expected: int, exc: BusError) -> None:
        out = decide.reject(job, datetime.now(UTC), "publish_refused", f"a decision for this job could not be stored: {exc}")[0]
        try:
            self.inflight[job.job_id] = (None, (await self.bus.publish(out, expected_seq=expected)).seq)
        except BusError as again:  # stale or away: the next tick decides again
            log.error("decision.publish_failed", job_id=job.job_id, error=str(again))

    async def decide_pipelines(self, pipeline_ids: Iterable[str]) -> None:
        if not (self.caught_up.is_set() and self.fleet_known.is_set()):
            return
        async with self._decide_lock:
            for pipeline_id in sorted(pipeline_ids):
                view = self.projection.pipelines.get(pipeline_id)
                if view is None or self.pipe_inflight.get(pipeline_id, 0) > view.last_seq:
                    continue
                wanted = pipeline_jobs(view)
                jobs = {j: self.jobs[j] for j in wanted if j in self.jobs}
                jobs.update(self.store.load_jobs(j for j in wanted if j not in jobs))
                now = datetime.now(UTC)
                fleet = self._fleet()
                fleet_nodes: dict[str, list[str]] = {}
                if not fleet.warming(now):
                    for spec in view.spec.steps:
                        if spec.labels:
                            fleet_nodes[spec.id] = decide.capable_nodes(fleet, spec.tool, spec.labels, now)
                outs = decide_pipeline(view, jobs, fleet_nodes, now)
                await self._publish_pipeline(view, outs)

    async def _publish_pipeline(self, view: PipelineView, outs: list[decide.Outgoing]) -> None:
        """Pipeline events chain on the pipeline's last sequence; step job requests are idempotent by id."""
        expected = view.last_seq
        own_prefix = subjects.pipeline(view.pipeline_id, "")
        try:
            for out in outs:
                if out.subject.startswith(own_prefix):
                    expected = (await self.bus.publish(out, expected_seq=expected)).seq
                    self.pipe_inflight[view.pipeline_id] = expected
                else:
                    await self.bus.publish(out)
                log.info("pipeline.decided", pipeline_id=view.pipeline_id, subject=out.subject, kind=codec.event_type(out.event))
        except StaleDecision:
            log.debug("decision.stale", pipeline_id=view.pipeline_id, expected=expected)
        except BusError as exc:
            log.error("decision.publish_failed", pipeline_id=view.pipeline_id, error=str(exc))

    async def _publish_followups(self) -> None:
        """Events about other jobs (rollback done): each retried until stored, never dropped."""
        if not self.caught_up.is_set():
            return
        while self._followups:
            out = self._followups[0]
            target = job_id_of(out.subject)
            done = self.jobs.get(target or "") or self.store.load_jobs([target or ""]).get(target or "")
            seen = done is not None and isinstance(out.event, JobRolledBack) and done.rollback_job == out.event.rollback_job
            if not seen and not await self._publish_or_keep(out):  # (seen: already in the log, met again while catching up)
                return
            self._followups.pop(0)

    async def _publish_rejections(self) -> None:
        """Reject jobs whose `requested` could not be used; retried until stored, never dropped."""
        while self._undecodable_requests:
            rec = self._undecodable_requests[0]
            try:
                ref = subjects.parse(rec.subject)
            except InvalidSubject:
                ref = None  # no valid job id to reject; the events row keeps the reason
            if ref is not None:
                ev = JobRejected(
                    ts=datetime.now(UTC),
                    code="invalid_payload",
                    reason=f"payload does not decode: {rec.error}"[:MAX_REASON_CHARS],
                    raw=rec.raw.decode("utf-8", errors="replace")[:4096],
                )
                out = decide.Outgoing(subjects.job(ref.id, "rejected"), ev, msgids.job(ref.id, "rejected", rec.seq))
                if not await self._publish_or_keep(out, expected_seq=rec.seq):
                    return
            self._undecodable_requests.pop(0)

    async def _publish_or_keep(self, out: decide.Outgoing, *, expected_seq: int | None = None) -> bool:
        """Publish; False when it should be tried again later (the same message id makes that safe)."""
        try:
            await self.bus.publish(out, expected_seq=expected_seq)
        except StaleDecision:
            return True  # something else came first; nothing to add
        except BusError as exc:
            log.error("decision.publish_failed", subject=out.subject, error=str(exc), retryable=exc.retryable)
            return not exc.retryable
        return True

    async def _on_beat(self, hb: NodeHeartbeat) -> None:
        first = hb.node not in self.beats
        self.beats[hb.node] = hb
        if first:
            log.info("node.seen", node=hb.node, tools=len(hb.tools), max_jobs=hb.max_jobs)
        await self.decide_nodes([hb.node])
        if first:
            await self.decide_jobs(())

    async def decide_nodes(self, node_ids: Iterable[str]) -> None:
        if not (self.caught_up.is_set() and self.fleet_known.is_set()):
            return
        now = datetime.now(UTC)
        for node_id in node_ids:
            view = self.nodes.get(node_id)
            seq = view.last_seq if view else 0
            if self.node_inflight.get(node_id, 0) > seq:
                continue
            for out in decide.decide_node(view, self.beats.get(node_id), now, self.node_ttl_s, self.quiet_since):
                try:
                    pub = await self.bus.publish(out, expected_seq=seq)
                    self.node_inflight[node_id] = pub.seq
                    log.info("node.decided", node=node_id, kind=codec.event_type(out.event))
                except StaleDecision:
                    pass
                except BusError as exc:
                    log.error("decision.publish_failed", node=node_id, error=str(exc))

    async def _tick(self) -> None:
        await self.caught_up.wait()
        await self.fleet_known.wait()
        while True:
            raise_if_cancelling()
            await self.decide_nodes(set(self.nodes) | set(self.beats))
            await self.decide_jobs(list(self.jobs))
            await self.decide_pipelines(list(self.projection.pipelines))
            async with self._decide_lock:
                await self._publish_rejections()
                await self._publish_followups()
            await asyncio.sleep(TICK_S)

    # ------------------------------------------------------------ queries

    async def _on_query(self, msg: Msg) -> None:
        """nats-py calls this for one message at a time: answer each in its own task, so one
        slow query (up to the store's time limit) does not hold the others back."""
        if len(self._query_tasks) >= MAX_PENDING_QUERIES:
            busy = QueryResult(error=f"the orchestrator is busy with {MAX_PENDING_QUERIES} queries; try again", checkpoint=self.applied_seq)
            await self._respond(msg, busy)
            return
        task = asyncio.create_task(self._answer_query(msg))
        self._query_tasks.add(task)
        task.add_done_callback(self._query_tasks.discard)

    async def _answer_query(self, msg: Msg) -> None:
        try:
            req = codec.decode_query_request(msg.data)
            async with self._query_slots:
                cursor = self.store.con.cursor()  # made here: DuckDB connections are not shared across threads
                try:
                    columns, rows = await asyncio.to_thread(run_query, cursor, req.sql, req.params)
                finally:
                    cursor.close()
            result = QueryResult(columns=columns, rows=[list(r) for r in rows], checkpoint=self.applied_seq)
        except (DecodeError, QueryError) as exc:
            result = QueryResult(error=str(exc), checkpoint=self.applied_seq)
        await self._respond(msg, result)

    @staticmethod
    async def _respond(msg: Msg, result: QueryResult) -> None:
        try:
            await msg.respond(codec.encode(result))
        except Exception as exc:  # no reply subject, or the connection went away: nobody to tell
            log.warning("query.unanswered", error=str(exc) or type(exc).__name__)


def review_command(command: str, tool: str, working_dir: str | None = None) -> decide.Review:
    """Run the analysis phase on a command and time it (the time goes into `validated`).
    The working directory rates relative paths (`rm -rf *` in `/` is not `rm -rf *` in /tmp)."""
    started = time.perf_counter()
    result = analyze(command, tool, working_dir)
    took = (time.perf_counter() - started) * 1000
    warnings = tuple(Finding(type=f.type, severity=f.severity, message=f.message) for f in result.findings)
    return decide.Review(severity=result.severity, warnings=warnings, suggestions=tuple(result.suggestions), duration_ms=round(took, 3))


def _log_ignored(rec: Record, reason: str) -> None:
    log.warning("event.ignored", seq=rec.seq, subject=rec.subject, reason=reason)
