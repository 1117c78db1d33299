"""Job use cases, written once for every interface: submit, cancel, approve and deny.

Commands are Structs in the vocabulary of the event log (snake_case: `node`,
`timeout_s`, `working_dir`, `requested_by`); the HTTP API maps its camelCase
names onto them in its request models, the CLI its options. Errors: app.errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal

import msgspec

from bus.errors import StaleDecision
from orchestrator.app.errors import (
    ConflictingFields,
    JobChanged,
    JobExists,
    JobFinished,
    NoSuchDependency,
    NoSuchJob,
    NotHeld,
    NotYours,
    ReservedJobId,
    SecretsUnprotected,
)
from orchestrator.app.narrate import kind_of, status_after
from orchestrator.client import NexusClient, new_job_id
from orchestrator.core.authorship import speaks_for_itself
from orchestrator.core.pipeline_views import is_step_job_id
from orchestrator.errors import OrchestratorUnavailable, QueryError
from schemas import msgids, subjects
from schemas.codec import event_type
from schemas.envelope import Outgoing
from schemas.events import JobApprovalRequired, JobApproved, JobCancelRequested, JobDenied, JobRequested, ends_job
from schemas.limits import Command, Env, Labels, Metadata, Name, Path, Priority, TimeoutS
from schemas.records import Record
from schemas.secrets import OrchestratorKey, Redaction, is_sealed
from schemas.values import Tests

# Who asks when nobody is named (no $USER, an open API): one name on every surface.
ANONYMOUS = "anonymous"
# Of a cancel racing with the job's own events, one wins; retry this often before giving up.
CANCEL_ATTEMPTS = 5


class SubmitJob(msgspec.Struct, frozen=True, kw_only=True):
    """Run a command. Without `job_id` one is made; with one, it is the idempotency key."""

    command: Command
    tool: Name = "bash"
    job_id: str | None = None
    node: str | None = None
    labels: Labels = {}
    prefer: Labels = {}
    working_dir: Path | None = None
    env: Env = {}
    timeout_s: TimeoutS | None = None
    priority: Priority = 0
    tests: Tests = []
    parent: str | None = None
    metadata: Metadata = {}
    requested_by: str = ANONYMOUS
    after: list[str] = []
    retries: int = 0
    idempotent: bool = False
    secret_env: Env = {}
    """Env entries that are secret whatever their names (`nexus run --secret`, the API's `secretEnv`)."""
    tty: bool = True
    """False: plain pipes instead of a PTY, stdout and stderr kept apart (`nexus run --no-tty`, the API's `tty`)."""


class Submitted(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    seq: int
    created: bool = True


class CancelJob(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    by: str = ANONYMOUS
    reason: str | None = None


class DecideJob(msgspec.Struct, frozen=True, kw_only=True):
    """Approve or deny a job held for approval."""

    job_id: str
    decision: Literal["approved", "denied"]
    by: str = ANONYMOUS
    reason: str | None = None


class DecisionAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """What became of an approval or denial (of a job, or of a pipeline step at its gate).

    `outcome`: `acted` (it counted and the job or step moved on: `status`), `refused` (it does
    not count, or the orchestrator holds the job or gate again: `reason`), `pending` (stored,
    no answer yet). `by`: the identity the record names (the credentials' name), once read."""

    outcome: Literal["acted", "refused", "pending"]
    by: str | None = None
    status: str | None = None
    reason: str | None = None


def job_request(cmd: SubmitJob, now: datetime, key: OrchestratorKey | None = None, requester: str | None = None) -> JobRequested:
    """The one builder of a job's `requested` event. Every secret env value (by the
    orchestrator's redaction patterns, or given as secret) is sealed to the orchestrator's
    `key`, for `requester` (the name the record will give the request: `record_name`; by
    default the one it claims); without a key a request with secrets is refused
    (SecretsUnprotected), never published in clear."""
    if clash := sorted(n for n in cmd.secret_env.keys() & cmd.env.keys() if cmd.env[n] != cmd.secret_env[n]):
        raise ConflictingFields(f"env {', '.join(clash)} given both in clear and as a secret, with different values: give each once")
    fields = msgspec.structs.asdict(cmd)
    del fields["job_id"], fields["secret_env"]
    env = sealed_env({**cmd.env, **cmd.secret_env}, cmd.secret_env, key, requester=requester or cmd.requested_by)
    return JobRequested(ts=now, **fields | {"env": env}, secrets=sorted(cmd.secret_env))


def record_name(client: NexusClient, claimed: str) -> str:
    """The name the record will give a request this client publishes claiming `claimed`: its
    verified identity's name, unless it has none or is a service that speaks for the users it
    authenticated (the API), whose claim stands (core.authorship.named)."""
    ident = client.bus.identity
    return claimed if ident is None or speaks_for_itself(ident.author) else ident.author.name


def sealed_env(env: Mapping[str, str], explicit: Mapping[str, str], key: OrchestratorKey | None, *, requester: str) -> dict[str, str]:
    """`env` with every secret value (by the orchestrator's redaction patterns, or named in
    `explicit`) sealed to the orchestrator's `key` for `requester` (`sealed:v2:`: the
    orchestrator opens it only for a job of theirs); SecretsUnprotected rather than any in clear."""
    env = dict(env)
    redaction = Redaction(patterns=tuple(key.redacted_vars)) if key is not None else Redaction()
    clear = redaction.clear_secrets(env, explicit)
    if clear:
        if key is None:
            raise SecretsUnprotected(clear, "the orchestrator's sealing key is not published: is an orchestrator running?")
        from bus.sealing import SealingError, seal_bound  # PyNaCl: only for a job with secrets

        try:
            env.update({n: seal_bound(env[n], key.public_key, requester=requester) for n in clear})
        except SealingError as exc:
            raise SecretsUnprotected(clear, f"the orchestrator's published key is unusable: {exc}") from None
    return env


async def request_for(client: NexusClient, cmd: SubmitJob, now: datetime) -> JobRequested:
    """`job_request`, with the orchestrator's key read from the bus when the job has an env."""
    key = await client.sealing_key() if cmd.env or cmd.secret_env else None
    return job_request(cmd, now, key, record_name(client, cmd.requested_by))


def job_id_of(cmd: SubmitJob) -> str:
    """The job's id: the caller's choice, unless it is one only the orchestrator may request, or a new one."""
    if cmd.job_id is None:
        return new_job_id()
    subjects.check_id(cmd.job_id, "job id")
    if is_step_job_id(cmd.job_id):
        raise ReservedJobId(cmd.job_id)
    return cmd.job_id


async def submit(client: NexusClient, job_id: str, req: JobRequested) -> Submitted:
    """Store the job's request. The same id with the same request again is the same job
    (`created`: false); with a different request it is refused (WrongState). A job to run
    `after` one the log has never seen is refused (NoSuchDependency): it would wait for ever."""
    history = await client.history(job_id) if await client.bus.last_seq(subject=subjects.job_all(job_id)) else []
    first = first_request(history)
    if history and first is None:
        raise JobExists(f"job id {job_id!r} is already used (its events have no valid request)")
    if first is not None:
        seq, earlier = first
        if (earlier.command, earlier.tool, earlier.node) != (req.command, req.tool, req.node):
            raise JobExists(f"job id {job_id!r} is already used by a different request")
        return Submitted(job_id=job_id, seq=seq, created=False)
    for needed in req.after:
        if await client.bus.last_seq(subject=subjects.job_all(subjects.check_id(needed, "job id"))) == 0:
            raise NoSuchDependency(needed)
    return Submitted(job_id=job_id, seq=await client.submit(job_id, req))


async def request_again(client: NexusClient, job_id: str, by: str, now: datetime) -> JobRequested:
    """Job `job_id`'s request, as a new job's: every field as stored, so the new job runs as the
    old did (command, tool, node, labels, working directory, env, tty, tests, metadata, ...),
    requested by `by` at `now`. Secret values stay sealed to the orchestrator, as stored (one that
    came in clear from a foreign publisher is sealed now); no value is ever read back from a view,
    where a secret shows as a mask. A request with sealed secrets is someone's credentials, sealed
    for them: only the job's requester (as the record names it) may run it again (NotYours); the
    orchestrator would not open them for anyone else."""
    subjects.check_id(job_id, "job id")
    first = first_request(await client.history(job_id))
    if first is None:
        raise NoSuchJob(job_id)
    _, earlier = first
    # Values that came in clear were never anyone's: the log shows them to every reader.
    held = sorted(n for n, v in earlier.env.items() if is_sealed(v))
    if held:
        rows = (await client.query("SELECT requested_by FROM jobs WHERE job_id = ?", [job_id])).rows
        owner = rows[0][0] if rows else None
        if owner is None or owner != record_name(client, by):
            raise NotYours(job_id, owner, held)
    env = dict(earlier.env)
    if env:
        explicit = {n: env[n] for n in earlier.secrets if n in env}
        env = sealed_env(env, explicit, await client.sealing_key(), requester=record_name(client, by))
    return msgspec.structs.replace(earlier, ts=now, requested_by=by, env=env)


def first_request(history: Sequence[Record]) -> tuple[int, JobRequested] | None:
    for rec in history:
        if isinstance(rec.event, JobRequested):
            return rec.seq, rec.event
    return None


def final_status(history: Sequence[Record]) -> str | None:
    """The status a job ended with (`succeeded`, `denied`, ...), or None while it goes on."""
    for rec in reversed(history):
        if rec.event is not None and ends_job(rec.event):
            return event_type(rec.event).split(".", 1)[1]
    return None


async def cancel(client: NexusClient, cmd: CancelJob) -> int:
    """Ask for the cancel of a job that has not ended; returns the request's sequence.

    Raises NoSuchJob, or JobFinished with nothing published: the record gets no
    request that could never take effect. The request expects the job's last event
    to be the one read, so a job that ends meanwhile is read again, not cancelled."""
    subjects.check_id(cmd.job_id, "job id")
    ev = JobCancelRequested(requested_by=cmd.by, reason=cmd.reason)
    for _ in range(CANCEL_ATTEMPTS):
        history = await client.history(cmd.job_id)
        if not history:
            raise NoSuchJob(cmd.job_id)
        if (status := final_status(history)) is not None:
            raise JobFinished(cmd.job_id, status)
        token = secrets.token_hex(4)  # a person may ask again, later, on purpose
        out = Outgoing(subjects.job(cmd.job_id, "cancel_requested"), ev, msgids.job(cmd.job_id, "cancel_requested", token))
        try:
            return (await client.bus.publish(out, expected_seq=history[-1].seq)).seq
        except StaleDecision:
            continue
    raise JobChanged(cmd.job_id)


def held(history: Sequence[Record]) -> bool:
    """Whether the job waits for a decision: its last hold is followed by no answer, no cancel
    request and no end."""
    counted = [r for r in history if r.event is not None]  # a refused record has none (client.history)
    kinds = [kind_of(r) for r in counted]
    hold = max((i for i, k in enumerate(kinds) if k == "approval_required"), default=None)
    if hold is None:
        return False
    after = counted[hold + 1 :]
    return not any(kind_of(r) in ("approved", "denied", "cancel_requested") or ends_job(r.event) for r in after)


async def decide(client: NexusClient, cmd: DecideJob, now: datetime | None = None) -> int:
    """Publish `approved` or `denied` for a job whose last hold is unanswered; returns its sequence.

    Held: a hold with no answer, no cancel request and no end after it (a job cancelled while
    held is not waiting for anyone; a decision on it would only add a record that never counts).
    The message id names the hold's state (the job's last sequence), so a retried
    decision is stored once; the publish expects that state, so of two racing
    decisions one wins and the other gets JobChanged."""
    subjects.check_id(cmd.job_id, "job id")
    history = await client.history(cmd.job_id)
    if not history:
        raise NoSuchJob(cmd.job_id)
    if not held(history):
        raise NotHeld(cmd.job_id)
    at = now or datetime.now(UTC)
    ev = JobApproved(ts=at, by=cmd.by, reason=cmd.reason) if cmd.decision == "approved" else JobDenied(ts=at, by=cmd.by, reason=cmd.reason)
    last = history[-1].seq
    out = Outgoing(subjects.job(cmd.job_id, cmd.decision), ev, msgids.job(cmd.job_id, cmd.decision, last))
    try:
        return (await client.bus.publish(out, expected_seq=last)).seq
    except StaleDecision:
        raise JobChanged(cmd.job_id) from None


async def decision_answer(
    client: NexusClient, job_id: str, decision: Literal["approved", "denied"], seq: int, timeout_s: float
) -> DecisionAnswer:
    """What the orchestrator made of the decision stored at `seq`, waiting at most `timeout_s`.

    Refused: the record does not count (its author may not decide), or, for an approval, the
    job's next event holds it again (the policy does not let that identity approve it); a
    denial, when the orchestrator's fold refused it (the policy names who may decide the hold).
    A denial that counts ends the job by itself; an approval counts once the job moves on."""

    def settles(rec: Record) -> bool:
        if rec.seq == seq:
            return rec.event is None or decision == "denied"
        return rec.seq > seq and rec.event is not None

    by: str | None = None
    try:
        async with asyncio.timeout(timeout_s):
            async with contextlib.aclosing(client.follow(job_id, from_seq=seq, until=settles)) as items:
                async for item in items:
                    rec = item.record
                    if rec is None:
                        continue
                    if rec.seq == seq:
                        if not isinstance(rec.event, JobApproved | JobDenied):  # it does not count: the job waits on
                            return DecisionAnswer(outcome="refused", status="approval_required", reason=rec.error)
                        by = rec.event.by
                        if decision == "denied":
                            return await _denial_answer(client, seq, by)
                    elif isinstance(rec.event, JobApprovalRequired):
                        return DecisionAnswer(outcome="refused", by=by, status="approval_required", reason=rec.event.reason)
                    elif rec.event is not None:
                        return DecisionAnswer(outcome="acted", by=by, status=status_after(rec, "approved"))
    except TimeoutError:
        pass
    return DecisionAnswer(outcome="pending", by=by)


async def _denial_answer(client: NexusClient, seq: int, by: str) -> DecisionAnswer:
    """Whether the orchestrator's fold let the denial at `seq` end the job (its `events` row: a
    query waits for what the log held when it was asked); pending when it cannot say now."""
    try:
        rows = (await client.query("SELECT error FROM events WHERE seq = ?", [seq])).rows
    except (QueryError, OrchestratorUnavailable):
        return DecisionAnswer(outcome="pending", by=by)
    if not rows:
        return DecisionAnswer(outcome="pending", by=by)
    if rows[0][0] is not None:  # the job waits on, held
        return DecisionAnswer(outcome="refused", by=by, status="approval_required", reason=str(rows[0][0]))
    return DecisionAnswer(outcome="acted", by=by, status="denied")
