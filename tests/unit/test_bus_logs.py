"""bus.logs: structlog is imported when something is first logged, and without rich (issue 13).

Checked in a fresh interpreter: the test process has imported structlog and rich long before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import sys
from bus.logs import Logger
log = Logger("nexus.test")
assert "structlog" not in sys.modules, "imported before anything was logged"
log.info("test.chatter")
log.warning("test.logged", n=1)
assert "structlog" in sys.modules and "rich" not in sys.modules, "structlog came with rich"
import rich.console, structlog.dev
assert structlog.dev.rich is None and rich.console.Console is not None  # rich itself still imports
"""


def test_structlog_comes_on_the_first_log_call_and_without_rich() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # Nobody set structlog up: bus.logs did, to stderr (a client's stdout is the job's output), warnings and worse.
    assert done.stdout == ""
    assert "test.logged" in done.stderr and "n=1" in done.stderr and "test.chatter" not in done.stderr


_SET_UP = """
import io, structlog
from agent import logs
from bus.logs import Logger
seen = io.StringIO()
logs.configure("info")
structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=seen))
Logger("nexus.test").info("test.kept")
assert "test.kept" in seen.getvalue(), seen.getvalue()
"""


def test_a_process_that_sets_structlog_up_keeps_its_set_up() -> None:
    done = subprocess.run([sys.executable, "-c", _SET_UP], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
