"""What this node has run: (job, attempt) pairs kept on disk, so a dispatch is never run twice,
also after the stream's duplicate window and across agent restarts (DESIGN §9).

The newest KEEP entries are remembered, in memory and on disk: an agent that runs jobs for
months holds no more than that (about 20 MiB), and its file is rewritten with them whenever it
has grown to twice as many lines. A signed dispatch expires 15 minutes after it was made (agent
.authority), far sooner than a node runs KEEP jobs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

FILE = "ran.log"
KEEP = 200_000  # entries remembered (in memory, and on disk after a compaction)


class Ledger:
    """`state_dir` None: kept in memory only (an in-process agent in tests)."""

    def __init__(self, state_dir: Path | None) -> None:
        self._ran: dict[str, None] = {}  # "<job> <attempt>", oldest first
        self._fh: TextIO | None = None
        self._lines = 0  # in the file
        if state_dir is None:
            return
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / FILE
        if self.path.exists():
            for line in self.path.read_text(errors="replace").splitlines():
                self._lines += 1
                job, _, attempt = line.partition(" ")
                if attempt.isdigit():
                    self._remember(_entry(job, int(attempt)))
        if self._lines > KEEP:
            self._compact()
        else:
            self._fh = open(self.path, "a")  # noqa: SIM115 - held open for the agent's life

    def ran(self, job_id: str, attempt: int) -> bool:
        return _entry(job_id, attempt) in self._ran

    def record(self, job_id: str, attempt: int) -> None:
        """Written and synced before the process is spawned: a crash after it never runs it again."""
        fd = self.append(job_id, attempt)
        if fd is not None:
            os.fsync(fd)

    def append(self, job_id: str, attempt: int) -> int | None:
        """`record` without the sync: returns the descriptor to fsync (None: memory only)
        before the process is spawned, so the sync may run off the caller's thread."""
        entry = _entry(job_id, attempt)
        self._remember(entry)
        if self._fh is None:
            return None
        if self._lines >= 2 * KEEP:
            self._compact()  # the new entry is in it, synced
            assert self._fh is not None
            return self._fh.fileno()
        self._fh.write(f"{entry}\n")
        self._fh.flush()
        self._lines += 1
        return self._fh.fileno()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()

    def _remember(self, entry: str) -> None:
        self._ran[entry] = None
        if len(self._ran) > KEEP:
            del self._ran[next(iter(self._ran))]

    def _compact(self) -> None:
        """The file rewritten with what is remembered (the newest KEEP), synced, then put in place."""
        if self._fh is not None:
            self._fh.close()
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as out:
            out.writelines(f"{entry}\n" for entry in self._ran)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
        self._lines = len(self._ran)
        self._fh = open(self.path, "a")  # noqa: SIM115 - held open for the agent's life


def _entry(job_id: str, attempt: int) -> str:
    return f"{job_id} {attempt}"
