"""structlog set-up for the long-running processes, agent and orchestrator alike.

It lives with the agent because the agent imports nothing of the orchestrator. structlog
comes through `bus.logs` (imported without rich: exceptions are rendered as plain text here)."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from bus.logs import structlog_module

if TYPE_CHECKING:
    from structlog.typing import Processor


def configure(level: str = "info", *, json: bool = False) -> None:
    structlog = structlog_module()
    renderer: Processor = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
