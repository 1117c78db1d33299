"""The agent's ledger of what it ran (never twice) remembers the newest KEEP entries, in memory
and on disk, however long the agent runs: the file is rewritten when it has grown to twice that."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import ledger
from agent.ledger import Ledger


def test_the_ledger_keeps_the_newest_entries_across_compactions_and_restarts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger, "KEEP", 10)
    book = Ledger(tmp_path)
    for i in range(1, 46):
        book.record(f"j{i}", 1)
        assert book.ran(f"j{i}", 1) and not book.ran(f"j{i}", 2)
        assert len(book._ran) <= 10
        assert len((tmp_path / ledger.FILE).read_text().splitlines()) <= 20  # compacted at twice KEEP
    assert [book.ran(f"j{i}", 1) for i in (35, 36, 45)] == [False, True, True]
    book.close()

    again = Ledger(tmp_path)  # a restart reads what the file kept: the newest ten
    assert {i for i in range(1, 46) if again.ran(f"j{i}", 1)} == set(range(36, 46))
    again.record("j46", 2)
    again.close()
    assert (tmp_path / ledger.FILE).read_text().splitlines()[-1] == "j46 2"
    assert not (tmp_path / "ran.tmp").exists()


def test_a_long_file_from_before_is_compacted_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger, "KEEP", 10)
    (tmp_path / ledger.FILE).write_text("".join(f"j{i} 1\n" for i in range(50)) + "torn line without attempt\n")
    book = Ledger(tmp_path)
    assert (tmp_path / ledger.FILE).read_text().splitlines() == [f"j{i} 1" for i in range(40, 50)]
    assert book.ran("j49", 1) and not book.ran("j39", 1)
    book.close()
