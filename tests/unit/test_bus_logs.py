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
log.warning("test.logged", n=1)
assert "structlog" in sys.modules and "rich" not in sys.modules, "structlog came with rich"
import rich.console, structlog.dev
assert structlog.dev.rich is None and rich.console.Console is not None  # rich itself still imports
"""


def test_structlog_comes_on_the_first_log_call_and_without_rich() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "test.logged" in done.stdout and "n=1" in done.stdout  # structlog's default set-up printed it
