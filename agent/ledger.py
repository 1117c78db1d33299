"""What this node has run: (job, attempt) pairs kept on disk, so a dispatch is never run twice,
also after the stream's duplicate window and across agent restarts (DESIGN §9)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

FILE = "ran.log"
KEEP = 200_000  # entries kept when the file is compacted at start


class Ledger:
    """`state_dir` None: kept in memory only (an in-process agent in tests)."""

    def __init__(self, state_dir: Path | None) -> None:
        self._ran: set[tuple[str, int]] = set()
        self._fh: TextIO | None = None
        if state_dir is None:
            return
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / FILE
        lines: list[str] = []
        if self.path.exists():
            lines = self.path.read_text(errors="replace").splitlines()
            for line in lines:
                job, _, attempt = line.partition(" ")
                if attempt.isdigit():
                    self._ran.add((job, int(attempt)))
        if len(lines) > KEEP:  # compact: the newest entries stay
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("\n".join(lines[-KEEP:]) + "\n")
            os.replace(tmp, self.path)
            self._ran = {(j, int(a)) for j, _, a in (ln.partition(" ") for ln in lines[-KEEP:]) if a.isdigit()}
        self._fh = open(self.path, "a")  # noqa: SIM115 - held open for the agent's life

    def ran(self, job_id: str, attempt: int) -> bool:
        return (job_id, attempt) in self._ran

    def record(self, job_id: str, attempt: int) -> None:
        """Written and synced before the process is spawned: a crash after it never runs it again."""
        fd = self.append(job_id, attempt)
        if fd is not None:
            os.fsync(fd)

    def append(self, job_id: str, attempt: int) -> int | None:
        """`record` without the sync: returns the descriptor to fsync (None: memory only)
        before the process is spawned, so the sync may run off the caller's thread."""
        self._ran.add((job_id, attempt))
        if self._fh is None:
            return None
        self._fh.write(f"{job_id} {attempt}\n")
        self._fh.flush()
        return self._fh.fileno()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
