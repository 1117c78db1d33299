"""The orchestrator's side of secret env values (DESIGN.md §9, docs/security.md "Secrets").

- Its sealing key: `<data dir>/sealing.key` (0600), created on first start and reused;
  the public half goes to the `nexus-keys` bucket with the redaction patterns, so that
  clients seal to it (`publish_key`).
- The projection never stores a secret in clear: a request whose secret values came in
  clear (a foreign publisher) is folded, and kept in the `events` table, with those
  values masked (`redact_record`).
- The decider seals a job's secrets for the chosen node through `RequestSecrets`, made
  from the job's request as it is in the log (`secrets_for`): values sealed to us are
  opened and sealed again to the node's key; values that came in clear are sealed too.
  A sealed value counts only for whom it was sealed (`sealed:v2:`, schemas.secrets.Bound):
  the job's requester as the record names it, or the job itself. A value copied out of
  someone else's request, or sealed for no one (`sealed:v1:`), is refused: anyone who
  can read the log could otherwise run another user's secret in a command of theirs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from bus.logs import Logger
from bus.port import EventBus
from bus.sealing import SealedValueError, SealingKey, seal
from orchestrator.core.decide import CannotSeal
from schemas import subjects
from schemas.events import JobDispatch, JobRequested
from schemas.records import Record
from schemas.secrets import MASK, OrchestratorKey, Redaction, is_sealed, masked

log = Logger("nexus.orchestrator")

KEY_FILE = "sealing.key"


def load_key(data_dir: Path) -> SealingKey:
    """The orchestrator's sealing key in `data_dir` (created there on first start)."""
    return SealingKey.load_or_create(data_dir / KEY_FILE)


def key_beside(db_path: str) -> SealingKey:
    """The key in the directory of the DuckDB file (its data dir); in memory for an in-memory database."""
    return SealingKey.generate() if db_path == ":memory:" else load_key(Path(db_path).resolve().parent)


async def publish_key(bus: EventBus, key: SealingKey, redaction: Redaction) -> None:
    """Put our public key and redaction patterns in the `nexus-keys` bucket. Another
    orchestrator's different key there is replaced, with a warning: orchestrators that
    share a log must share the key file, or a job sealed to one cannot run from the other."""
    current = await bus.orchestrator_key()
    if current is not None and current.public_key != key.public_key:
        log.warning("secrets.key_replaced", previous=current.public_key, now=key.public_key,
                    hint="orchestrators sharing one log must share their sealing.key file")  # fmt: skip
    record = OrchestratorKey(public_key=key.public_key, redacted_vars=list(redaction.patterns), ts=datetime.now(UTC))
    await bus.put_orchestrator_key(record)


class RequestSecrets:
    """The `decide.Sealer` of one job: its secret values as its request holds them."""

    def __init__(
        self, key: SealingKey, values: Mapping[str, str], problem: str | None = None, *, job_id: str = "", requester: str | None = None
    ) -> None:
        self._key = key
        self._values = dict(values)
        self._problem = problem
        self._job_id = job_id
        self._requester = requester

    def seal_for(self, node_key: str) -> dict[str, str]:
        if self._problem is not None:
            raise CannotSeal(self._problem)
        sealed: dict[str, str] = {}
        for name, value in self._values.items():
            clear = self._open(name, value) if is_sealed(value) else value
            try:
                sealed[name] = seal(clear, node_key)
            except SealedValueError as exc:
                raise CannotSeal(f"the node's sealing key is unusable: {exc.reason}") from None
        return sealed

    def opened(self) -> dict[str, str]:
        """The clear values that open (for the analysis, which never shows them); one that does not
        is left out: sealing it for the node refuses the job with the reason."""
        found = {}
        for name, value in self._values.items():
            with contextlib.suppress(CannotSeal):
                found[name] = self._open(name, value) if is_sealed(value) else value
        return found

    def _open(self, name: str, value: str) -> str:
        """The clear value, if it was sealed to us for this job or its requester; else CannotSeal."""
        try:
            bound = self._key.open_bound(value)
        except SealedValueError as exc:
            raise CannotSeal(f"secret {name} cannot be opened: {exc.reason} (sealed to an older orchestrator key?)") from None
        if bound.requester is None and bound.job is None:
            why = "it is sealed for no one in particular (sealed:v1:), so anyone who read the log could have copied it here"
        elif bound.job is not None and bound.job != self._job_id:
            why = f"it was sealed for job {bound.job!r}, not this one"
        elif bound.requester is not None and bound.requester != self._requester:
            who = repr(self._requester) if self._requester is not None else "no one (an unsigned request)"
            why = f"it was sealed for {bound.requester!r}, and this job's requester is {who}"
        else:
            return bound.value
        raise CannotSeal(f"secret {name} refused: {why}; seal it again for this job or its requester (docs/security.md)")


async def secrets_for(bus: EventBus, key: SealingKey, job_id: str, names: list[str], requester: str | None) -> RequestSecrets:
    """The job's secrets from its first request in the log, for `requester` (the job's requester
    as the record names it). Raises BusError when the log cannot be read now."""
    async for batch in bus.read_records(subjects.job(job_id, "requested")):
        for rec in batch:
            if isinstance(rec.event, JobRequested):
                env = rec.event.env
                missing = [n for n in names if n not in env]
                problem = f"the job's request has no env entries {missing}" if missing else None
                return RequestSecrets(key, {n: env[n] for n in names if n in env}, problem, job_id=job_id, requester=requester)
    return RequestSecrets(key, {}, "the job's request is not in the log")


def redact_record(rec: Record, redaction: Redaction) -> Record:
    """`rec` as the projection may keep it: a job request or dispatch whose secret env values
    came in clear gets them masked, in the event and in the payload the `events` table keeps
    (the log itself keeps what the publisher sent); the names go to the request's `secrets`
    so the view knows them. Anything else is returned as is."""
    kind = rec.kind
    if kind not in ("requested", "dispatch") or subjects.entity_of(rec.subject) is None:
        return rec
    ev = rec.event
    if isinstance(ev, JobRequested | JobDispatch):
        explicit = ev.secrets if isinstance(ev, JobRequested) else []
        clear = redaction.clear_secrets(ev.env, explicit)
        if not clear:
            return rec
        event: JobRequested | JobDispatch = msgspec.structs.replace(ev, env=masked(ev.env, clear))
        if isinstance(event, JobRequested):
            event = msgspec.structs.replace(event, secrets=sorted({*event.secrets, *clear}))
        return msgspec.structs.replace(rec, event=event, raw=_masked_payload(rec.raw, clear))
    if ev is None:  # did not decode: still no secret in clear in the `events` table
        obj = _json_object(rec.raw)
        env = obj.get("env") if obj is not None else None
        if isinstance(env, dict):
            names = [
                n for n, v in env.items() if isinstance(n, str) and (not isinstance(v, str) or not is_sealed(v)) and redaction.matches(n)
            ]
            if names:
                return msgspec.structs.replace(rec, raw=_masked_payload(rec.raw, names))
    return rec


def _json_object(raw: bytes) -> dict[str, object] | None:
    try:
        obj = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _masked_payload(raw: bytes, names: list[str]) -> bytes:
    """The payload with the values of `names` in its `env` masked (the rest as it was, re-encoded)."""
    obj = _json_object(raw)
    env = obj.get("env") if obj is not None else None
    if obj is None or not isinstance(env, dict):
        return b'{"env": "masked: the payload held secrets in clear"}'
    obj["env"] = {n: MASK if n in names else v for n, v in env.items()}
    return msgspec.json.encode(obj)
