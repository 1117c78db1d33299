"""Start a command on a new pseudo terminal with posix_spawn (vfork + exec), not fork.

ptyprocess forks the whole agent (copying its page tables) and runs Python in the
child before exec: about 5 ms a job, more on a busy machine. posix_spawn does the
same work in a fraction of a millisecond, with the same result for the command:

- a new session (setsid) whose controlling terminal is the pty: the child opens the
  slave by name after setsid, which on Linux makes it the session's terminal;
- stdin, stdout and stderr on the slave, no other descriptor of ours (every
  inheritable one is closed in the child; the rest are close-on-exec);
- byte-exact output (no OPOST/ONLCR) and no echo, the window size, and every signal
  ignored here (Python's SIGPIPE and SIGXFSZ, nohup's SIGHUP) at its default and
  none blocked (agent.job_signals), set before the exec;
- an exec that fails is an OSError here, before anything ran.

It has no way to change directory in the child (os.posix_spawn lacks it before
Python 3.13): a job with a working directory goes through ptyprocess.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import termios
from collections.abc import Mapping
from typing import BinaryIO

from agent import job_signals

AVAILABLE = hasattr(os, "posix_spawn") and hasattr(os, "POSIX_SPAWN_OPEN") and os.path.isdir("/proc/self/fd")


class SpawnedPty:
    """What the runner uses of a ptyprocess.PtyProcess: pid, master fd, its file object."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd
        self.fileobj: BinaryIO = open(fd, "r+b", buffering=0, closefd=True)  # noqa: SIM115 - closed by the runner
        self.closed = False


def spawn(argv: list[str], env: Mapping[str, str], rows: int, cols: int) -> SpawnedPty:
    """Start `argv` (argv[0] an absolute path) on a new pty; raises OSError if it cannot."""
    master, slave = os.openpty()
    try:
        name = os.ttyname(slave)
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~(termios.OPOST | termios.ONLCR)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
            *((os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable(exclude=(master, slave))),
            (os.POSIX_SPAWN_OPEN, 0, name, os.O_RDWR, 0),  # after setsid: the session's terminal
            (os.POSIX_SPAWN_DUP2, 0, 1),
            (os.POSIX_SPAWN_DUP2, 0, 2),
        ]
        pid = os.posix_spawn(
            argv[0], argv, dict(env), file_actions=actions, setsid=True, setsigdef=job_signals.ignored(), setsigmask=()
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return SpawnedPty(pid, master)


def _inheritable(exclude: tuple[int, ...]) -> list[int]:
    """Our descriptors above stderr that an exec would pass on (a library may open some without O_CLOEXEC)."""
    found = []
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2 and fd not in exclude:
            with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
                if os.get_inheritable(fd):
                    found.append(fd)
    return found
