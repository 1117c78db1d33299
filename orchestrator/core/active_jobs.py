"""The jobs the projection holds in memory, with what decisions read of them on every batch.

Every batch the orchestrator decides the queued jobs and counts the slots each node has
taken. Scanning every active job for that made a batch cost what is active, not what it
touched: a queue of 5,000 jobs, or a fan-out to 1,000 nodes, was walked again on every batch.
`ActiveJobs` keeps the queued ids, the number of jobs on each node and the settled ids
(those the projection may drop) in step with every change, so each is read as it stands.

It is read as a mapping of job id to view; it changes only through `put` and `drop`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from orchestrator.core.views import JobView


class ActiveJobs(Mapping[str, JobView]):
    def __init__(self, jobs: Mapping[str, JobView] | None = None) -> None:
        self._jobs: dict[str, JobView] = {}
        self._on: dict[str, str] = {}  # job id -> the node it holds a slot on
        self.queued: dict[str, None] = {}  # in the order they were queued: nearly the order they are decided in
        self.settled: set[str] = set()
        self.load: dict[str, int] = {}  # node -> jobs holding a slot on it
        for job in (jobs or {}).values():
            self.put(job)

    def __getitem__(self, job_id: str) -> JobView:
        return self._jobs[job_id]

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __iter__(self) -> Iterator[str]:
        return iter(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)

    def put(self, job: JobView) -> None:
        job_id = job.job_id
        self._jobs[job_id] = job
        if job.status == "queued":
            self.queued.setdefault(job_id)
        else:
            self.queued.pop(job_id, None)
        if job.settled:
            self.settled.add(job_id)
        else:
            self.settled.discard(job_id)
        self._hold(job_id, (job.node or None) if job.on_node else None)

    def drop(self, job_id: str) -> None:
        if self._jobs.pop(job_id, None) is not None:
            self.queued.pop(job_id, None)
            self.settled.discard(job_id)
            self._hold(job_id, None)

    def views_of(self, job_ids: Iterable[str]) -> list[JobView]:
        """The views of those of `job_ids` that are active (at the dict's speed: the queue may be long)."""
        jobs = self._jobs
        return [jobs[j] for j in job_ids if j in jobs]

    def snapshot(self) -> dict[str, JobView]:
        """The views as they are now (`ActiveJobs(snapshot)` is this again)."""
        return dict(self._jobs)

    def _hold(self, job_id: str, node: str | None) -> None:
        before = self._on.get(job_id)
        if before == node:
            return
        if before is not None:
            del self._on[job_id]
            left = self.load[before] - 1
            if left:
                self.load[before] = left
            else:
                del self.load[before]
        if node is not None:
            self._on[job_id] = node
            self.load[node] = self.load.get(node, 0) + 1
