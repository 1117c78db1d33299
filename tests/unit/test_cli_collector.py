"""The collector during a `nexus` verb's start-up (orchestrator.cli.process): off while the process
starts, on again from an async verb's first wait, so a verb that runs for hours collects for hours.
No timings here (bench/cli_startup.py)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from orchestrator.cli import process
from orchestrator.cli.common import run_async


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
