"""Finding a test's own processes in /proc, to prove a process tree is gone."""

from __future__ import annotations

import os
import random
from pathlib import Path


def token() -> str:
    """A sleep duration no other process on this machine uses."""
    return f"{random.randrange(10**8):08d}"


def procs_with(*needles: str) -> list[int]:
    """Pids of live processes with one of ``needles`` as a command line argument."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        # A zombie has an empty cmdline: it is already dead. A recycled pid has
        # another command line, so it is never mistaken for ours.
        if any(n.encode() in cmdline.split(b"\0") for n in needles):
            found.append(int(name))
    return found
