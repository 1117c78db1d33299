"""How a decision about a job becomes an `Outgoing`: the job's subject and a deterministic message id."""

from __future__ import annotations

from datetime import datetime

from orchestrator.core.views import JobView
from schemas import msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import Event, JobRejected


def reject(job: JobView, now: datetime, code: str, reason: str) -> list[Outgoing]:
    """The job will not run: `code` for machines, `reason` for people."""
    return [out(job, JobRejected(ts=now, code=code, reason=reason), "rejected")]


def out(job: JobView, ev: Event, kind: str, attempt: int | None = None) -> Outgoing:
    a = job.attempt if attempt is None else attempt
    return Outgoing(subjects.job(job.job_id, kind), ev, msgids.job(job.job_id, kind, a))
