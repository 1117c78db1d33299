"""How a `nexus` process starts and ends (orchestrator.cli.process): the collector is off while it
starts and on again from an async verb's first wait, so a verb that runs for hours collects for
hours; `exit_now` ends it with all it printed. No timings here (bench/cli_startup.py)."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import typer
import uvloop

from orchestrator.cli import process
from orchestrator.cli.common import CliError, run_async, run_long


@pytest.fixture
def restore_gc() -> Iterator[None]:
    yield
    gc.enable()
    gc.unfreeze()  # what the verb froze goes back to the test process's collections


@run_async
async def _verb(seen: list[bool]) -> None:
    seen.append(gc.isenabled())
    await asyncio.sleep(0)  # its first wait
    seen.append(gc.isenabled())
    await asyncio.sleep(0)
    seen.append(gc.isenabled())


def test_an_async_verb_collects_again_from_its_first_wait(restore_gc: None) -> None:
    process.start()
    seen: list[bool] = []
    _verb(seen)
    assert seen == [False, True, True]
    assert gc.get_freeze_count() > 0  # what start-up made is left out of the collections


def test_a_verb_in_a_process_that_collects_changes_nothing(restore_gc: None) -> None:
    frozen = gc.get_freeze_count()
    seen: list[bool] = []
    _verb(seen)
    assert seen == [True, True, True]
    assert gc.get_freeze_count() == frozen


@run_async
async def _which_loop() -> type:
    return type(asyncio.get_running_loop())


@run_long
async def _which_loop_long() -> type:
    return type(asyncio.get_running_loop())


@run_long
async def _fails_long() -> None:
    await asyncio.sleep(0)
    raise CliError("no such thing", 2)


def test_a_long_verb_runs_on_libuvs_loop_a_short_one_on_asyncios(restore_gc: None) -> None:
    # The services, replay and audit run on uvloop (less CPU per event); a short verb does not import it.
    assert _which_loop_long() is uvloop.Loop
    assert _which_loop() is not uvloop.Loop
    assert issubclass(_which_loop(), asyncio.BaseEventLoop)


def test_a_long_verb_fails_as_a_short_one_does(restore_gc: None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as ended:
        _fails_long()
    assert ended.value.exit_code == 2
    assert "nexus: error: no such thing" in capsys.readouterr().err


# A child that prints without flushing (stdout a pipe, no PYTHONUNBUFFERED), then ends at once.
_ENDS_AT_ONCE = """
import os, sys
from orchestrator.cli import process
sys.stdout.write("all of it")
if sys.argv[1] == "gone":
    os.close(sys.stdout.fileno())
process.exit_now(3)
"""


@pytest.mark.parametrize(("stdout", "code", "printed"), [("there", 3, b"all of it"), ("gone", 120, b"")])
def test_exit_now_flushes_what_was_printed_or_says_it_could_not(stdout: str, code: int, printed: bytes) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run([sys.executable, "-c", _ENDS_AT_ONCE, stdout], capture_output=True, env=env, timeout=60)
    assert (done.returncode, done.stdout) == (code, printed), done.stderr
