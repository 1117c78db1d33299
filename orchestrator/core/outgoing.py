"""How a decision about a job becomes an `Outgoing`: the job's subject and a deterministic message id."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from msgspec.structs import replace

from orchestrator.core.views import JobView
from schemas import msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import Event, JobRejected
from schemas.values import Finding

Judged = tuple[Literal["info", "warning", "critical"] | None, Sequence[Finding]]
"""What the analysis found: the worst severity and the findings."""


def reject(job: JobView, now: datetime, code: str, reason: str, findings: Judged | None = None) -> list[Outgoing]:
    """The job will not run: `code` for machines, `reason` for people; `findings`: what the
    analysis found (its severity and findings), when it was the analysis that refused."""
    ev = JobRejected(ts=now, code=code, reason=reason)
    if findings is not None:
        ev = replace(ev, severity=findings[0], warnings=[replace(f, command=None) for f in findings[1]])
    return [out(job, ev, "rejected")]


def out(job: JobView, ev: Event, kind: str, attempt: int | None = None) -> Outgoing:
    a = job.attempt if attempt is None else attempt
    return Outgoing(subjects.job(job.job_id, kind), ev, msgids.job(job.job_id, kind, a))
