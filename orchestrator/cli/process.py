"""How a `nexus` process starts and how `nexus run` ends, as cheaply as they can (issue 13:
`nexus run -- true` <= 150 ms, whole process).

Start-up (the interpreter's and typer's imports, the bus and nats-py, the verb's command) makes
some 100k objects, and nearly all of them live until the process exits: the garbage collector
would walk them dozens of times and find nothing (~7 ms of `nexus run -- true`'s CPU). So `main`
turns it off first thing (`start`), and it comes back on when an async verb (`run_async`) first
waits for I/O (`started`): by then the verb has imported what it runs with. What start-up made is
frozen then (never walked again; it lives until exit anyway), and everything after is collected
as usual, so a verb that follows a job for hours collects for hours. A sync verb (help, schema,
validate, creds) is short and ends without it.

At its end, the interpreter frees every one of those objects, module by module (3-5 ms): a
verb that has closed all it opened, and started no thread, may `exit_now` instead.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from typing import NoReturn

# What Python exits with when it cannot flush stdout at exit (say, a closed pipe).
EXIT_FLUSH_FAILED = 120


def start() -> None:
    gc.disable()


def started() -> None:
    """Start-up is over: collect again, except what start-up made. Nothing to do unless `start`
    turned the collector off (a verb run by a test, in a process that collects as usual)."""
    if gc.isenabled():
        return
    gc.freeze()
    gc.enable()


def drop_stdout() -> None:
    """Nobody reads our stdout any more (a closed pipe or terminal): later writes, and the
    interpreter's flush at exit, go to /dev/null instead of failing again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def exit_now(code: int) -> NoReturn:
    """End the process with `code` once what it printed is flushed, without the interpreter's
    teardown: no atexit handlers, no finalizers, other threads killed."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except OSError:  # as Python's own exit does when stdout is gone
        code = EXIT_FLUSH_FAILED
    with contextlib.suppress(OSError):  # stderr gone: nobody to tell any more
        if sys.stderr is not None:
            sys.stderr.flush()
    os._exit(code)
