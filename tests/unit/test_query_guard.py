"""`nexus sql` and the query responder only read, and only for so long.

Every form of write DuckDB accepts is tried through `run_query` (the responder's path,
on a cursor) and `DuckDBStore.query` (the CLI's `--db` path); the database, its catalog
and its settings must be exactly as before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from orchestrator.errors import QueryError
from orchestrator.store import QUERY_MAX_ROWS, DuckDBStore, run_query

SLOW = "SELECT count(*) FROM range(1000000) a(i), range(1000000) b(j) WHERE (i * j) % 7 = 3"  # minutes of work

WRITES = [
    # plain writes and DDL
    "UPDATE checkpoint SET seq = 0", "DELETE FROM checkpoint", "INSERT INTO checkpoint VALUES ('x', 1)",
    "UPDATE checkpoint SET seq = 0 RETURNING *", "CREATE TABLE t (a INT)", "CREATE VIEW v AS SELECT 1",
    "CREATE OR REPLACE VIEW job_tests AS SELECT 1", "CREATE MACRO m(a) AS a", "CREATE SEQUENCE s", "DROP TABLE checkpoint",
    "ALTER TABLE checkpoint ADD COLUMN x INT", "CREATE SECRET s (TYPE s3)", "PIVOT checkpoint ON name USING first(seq)",
    # EXPLAIN runs what it explains: only a SELECT may be explained
    "EXPLAIN ANALYZE UPDATE checkpoint SET seq = 0", "EXPLAIN ANALYZE DELETE FROM checkpoint",
    "EXPLAIN ANALYZE INSERT INTO checkpoint VALUES ('x', 1)", "EXPLAIN ANALYZE CREATE VIEW v AS SELECT 1",
    "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1", "EXPLAIN ANALYZE SET threads = 1", "EXPLAIN UPDATE checkpoint SET seq = 0",
    "/* hi */ EXPLAIN /* there */ ANALYZE DELETE FROM checkpoint", "explain analyse delete from checkpoint",
    "EXPLAIN (ANALYZE) DELETE FROM checkpoint", "EXPLAIN (FORMAT json) SELECT 1", "EXPLAIN ANALYZE EXPLAIN ANALYZE DELETE FROM checkpoint",
    "EXPLAIN ANALYZE SELECT * FROM enable_profiling()", "EXPLAIN ANALYZE SELECT 1; DELETE FROM checkpoint",
    # settings, pragmas, calls, sessions, files
    "PRAGMA enable_profiling", "PRAGMA threads = 1", "SET threads = 1", "SET VARIABLE x = 1", "RESET threads",
    "USE system", "CALL checkpoint()", "CALL enable_logging()", "ATTACH ':memory:' AS other", "DETACH other",
    "COPY checkpoint TO 'out.csv'", "COPY (SELECT 1) TO 'out.csv'", "COPY checkpoint FROM 'in.csv'", "EXPORT DATABASE 'dump'",
    "IMPORT DATABASE 'dump'", "LOAD json", "INSTALL httpfs", "CHECKPOINT", "VACUUM", "BEGIN TRANSACTION", "COMMIT",
    "PREPARE p AS DELETE FROM checkpoint", "EXECUTE p",
    # several statements
    "SELECT 1; DELETE FROM checkpoint", "DELETE FROM checkpoint; SELECT 1", "SELECT 1;; DELETE FROM checkpoint",
    # SELECTs that call something with side effects, or hide SQL from the check
    "SELECT * FROM enable_profiling()", "SELECT * FROM enable_logging()", "SELECT * FROM disable_logging()",
    "SELECT * FROM checkpoint()", "SELECT * FROM force_checkpoint()", "SELECT * FROM truncate_duckdb_logs()",
    "SELECT * FROM system.main.checkpoint()", "SELECT * FROM (FROM enable_profiling())",
    "WITH x AS (SELECT * FROM enable_profiling()) SELECT * FROM x", "SELECT (SELECT count(*) FROM enable_profiling())",
    "SELECT * FROM query('SELECT 1')", "SELECT * FROM query_table('checkpoint')", "SELECT * FROM json_execute_serialized_sql('{}')",
    "SELECT nextval('s')", "SELECT 's'.nextval()", "SELECT setseed(0.5)", "SELECT write_log('x')",
    "SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM '/etc/passwd'", "SELECT * FROM arrow_scan(1, 2, 3)",
]  # fmt: skip

READS = [
    "SELECT seq FROM checkpoint", "FROM checkpoint", "  -- a comment\nSELECT 1;", "WITH c AS (SELECT 1 AS a) SELECT a FROM c",
    "EXPLAIN SELECT * FROM checkpoint", "EXPLAIN ANALYZE SELECT count(*) FROM jobs", "/* c */ explain analyze select 1",
    "DESCRIBE jobs", "SHOW TABLES", "SUMMARIZE checkpoint", "SELECT * FROM job_tests", "SELECT * FROM metrics_execution",
    "SELECT * FROM range(3)", "SELECT * FROM generate_series(1, 3)", "SELECT table_name FROM duckdb_tables()",
    "SELECT * FROM json_each('[1, 2]')", "SELECT unnest([1, 2])", "SELECT random() < 2",
]  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DuckDBStore]:
    # One store for the module: every test checks its own before and after.
    s = DuckDBStore(tmp_path_factory.mktemp("guard") / "nexus.duckdb")
    s.con.execute("INSERT INTO checkpoint VALUES ('events', 7)")
    try:
        yield s
    finally:
        s.close()


def fingerprint(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Everything a write could change: rows, catalog, attached databases, settings, variables."""
    tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
    return {
        "rows": {t: sorted(map(str, con.execute(f"SELECT * FROM {t}").fetchall())) for t in tables},
        "views": con.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall(),
        "databases": con.execute("SELECT database_name FROM duckdb_databases() ORDER BY 1").fetchall(),
        "sequences": con.execute("SELECT sequence_name FROM duckdb_sequences()").fetchall(),
        "macros": con.execute("SELECT function_name FROM duckdb_functions() WHERE NOT internal").fetchall(),
        "settings": con.execute("SELECT name, value FROM duckdb_settings() ORDER BY 1").fetchall(),
        "variables": con.execute("SELECT name FROM duckdb_variables()").fetchall(),
        "schema": con.execute("SELECT current_schema(), current_database()").fetchall(),
    }


@pytest.mark.parametrize("sql", WRITES)
def test_no_write_gets_through_the_responders_path(store: DuckDBStore, sql: str) -> None:
    cursor = store.con.cursor()  # what the query responder uses
    before = (fingerprint(store.con), fingerprint(cursor))
    with pytest.raises(QueryError):
        run_query(cursor, sql)
    assert (fingerprint(store.con), fingerprint(cursor)) == before
    assert run_query(cursor, "SELECT seq FROM checkpoint") == (["seq"], [(7,)])  # and the cursor still works


@pytest.mark.parametrize("sql", WRITES)
def test_no_write_gets_through_the_clis_path(store: DuckDBStore, sql: str) -> None:
    before = fingerprint(store.con)
    with pytest.raises(QueryError):
        store.query(sql)
    assert fingerprint(store.con) == before


@pytest.mark.parametrize("sql", READS)
def test_reads_still_work(store: DuckDBStore, sql: str) -> None:
    before = fingerprint(store.con)
    columns, _rows = run_query(store.con.cursor(), sql)
    assert columns
    assert fingerprint(store.con) == before


def test_parameters_are_passed(store: DuckDBStore) -> None:
    assert run_query(store.con.cursor(), "SELECT seq FROM checkpoint WHERE name = ?", ["events"]) == (["seq"], [(7,)])


def test_a_slow_query_is_stopped_at_its_time_limit_and_the_next_one_runs(store: DuckDBStore) -> None:
    cursor = store.con.cursor()
    with pytest.raises(QueryError, match=r"^query took longer than 0\.3s$"):  # minutes of work: only the limit ends it
        run_query(cursor, SLOW, timeout_s=0.3)
    assert run_query(cursor, "SELECT 42") == (["42"], [(42,)])
    with pytest.raises(QueryError, match=r"took longer than 0\.3s"):
        store.query(SLOW, timeout_s=0.3)
    assert store.query("SELECT seq FROM checkpoint") == (["seq"], [(7,)])


def test_a_slow_explain_analyze_is_stopped_too(store: DuckDBStore) -> None:
    with pytest.raises(QueryError, match=r"took longer than 0\.3s"):
        run_query(store.con.cursor(), f"EXPLAIN ANALYZE {SLOW}", timeout_s=0.3)


def test_a_huge_result_is_refused_instead_of_filling_memory(store: DuckDBStore) -> None:
    cursor = store.con.cursor()
    with pytest.raises(QueryError, match=f"more than {QUERY_MAX_ROWS} rows: add a LIMIT"):
        run_query(cursor, "SELECT * FROM range(1000000000)")
    assert len(run_query(cursor, "SELECT * FROM range(100)", max_rows=100)[1]) == 100
    with pytest.raises(QueryError, match="more than 99 rows"):
        run_query(cursor, "SELECT * FROM range(100)", max_rows=99)


def test_a_read_only_file_refuses_writes_and_limits_time_too(tmp_path: Path) -> None:
    DuckDBStore(tmp_path / "x.duckdb").close()
    store = DuckDBStore(tmp_path / "x.duckdb", read_only=True)
    try:
        with pytest.raises(QueryError, match="only SELECT"):
            store.query("EXPLAIN ANALYZE DELETE FROM checkpoint")
        with pytest.raises(QueryError, match=r"took longer than 0\.2s"):
            store.query(SLOW, timeout_s=0.2)
        assert store.query("SELECT count(*) FROM checkpoint") == (["count_star()"], [(0,)])
    finally:
        store.close()
