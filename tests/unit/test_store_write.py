"""DuckDBStore.write_batch: a view replaces its row (DELETE of the keys, then INSERT, in the
batch's transaction), and a batch DuckDB refuses changes nothing, old rows and checkpoint alike."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from orchestrator.core.views import JobStatus, JobView, NodeView
from orchestrator.store import DOC_FROM, DuckDBStore


def job(job_id: str, status: JobStatus, exit_code: int | None = None) -> JobView:
    return JobView(job_id=job_id, status=status, command="true", node="n1", labels={"env": "test"}, exit_code=exit_code)


def rows(store: DuckDBStore, sql: str) -> list[tuple[object, ...]]:
    return store.con.execute(sql).fetchall()


@pytest.fixture
def store(tmp_path: Path) -> DuckDBStore:
    return DuckDBStore(tmp_path / "nexus.duckdb")


def test_a_newer_view_replaces_the_row_and_the_checkpoint_moves(store: DuckDBStore) -> None:
    store.write_batch([], [job("j1", JobStatus.QUEUED), job("j2", JobStatus.QUEUED)], [NodeView(node_id="n1")], 3)
    store.write_batch([], [job("j1", JobStatus.SUCCEEDED, exit_code=0)], [NodeView(node_id="n1", status="lost")], 5)

    assert rows(store, "SELECT job_id, status, exit_code, labels FROM jobs ORDER BY job_id") == [
        ("j1", "succeeded", 0, '{"env":"test"}'),
        ("j2", "queued", None, '{"env":"test"}'),
    ]
    assert rows(store, "SELECT node_id, status FROM nodes") == [("n1", "lost")]
    assert store.checkpoint() == 5
    assert store.load_jobs(["j1"])["j1"] == job("j1", JobStatus.SUCCEEDED, exit_code=0)


def test_many_views_at_once_replace_theirs_and_add_the_rest(store: DuckDBStore) -> None:
    n = DOC_FROM * 2  # the JSON-document path
    store.write_batch([], [job(f"j{i}", JobStatus.QUEUED) for i in range(n // 2)], [], 1)
    store.write_batch([], [job(f"j{i}", JobStatus.RUNNING) for i in range(n)], [], 2)

    assert rows(store, "SELECT status, count(*) FROM jobs GROUP BY status") == [("running", n)]


def test_a_refused_batch_keeps_the_old_rows_and_checkpoint(store: DuckDBStore) -> None:
    store.write_batch([], [job("j1", JobStatus.QUEUED)], [], 3)
    twice = [job("j1", JobStatus.RUNNING), job("j1", JobStatus.SUCCEEDED)]  # the INSERT after the DELETE fails

    with pytest.raises(duckdb.Error):
        store.write_batch([], twice, [], 4)

    assert rows(store, "SELECT job_id, status FROM jobs") == [("j1", "queued")]
    assert store.checkpoint() == 3


def test_a_file_from_before_requester_role_gets_it_from_the_requests_events_row(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    old = DuckDBStore(path)
    old.write_batch([], [job("j1", JobStatus.RUNNING), job("j2", JobStatus.RUNNING)], [], 2)
    old.con.execute("ALTER TABLE jobs DROP COLUMN requester")
    old.con.execute("ALTER TABLE jobs DROP COLUMN requester_role")
    old.con.execute(
        "INSERT INTO events (seq, subject, type, ts, job_id, payload, error, author, author_role) VALUES "
        "(1, 'nexus.evt.job.j1.requested', 'job.requested', now(), 'j1', '{}', NULL, 'orchestrator', 'admin'), "
        "(2, 'nexus.evt.job.j1.requested', 'job.requested', now(), 'j1', '{}', 'duplicate', 'mallory', 'submitter')"
    )
    old.close()
    store = DuckDBStore(path)
    got = rows(store, "SELECT job_id, requester, requester_role FROM jobs ORDER BY job_id")
    assert got == [("j1", "orchestrator", "admin"), ("j2", None, None)]
    store.close()
    assert rows(DuckDBStore(path), "SELECT requester_role FROM jobs WHERE job_id = 'j1'") == [("admin",)]


def test_a_column_added_by_a_newer_version_holds_its_default_in_old_rows(tmp_path: Path) -> None:
    # An old job dropped no output: 0, as a replay of its events folds it (audit verify --db compares both).
    path = tmp_path / "old.duckdb"
    old = DuckDBStore(path)
    old.write_batch([], [job("j1", JobStatus.SUCCEEDED, exit_code=0)], [], 1)
    old.con.execute("ALTER TABLE jobs DROP COLUMN output_dropped")
    old.con.execute("ALTER TABLE jobs DROP COLUMN approved_by")  # a field whose default is None stays NULL
    old.close()
    store = DuckDBStore(path)
    assert rows(store, "SELECT output_dropped, approved_by FROM jobs") == [(0, None)]
    assert store.load_jobs(["j1"])["j1"] == job("j1", JobStatus.SUCCEEDED, exit_code=0)
