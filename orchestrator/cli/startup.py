"""The garbage collector while a `nexus` process starts (issue 13: `nexus run -- true` <= 150 ms).

Start-up (the interpreter's and typer's imports, the bus and nats-py, the verb's command) makes
some 100k objects, and nearly all of them live until the process exits: the collector would walk
them dozens of times and find nothing (~7 ms of `nexus run -- true`'s CPU). So `main` turns it
off first thing, and it comes back on when an async verb (`run_async`) first waits for I/O: by
then the verb has imported what it runs with. What start-up made is frozen then (never walked
again; it lives until exit anyway), and everything after is collected as usual, so a verb that
follows a job for hours collects for hours. A sync verb (help, schema, validate, creds) is short
and ends without it.
"""

from __future__ import annotations

import gc


def begin() -> None:
    gc.disable()


def end() -> None:
    """Start-up is over: collect again, except what start-up made. Nothing to do unless `begin`
    turned the collector off (a verb run by a test, in a process that collects as usual)."""
    if gc.isenabled():
        return
    gc.freeze()
    gc.enable()
