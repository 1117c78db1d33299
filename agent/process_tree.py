"""Find and kill a job's whole process tree through ``/proc`` (Linux only).

A job's child is a session and process-group leader (ptyprocess calls
``setsid``). Killing only that pid, or only its process group, misses
grandchildren that called ``setsid``/``setpgid`` themselves, and once a parent
dies its children are reparented to init and can no longer be found by
walking ppid links. So the tree is collected *before* the first signal and
re-collected before the last one.

Every target is remembered with its start time: a pid is only signalled
while ``/proc/<pid>/stat`` still shows the same start time, so a pid that was
recycled for an unrelated process during the grace period is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass

_POLL_S = 0.02
# SIGKILL cannot be ignored, but a process in uninterruptible sleep (D state)
# only dies when it wakes up; do not wait for it forever.
_KILL_SETTLE_S = 2.0


@dataclass(frozen=True, kw_only=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` this module needs."""

    pid: int
    ppid: int
    pgrp: int
    session: int
    tty_nr: int  # controlling terminal's device number, 0 if none
    state: str
    start_time: int

    @property
    def running(self) -> bool:
        # A zombie has already exited; it only waits for its parent to reap it.
        return self.state not in ("Z", "X", "x")


def parse_stat(raw: bytes) -> ProcStat:
    """Parse the contents of ``/proc/<pid>/stat``."""
    # comm (field 2) may contain spaces and parentheses, so split after the
    # *last* closing parenthesis.
    head, _, tail = raw.rpartition(b")")
    pid = int(head.split(b"(", 1)[0])
    fields = tail.split()
    # fields[0] is field 3 (state); field n is fields[n - 3].
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        session=int(fields[3]),
        tty_nr=int(fields[4]),
        state=fields[0].decode("ascii", "replace"),
        start_time=int(fields[19]),
    )


def read_stat(pid: int) -> ProcStat | None:
    """The stat of ``pid``, or None if there is no such process (any more)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return parse_stat(raw)


def snapshot() -> list[ProcStat]:
    """All processes visible in ``/proc`` right now."""
    stats: list[ProcStat] = []
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := read_stat(int(name))) is not None:
            stats.append(st)
    return stats


def _expand(roots: Iterable[int], stats: list[ProcStat]) -> set[int]:
    children: dict[int, list[int]] = {}
    for st in stats:
        children.setdefault(st.ppid, []).append(st.pid)
    found: set[int] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def descendants(pid: int) -> list[int]:
    """Pids of all live descendants of ``pid`` (not ``pid`` itself)."""
    stats = snapshot()
    return sorted(_expand([pid], stats))


def controlling_tty(pid: int) -> int | None:
    """Device number of ``pid``'s controlling terminal, if it has one."""
    st = read_stat(pid)
    return st.tty_nr if st is not None and st.tty_nr != 0 else None


def tty_holders(tty: int) -> set[int]:
    """Pids with a file descriptor open on the terminal device ``tty``.

    Finds processes that left the session (``setsid``) and were reparented
    to init but still keep the job's pty open.
    """
    holders: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fd_dir = f"/proc/{name}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or not ours to look at
            continue
        for fd in fds:
            try:
                # readlink first: stat()ing every fd of every process is slow.
                if not os.readlink(f"{fd_dir}/{fd}").startswith("/dev/pts/"):
                    continue
                if os.stat(f"{fd_dir}/{fd}").st_rdev == tty:
                    holders.add(int(name))
                    break
            except OSError:
                continue
    return holders


def _collect(
    leader: int,
    known: dict[int, ProcStat],
    *,
    include_leader: bool,
    tty: int | None = None,
) -> dict[int, ProcStat]:
    """Everything that belongs to ``leader``'s tree, by pid.

    That is the leader, its descendants, the members of its process group and
    session, the still running ``known`` targets and all their descendants,
    and, given ``tty``, every process using that terminal.
    """
    stats = snapshot()
    by_pid = {st.pid: st for st in stats}
    roots = {
        st.pid for st in stats if st.pgrp == leader or st.session == leader or st.pid == leader or (tty is not None and st.tty_nr == tty)
    }
    if tty is not None:
        roots.update(pid for pid in tty_holders(tty) if pid in by_pid)
    roots.update(pid for pid, st in known.items() if _same(by_pid.get(pid), st))
    pids = roots | _expand(roots, stats)
    if not include_leader:
        pids.discard(leader)
    # Never signal ourselves, even if a caller passes our own session.
    pids.discard(os.getpid())
    return {pid: by_pid[pid] for pid in pids if by_pid[pid].running}


def _same(now: ProcStat | None, then: ProcStat) -> bool:
    return now is not None and now.start_time == then.start_time and now.running


def _alive(targets: dict[int, ProcStat]) -> dict[int, ProcStat]:
    return {pid: st for pid, st in targets.items() if _same(read_stat(pid), st)}


def _signal(leader: int, targets: dict[int, ProcStat], sig: signal.Signals, *, group: bool) -> None:
    # The group signal also reaches members forked after the last scan.
    if group or any(st.pgrp == leader for st in targets.values()):
        # Safe even after the leader was reaped: the kernel does not recycle
        # a pid number while a process group still uses it as its id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(leader, sig)
    for pid, st in targets.items():
        if _same(read_stat(pid), st):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


async def _wait_gone(targets: dict[int, ProcStat], timeout_s: float) -> dict[int, ProcStat]:
    deadline = time.monotonic() + timeout_s
    alive = _alive(targets)
    while alive and (remaining := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(_POLL_S, remaining))
        alive = _alive(alive)
    return alive


async def _terminate(leader: int, grace_s: float, *, include_leader: bool, tty: int | None = None) -> None:
    targets = _collect(leader, {}, include_leader=include_leader, tty=tty)
    _signal(leader, targets, signal.SIGTERM, group=include_leader)
    # A stopped process only acts on SIGTERM once it is continued.
    _signal(leader, targets, signal.SIGCONT, group=include_leader)
    alive = await _wait_gone(targets, grace_s)
    # Re-scan: survivors may have forked during the grace period.
    targets = _collect(leader, alive, include_leader=include_leader, tty=tty)
    if not targets:
        return
    _signal(leader, targets, signal.SIGKILL, group=include_leader)
    await _wait_gone(targets, _KILL_SETTLE_S)


async def kill_tree(pid: int, grace_s: float, *, tty: int | None = None) -> None:
    """SIGTERM ``pid``'s whole tree, wait up to ``grace_s``, SIGKILL survivors.

    ``pid`` is expected to lead its process group and session (as a
    ptyprocess child does); both are killed along with all descendants and,
    given ``tty``, every process using that terminal (this catches
    double-forked children that were already reparented to init). Returns
    once everything is gone (or after a short bound for processes stuck in
    uninterruptible sleep).
    """
    await _terminate(pid, grace_s, include_leader=True, tty=tty)


async def kill_session(leader: int, grace_s: float, *, tty: int | None = None) -> None:
    """Kill what is left of a session/process group whose leader already exited.

    Given ``tty`` (see ``controlling_tty``), processes that still use that
    terminal are killed as well, with their descendants. The leader pid itself
    is never signalled: after it was reaped its number may belong to an
    unrelated process.
    """
    await _terminate(leader, grace_s, include_leader=False, tty=tty)


def kill_tree_now(pid: int, *, leader_reaped: bool = False) -> None:
    """SIGKILL ``pid``'s tree without waiting; for paths that cannot await.

    With ``leader_reaped`` the pid itself is spared, as in ``kill_session``.
    """
    targets = _collect(pid, {}, include_leader=not leader_reaped)
    _signal(pid, targets, signal.SIGKILL, group=not leader_reaped)
