"""Loggers for bus/ and agent/ that import structlog when they first log, and structlog without rich.

`nexus run` logs nothing, so it never pays for importing structlog. A process that does log
gets structlog with rich and greenlet hidden from it: structlog imports both whenever they are
installed (rich for pretty tracebacks, greenlet for its deprecated thread-local context) and
Nexus uses neither (`agent.logs` renders exceptions as text with `format_exc_info`). Together
they were tens of milliseconds of every start and ~5 MiB of the agent's idle RSS (issue 13).
Hidden only while structlog itself is imported: whatever imports rich later gets it.

Diagnostics go to stderr in every process. The daemons set structlog up (`agent.logs.configure`);
a client (`nexus run`, `nexus logs`, any caller of the library) does not, and structlog's own
default prints to stdout, into the job's output that the verb writes there byte for byte. So a
structlog nobody has set up is set up here, on first use: warnings and worse, on stderr.
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType
from typing import Any

# What structlog imports when installed and Nexus never uses (see the module docstring).
UNUSED_BY_STRUCTLOG = ("rich", "greenlet")


def structlog_module() -> ModuleType:
    """structlog, imported now (without rich and greenlet) unless something imported it before,
    and writing to stderr unless someone has set it up (see the module docstring)."""
    structlog = sys.modules.get("structlog") or _import_structlog()
    if not structlog.is_configured():
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                structlog.dev.ConsoleRenderer(colors=sys.stderr is not None and sys.stderr.isatty()),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        )
    return structlog


def _import_structlog() -> ModuleType:
    hidden = [name for name in UNUSED_BY_STRUCTLOG if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # Python's way to make `import name` raise ImportError
    try:
        import structlog
    finally:
        for name in hidden:
            del sys.modules[name]
    return structlog


class Logger:
    """structlog's logger `name`, made on the first call (`log.warning("job.lost", job_id=...)`)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, method: str) -> Any:
        if self._logger is None:
            self._logger = structlog_module().get_logger(self._name)
        return getattr(self._logger, method)
