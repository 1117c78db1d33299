"""Loggers for bus/ and agent/ that import structlog when they first log, and structlog without rich.

`nexus run` logs nothing, so it never pays for importing structlog. A process that does log
gets structlog with rich and greenlet hidden from it: structlog imports both whenever they are
installed (rich for pretty tracebacks, greenlet for its deprecated thread-local context) and
Nexus uses neither (`agent.logs` renders exceptions as text with `format_exc_info`). Together
they were tens of milliseconds of every start and ~5 MiB of the agent's idle RSS (issue 13).
Hidden only while structlog itself is imported: whatever imports rich later gets it.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

# What structlog imports when installed and Nexus never uses (see the module docstring).
UNUSED_BY_STRUCTLOG = ("rich", "greenlet")


def structlog_module() -> ModuleType:
    """structlog, imported now (without rich and greenlet) unless something imported it before."""
    if (loaded := sys.modules.get("structlog")) is not None:
        return loaded
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
