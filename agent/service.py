"""The node agent: heartbeats, the dispatch consumer and job runs.

A dispatch is handled at most once: the agent first publishes `accepted`
with optimistic concurrency on the job (it must be the next event after the
dispatch) and acks the dispatch only once `accepted` is stored. A redelivered
or outdated dispatch fails that check and is acked without running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from secrets import token_hex

import msgspec

from agent.authority import Authority, CannotCheckYet
from agent.capabilities import discover_tools
from agent.checks import describe, run_checks
from agent.environment import inherited, job_environment
from agent.ledger import Ledger
from agent.masking import mask_text, maskable
from agent.node_claim import NodeClaim, NodeTaken
from agent.pipe_runner import PipeRunner
from agent.pty_runner import PtyRunner, RunSpec, SpawnFailed
from bus.errors import BusError, StaleDecision
from bus.logs import Logger
from bus.port import Delivery, EventBus, OutputStream, Published, raise_if_cancelling
from bus.sealing import SealedValueError, SealingKey
from schemas import msgids, subjects
from schemas.envelope import Outgoing
from schemas.errors import NexusError
from schemas.events import JobAccepted, JobCancel, JobDispatch, JobExited, JobStarted, NodeFact, NodeHeartbeat
from schemas.limits import JOB_OUTPUT_MAX_BYTES
from schemas.records import Record
from schemas.secrets import is_sealed

log = Logger("nexus.agent")

VERSION = "0.1.0"
# Output chunks as stored on NEXUS_OUTPUT: each is one publish awaited until stored (in order, so
# a retry can never reorder the output), so the chunk size sets the throughput of bulk output
# (bench/output_throughput.py: ~2-3x from 32 KiB to 256 KiB; from 256 KiB to the server's limit,
# a quarter of the messages: the server, the agent and the reader each spend less per MiB, and the
# PTY went from x0.87-0.93 of the bare PTY loop to x1.0 and more, 2026-12-06). As big as the server
# takes (under the default 1 MiB max_payload: 1 MiB less HEADER_ROOM); small output is sent as it
# comes anyway (first byte at once, then every RunSpec.flush_interval_s). A job's reader buffers at most 4
# chunks per stream (back-pressure above that): 4 MiB of a running job, at most.
OUTPUT_CHUNK_MAX = 1024 * 1024  # PTY and pipes (`tty: false`) alike
# Room for the headers (msg id, chunk number, stream, signature) within the server's max_payload.
HEADER_ROOM = 4096
STOPPED_BEAT_S = 2.0  # how long a stopping agent tries to say so
CHECK_RETRY_S = 1.0  # a dispatch whose signer could not be looked up is delivered again after this
STREAMS_FIRST_POLL_S = 0.1  # an agent that finds no streams yet looks again after this, backing off to 1 s


@dataclass
class _Running:
    attempt: int
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # its process is gone, its exit reported


class Agent:
    def __init__(
        self,
        bus: EventBus,
        node_id: str,
        *,
        labels: dict[str, str] | None = None,
        max_jobs: int = 4,
        heartbeat_s: float = 2.0,
        extra_tools: tuple[str, ...] = (),
        kill_grace_s: float = 5.0,
        sealing_key: SealingKey | None = None,
        pass_env: tuple[str, ...] = (),
        state_dir: Path | None = None,
        output_max: int | None = JOB_OUTPUT_MAX_BYTES,
    ) -> None:
        self.bus = bus
        # What this node ran, kept across restarts (never the same attempt twice), and
        # who may tell it to run anything (signed dispatches, with credentials).
        self.ledger = Ledger(state_dir)
        self.authority = Authority(bus)
        self.node_id = subjects.check_id(node_id, "node id")
        self.labels = labels or {}
        self.max_jobs = max_jobs
        self.heartbeat_s = heartbeat_s
        self.tools = discover_tools(extra_tools)
        self.kill_grace_s = kill_grace_s
        # Opens the secrets sealed to this node; its public half goes into every heartbeat.
        # Without one (in-process agents in tests) a key lives as long as the process.
        self.sealing_key = sealing_key or SealingKey.generate()
        self.pass_env = pass_env
        self.output_max = output_max  # output kept of each attempt, in bytes (None: all of it)
        # What jobs inherit of our environment, taken once (reading os.environ decodes every variable).
        self.inherited_env = inherited(os.environ, pass_env)
        self._refusal_asked = False  # whether this outage's cause was asked of the server (credentials_refused)
        self.instance = uuid.uuid4().hex[:12]
        self.claim = NodeClaim(bus, self.node_id, self.instance)  # one agent per node id
        self.running: dict[str, _Running] = {}
        self.runner = PtyRunner()
        self.pipe_runner = PipeRunner()  # `tty: false` jobs
        self.ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # (job, attempt) this process has started: a run is never started twice.
        self._started: dict[tuple[str, int], None] = {}
        # At most max_jobs commands at once, whatever the orchestrators assigned (see _admit).
        self._slots = asyncio.Semaphore(max(max_jobs, 1))

    async def run(self) -> None:
        """Run until cancelled. Waits for the orchestrator to create the streams if needed."""
        await self._until_streams_ready()
        # The first heartbeat announces the node; the orchestrator creates its dispatch
        # consumer before it registers the node, so before any dispatch to it. Not while
        # another agent runs as this node (NodeTaken).
        await _retry(lambda: self.claim.take(self._heartbeat()), what="first heartbeat")
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._beat())
                async with self.bus.dispatches(self.node_id) as deliveries:
                    log.info("agent.started", node=self.node_id, tools=self.tools, max_jobs=self.max_jobs, instance=self.instance)
                    self.ready.set()
                    await self._consume(deliveries)
        except* NodeTaken as group:
            # Another agent took over this node id: stop taking its dispatches, now.
            log.error("agent.node_taken", node=self.node_id, error=str(group.exceptions[0]))
            raise group.exceptions[0] from None
        finally:
            await self._stop_running_jobs()
            await self._say_stopped()

    async def _say_stopped(self) -> None:
        """A last heartbeat saying this agent stopped: the next one for this node starts at once."""
        with contextlib.suppress(NexusError, TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(STOPPED_BEAT_S):
                await asyncio.shield(self.claim.beat(msgspec.structs.replace(self._heartbeat(), stopped=True)))

    async def _until_streams_ready(self) -> None:
        """Until the orchestrator has made the streams. Asked again after 0.1 s, backing off to 1 s
        with jitter: an agent started with its orchestrator (`nexus up`) found them made 0.1 s
        after its first look and waited a whole second more; a fleet started before its
        orchestrator does not ask the server's JetStream API 10 times a second per agent for long."""
        pause, waited, told_at = STREAMS_FIRST_POLL_S, 0.0, None
        while not await self._streams_ready():
            if told_at is None or waited - told_at >= 30.0:
                log.info("agent.waiting_for_streams", node=self.node_id)
                told_at = waited
            await asyncio.sleep(pause)
            waited += pause
            pause = min(pause * 1.5, 1.0) * random.uniform(0.8, 1.2)

    async def _streams_ready(self) -> bool:
        try:
            return await self.bus.streams_ready()
        except BusError as exc:
            if not exc.retryable:
                raise
            return False

    async def _stop_running_jobs(self) -> None:
        """On shutdown, kill what still runs and report it, so the log says how each attempt ended."""
        if not self._tasks:
            return
        log.warning("agent.stopping_jobs", jobs=sorted(self.running))
        for run in self.running.values():
            run.cancel.set()
        # Shield: the caller is being cancelled, but the exited events must still go out.
        waiting = asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiting), self.kill_grace_s + 5.0)
        for task in list(self._tasks):
            task.cancel()

    def _open_secrets(self, env: dict[str, str]) -> tuple[dict[str, str], tuple[bytes, ...]]:
        """The job's env with its sealed values opened, and the bytes to mask in its output."""
        opened: dict[str, str] = {}
        for name, value in env.items():
            if is_sealed(value):
                try:
                    opened[name] = self.sealing_key.open(value)
                except SealedValueError as exc:
                    raise SpawnFailed(f"secret {name} cannot be opened: {exc.reason} (did this agent's sealing key change?)") from None
        return {**env, **opened}, maskable(opened.values())

    def _heartbeat(self) -> NodeHeartbeat:
        return NodeHeartbeat(
            node=self.node_id,
            ts=datetime.now(UTC),
            tools=self.tools,
            labels=self.labels,
            max_jobs=self.max_jobs,
            active_jobs=len(self.running),
            hostname=socket.gethostname(),
            version=VERSION,
            interval_s=self.heartbeat_s,
            instance=self.instance,
            running=sorted(self.running),
            sealing_key=self.sealing_key.public_key,
            dispatches_from=self.bus.dispatch_stream(self.node_id),
        )

    async def _beat(self) -> None:
        while True:
            raise_if_cancelling()
            await asyncio.sleep(self.heartbeat_s)
            await self._put_heartbeat()

    async def _put_heartbeat(self) -> None:
        try:
            await self.claim.beat(self._heartbeat())
        except BusError as exc:
            log.warning("agent.heartbeat_failed", error=str(exc))
            if not self._refusal_asked:  # once per outage: a revoked identity's connection is just dropped
                self._refusal_asked = True
                if (refused := await self.bus.credentials_refused()) is not None:
                    log.error("agent.credentials_refused", reason=refused, consequence="no dispatch reaches this node; it keeps trying")
        else:
            self._refusal_asked = False

    async def _consume(self, deliveries: AsyncIterator[Delivery]) -> None:
        async for delivery in deliveries:
            await self._handle(delivery)

    async def _handle(self, msg: Delivery) -> None:
        record = msg.record
        event = record.event
        if event is None:
            log.error("agent.bad_message", subject=record.subject, reason=record.error)
            await msg.term()
            return
        job_id = subjects.parse(record.subject).id
        if isinstance(event, JobCancel | JobDispatch):
            try:
                why = await self.authority.refusal(record, datetime.now(UTC))
            except CannotCheckYet as exc:
                # A refusal is final (term), so a lookup that failed for a moment must not become one.
                log.warning("agent.check_deferred", job_id=job_id, kind=record.kind, error=str(exc), retry_in_s=CHECK_RETRY_S)
                await msg.nak(CHECK_RETRY_S)
                return
            if why:
                log.warning("agent.refused", job_id=job_id, kind=record.kind, reason=why, signer=record.signer)
                await msg.term()
                return
        if isinstance(event, JobDispatch) and self.ledger.ran(job_id, event.attempt):
            log.warning("job.already_ran", job_id=job_id, attempt=event.attempt, reason="this node ran this attempt before; never twice")
            await msg.ack()
            return
        if isinstance(event, JobCancel):
            run = self.running.get(job_id)
            if run is not None and run.attempt <= event.attempt:  # never a newer attempt's: this kill is not for it
                log.info("job.cancelling", job_id=job_id, attempt=run.attempt)
                run.cancel.set()
            await msg.ack()
        elif isinstance(event, JobDispatch):
            await self._accept(job_id, event, msg)
        else:
            await msg.term()

    async def _accept(self, job_id: str, dispatch: JobDispatch, msg: Delivery) -> None:
        accepted = JobAccepted(ts=datetime.now(UTC), node=self.node_id, attempt=dispatch.attempt, instance=self.instance)
        out = Outgoing(subjects.fact(job_id, "accepted"), accepted, msgids.job(job_id, "accepted", dispatch.attempt))
        expected = msg.record.seq
        pub: Published | None = None
        try:
            for _ in range(5):
                try:
                    pub = await self.bus.publish(out, expected_seq=expected)
                    break
                except StaleDecision as stale:
                    # Something came after the dispatch. Only harmless events (a duplicate
                    # request, say) let us accept; a cancel, a loss, an acceptance or a newer
                    # dispatch mean this one must not run.
                    still = await self._still_runnable(job_id, msg.record.seq, stale.last_seq)
                    if still is None:
                        if await self._accepted_by_us(job_id, msg.record.seq, dispatch.attempt):
                            break  # our own earlier `accepted` was stored though its ack was lost
                        log.warning("job.dispatch_outdated", job_id=job_id, reason="the job moved on since this dispatch; not running it")
                        await msg.ack()
                        return
                    expected = still
            else:
                raise BusError(f"job {job_id}: the log kept changing while accepting", retryable=True)
        except BusError as exc:
            log.error("job.accept_failed", job_id=job_id, error=str(exc))
            await msg.nak(delay_s=1)
            return
        await msg.ack()
        key = (job_id, dispatch.attempt)
        if key in self._started:
            log.warning("job.already_accepted", job_id=job_id, reason="redelivered dispatch; this agent already ran it")
            return
        # An `accepted` for this attempt stored before is either ours (its ack was lost with a
        # dropped connection: run it, or the job waits forever) or another process's (never run).
        if pub is None or pub.duplicate:
            try:
                ours = await self._accepted_by_us(job_id, msg.record.seq, dispatch.attempt)
            except BusError as exc:  # the dispatch is acked: it is not delivered again; never run it blind
                log.error("job.accept_unclear", job_id=job_id, error=str(exc), reason="whose acceptance is stored? not running it")
                return
            if not ours:
                log.warning("job.already_accepted", job_id=job_id, reason="accepted by another agent process; not running it")
                return
        self._started[key] = None
        # Noted now (a redelivery is refused from here on), synced to disk by the run before
        # it spawns anything: the fsync does not hold up the next dispatch.
        unsynced = self.ledger.append(job_id, dispatch.attempt)
        if len(self._started) > 10_000:
            del self._started[next(iter(self._started))]
        run = _Running(attempt=dispatch.attempt)
        older = self.running.get(job_id)
        if older is not None:
            # A newer attempt comes only after the older one was declared lost (this agent was
            # paused or cut off past its heartbeats' TTL): its outcome no longer counts, and the
            # two must never run side by side (an idempotent job is not a concurrent-safe one).
            log.warning("job.older_attempt_stopped", job_id=job_id, attempt=older.attempt, new_attempt=dispatch.attempt,
                        reason="a newer attempt was dispatched here: the old one is killed before it starts")  # fmt: skip
            older.cancel.set()
        self.running[job_id] = run
        task = asyncio.create_task(self._admit(job_id, dispatch, run, unsynced, after=older))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accepted_by_us(self, job_id: str, dispatch_seq: int, attempt: int) -> bool:
        """Is the job's `accepted` after this dispatch our own (this process, this attempt),
        with nothing after it that forbids running (a cancel, a loss, an outcome)?"""
        later = await self._history(job_id, dispatch_seq + 1)
        ours = next((r for r in later if isinstance(r.event, JobAccepted) and r.event.attempt == attempt), None)
        if ours is None or not isinstance(ours.event, JobAccepted) or ours.event.instance != self.instance:
            return False
        allowed = {"accepted", "requested", "test_requested", "approved", "denied"}
        return all(r.kind in allowed for r in later if r.seq > ours.seq)

    async def _still_runnable(self, job_id: str, dispatch_seq: int, last_seq: int | None) -> int | None:
        """The sequence to expect next if nothing after the dispatch stops it, else None.

        It reads what this node may (subjects.node_view_filters): the job's events that can stop
        a dispatch and this node's; a newer attempt elsewhere shows as its `assigned`, which comes
        before its dispatch. What else came (a duplicate request, a test request) it may not read:
        `last_seq` is the job's last sequence as the server gave it with the refusal, and the
        reads, made after it, cover everything up to it."""
        later = await self._history(job_id, dispatch_seq + 1)
        blocking = {"assigned", "dispatch", "accepted", "started", "exited", "cancel", "cancel_requested", "cancelled", "lost",
                    "rejected", "denied", "succeeded", "failed", "timed_out"}  # fmt: skip
        if any(r.kind in blocking for r in later):
            return None
        return max(last_seq or 0, later[-1].seq if later else dispatch_seq)

    async def _history(self, job_id: str, from_seq: int) -> list[Record]:
        """The job's events from `from_seq` as this node may read them (subjects.node_view_filters),
        less what must not count here: garbage on the job's subjects, and facts that are not this
        node's (any agent may publish a fact about any job; Authority.is_fact_of)."""
        found = []
        for rec in await self.bus.node_history(job_id, self.node_id, from_seq):
            if rec.event is None:
                continue
            if isinstance(rec.event, NodeFact):
                try:
                    if not await self.authority.is_fact_of(rec, self.node_id):
                        continue
                except CannotCheckYet as exc:
                    raise BusError(f"job {job_id}: {exc}", retryable=True) from None
            found.append(rec)
        return found

    async def _admit(
        self, job_id: str, dispatch: JobDispatch, run: _Running, unsynced: int | None = None, *, after: _Running | None = None
    ) -> None:
        """Run the accepted job once a slot is free, and once the job's older attempt (`after`)
        has ended. Two orchestrators can each count a slot free on this node (each decides alone),
        so the agent enforces --max-jobs itself: a dispatch beyond it is accepted (it is this
        node's, exactly once) and waits here, in arrival order; cancelled while it waits, it ends
        cancelled without ever starting."""
        try:
            if after is not None:
                await after.ended.wait()
            await self._admitted(job_id, dispatch, run, unsynced)
        finally:
            if self.running.get(job_id) is run:
                del self.running[job_id]
            run.ended.set()

    async def _admitted(self, job_id: str, dispatch: JobDispatch, run: _Running, unsynced: int | None) -> None:
        if not await self._take_slot(job_id, run):
            never = JobExited(ts=datetime.now(UTC), node=self.node_id, attempt=dispatch.attempt, killed_by="cancel",
                              error="cancelled while waiting for a free slot; never started")  # fmt: skip
            out = Outgoing(subjects.fact(job_id, "exited"), never, msgids.job(job_id, "exited", dispatch.attempt))
            await _retry(lambda: self.bus.publish(out))
            log.info("job.exited", job_id=job_id, killed_by="cancel", started=False)
            return
        try:
            await self._run(job_id, dispatch, run, unsynced)
        finally:
            self._slots.release()

    async def _take_slot(self, job_id: str, run: _Running) -> bool:
        """Wait for a free slot; False (holding none) if the job is cancelled first."""
        if self._slots.locked():
            log.info("job.waiting_for_slot", job_id=job_id, max_jobs=self.max_jobs)
        acquiring = asyncio.ensure_future(self._slots.acquire())
        cancelled = asyncio.ensure_future(run.cancel.wait())
        try:
            await asyncio.wait((acquiring, cancelled), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the agent stops: give back a slot taken at that instant
            if acquiring.done() and not acquiring.cancelled():
                self._slots.release()
            raise
        finally:
            cancelled.cancel()
            acquiring.cancel()  # no effect once acquired
        got = acquiring.done() and not acquiring.cancelled()
        if got and run.cancel.is_set():
            self._slots.release()
            return False
        return got

    async def _run(self, job_id: str, dispatch: JobDispatch, run: _Running, unsynced: int | None = None) -> None:
        attempt = dispatch.attempt
        chunk_no = 0
        first_output_at: datetime | None = None

        async def on_output(data: bytes, stream: OutputStream = "stdout") -> None:
            nonlocal chunk_no, first_output_at
            if first_output_at is None:
                first_output_at = datetime.now(UTC)
            chunk_no += 1
            number = chunk_no  # the two streams of a `tty: false` job share the numbering
            token = token_hex(16)  # the chunk's id no one else can guess, the same for its retries (msgids.output)
            await _retry(lambda: self.bus.publish_output(job_id, attempt, number, data, self.node_id, stream, token=token))

        async def on_started(pid: int) -> None:
            ev = JobStarted(ts=datetime.now(UTC), node=self.node_id, attempt=attempt, pid=pid)
            await _retry(
                lambda: self.bus.publish(
                    Outgoing(subjects.fact(job_id, "started"), ev, msgids.job(job_id, "started", attempt))
                )
            )

        # The job may ask where it runs (a deploy script, a health check on one node).
        nexus_env = {"NEXUS_JOB_ID": job_id, "NEXUS_NODE": self.node_id, "NEXUS_ATTEMPT": str(attempt)}
        secrets: tuple[bytes, ...] = ()
        try:
            if unsynced is not None:  # the ledger line on disk before the process exists (never run twice)
                await asyncio.to_thread(os.fsync, unsynced)
            job_env, secrets = self._open_secrets(dispatch.env)
            # A minimal environment (agent.environment), never the agent's own whole one.
            env = job_environment(self.inherited_env, nexus_env, job_env, self.pass_env)
            spec = RunSpec(
                argv=dispatch.argv,
                cwd=dispatch.working_dir,
                env=env,
                timeout_s=dispatch.timeout_s,
                kill_grace_s=self.kill_grace_s,
                secrets=secrets,
                output_max=self.output_max,
                # A server configured with a smaller max_payload gets smaller chunks, never refused ones.
                chunk_max=min(OUTPUT_CHUNK_MAX, self.bus.max_payload - HEADER_ROOM),
            )
            log.info("job.running", job_id=job_id, attempt=attempt, argv=dispatch.argv, tty=dispatch.tty)
            if dispatch.tty:
                result = await self.runner.run(spec, on_output, run.cancel, on_started)
            else:
                result = await self.pipe_runner.run(spec, on_output, run.cancel, on_started)
            killed_by = result.killed_by
            checks = []
            if killed_by is None:
                # Tests get the job's cancel: they stop (their processes killed) when it is set.
                checks = await run_checks(
                    dispatch.tests, dispatch.working_dir, env, run.cancel, kill_grace_s=self.kill_grace_s, secrets=secrets
                )
                if checks and run.cancel.is_set():
                    killed_by = "cancel"  # cancelled during its test phase: the attempt ends cancelled
            exited = JobExited(
                ts=datetime.now(UTC),
                node=self.node_id,
                attempt=attempt,
                exit_code=result.exit_code,
                signal=result.signal,
                duration_ms=result.duration_ms,
                output_bytes=result.output_bytes,
                chunks=result.chunks,
                killed_by=killed_by,
                first_output_at=first_output_at,
                checks=checks,
                output_dropped=result.output_dropped,
            )
            if result.output_dropped:
                log.warning("job.output_dropped", job_id=job_id, kept=result.output_bytes, dropped=result.output_dropped)
        except SpawnFailed as exc:
            exited = JobExited(ts=datetime.now(UTC), node=self.node_id, attempt=attempt, error=f"could not start: {exc.reason}")
        except Exception as exc:
            log.exception("job.run_failed", job_id=job_id)
            exited = JobExited(ts=datetime.now(UTC), node=self.node_id, attempt=attempt, error=f"agent error: {describe(exc)}")
        finally:
            if self.running.get(job_id) is run:
                del self.running[job_id]
        exited = _masked(exited, secrets)
        out = Outgoing(subjects.fact(job_id, "exited"), exited, msgids.job(job_id, "exited", attempt))
        await _retry(lambda: self.bus.publish(out))
        log.info("job.exited", job_id=job_id, exit_code=exited.exit_code, killed_by=exited.killed_by)


def _masked(exited: JobExited, secrets: tuple[bytes, ...]) -> JobExited:
    """`exited` with the job's secrets masked in its error and test results."""
    if not secrets:
        return exited
    checks = [
        msgspec.structs.replace(
            c, expected=mask_text(c.expected, secrets), actual=mask_text(c.actual, secrets), message=mask_text(c.message, secrets)
        )
        for c in exited.checks
    ]
    error = mask_text(exited.error, secrets) if exited.error is not None else None
    return msgspec.structs.replace(exited, checks=checks, error=error)


async def _retry(action, *, what: str = "publish") -> object:  # type: ignore[no-untyped-def]
    """Retry a publish until it is stored: the msg id makes every retry harmless."""
    delay = 0.2
    while True:
        raise_if_cancelling()
        try:
            return await action()
        except BusError as exc:
            if not exc.retryable:
                raise
            log.warning("agent.retrying", what=what, error=str(exc))
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
