"""DuckDBStore: the projection of the event log into DuckDB tables.

The orchestrator is the only writer. Each batch of records is written in one
transaction together with the last applied stream sequence (the checkpoint),
so a restart resumes exactly after what was stored. Rows are loaded
column-wise (`unnest` of one list per column), not one row at a time.

Tables are documented in docs/state.md.
"""

from __future__ import annotations

import enum
import json
import math
import re
import threading
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import msgspec

from orchestrator.core.audit import GENESIS, head_statement
from orchestrator.core.pipeline_views import PipelineView, StepView
from orchestrator.core.reducer import EventRow
from orchestrator.core.views import JobView, NodeView
from orchestrator.errors import QueryError
from orchestrator.metrics_sql import view_ddl
from schemas import codec
from schemas.errors import DecodeError
from schemas.records import Record

CHECKPOINT = "events"

_SQL_TYPES = {int: "BIGINT", str: "VARCHAR", float: "DOUBLE", bool: "BOOLEAN", datetime: "TIMESTAMPTZ"}


def _column_type(tp: Any) -> str:
    """SQL type of a view field: scalars map directly, Literals are text, the rest is JSON."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:  # `X | None`
        (tp,) = (a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is typing.Literal or (isinstance(tp, type) and issubclass(tp, enum.StrEnum)):
        return "VARCHAR"
    return _SQL_TYPES.get(tp, "JSON")


def _sql_literal(value: Any) -> str | None:
    """`value` as a SQL literal, for a plain bool, int or str (None for anything else)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int) and not isinstance(value, enum.Enum):
        return str(int(value))
    if isinstance(value, str) and not isinstance(value, enum.Enum):
        return "'" + value.replace("'", "''") + "'"
    return None


class _Table:
    """Column layout of a msgspec Struct as a DuckDB table, and conversions both ways."""

    def __init__(self, name: str, struct: type[msgspec.Struct], key: str | tuple[str, ...], exclude: tuple[str, ...] = ()) -> None:
        self.name = name
        self.struct = struct
        self.key = (key,) if isinstance(key, str) else key
        hints = typing.get_type_hints(struct, include_extras=False)
        fields = msgspec.structs.fields(struct)
        self.columns = [(f.name, _column_type(hints[f.name])) for f in fields if f.name not in exclude]
        # What a column added to an existing table holds in its old rows: the field's default when
        # it is a plain number, flag or text (an old job dropped no output: 0, as a replay folds it).
        self._added_defaults = {f.name: literal for f in fields if (literal := _sql_literal(f.default)) is not None}
        # Rows as one JSON document: JSON columns travel as their text and are cast like `?::JSON` would.
        self.plain = not exclude and all(t not in ("JSON", "DOUBLE") for _, t in self.columns) and all(
            f.encode_name == f.name for f in fields
        )
        shape = ", ".join(f'"{n}": "{"VARCHAR" if t == "JSON" else t}"' for n, t in self.columns)
        names = ", ".join(n for n, _ in self.columns)
        values = ", ".join(f"r.{n}::JSON" if t == "JSON" else f"r.{n}" for n, t in self.columns)
        self._doc_sql = {
            replace: f"{'INSERT OR REPLACE' if replace else 'INSERT'} INTO {name} ({names}) "
            f"SELECT {values} FROM (SELECT unnest(from_json_strict(?::VARCHAR, '[{{{shape}}}]')) AS r)"
            for replace in (True, False)
        }
        # A replace of a one-column key is a DELETE of the keys and a plain INSERT, in the
        # caller's transaction: the same rows as INSERT OR REPLACE at about half its CPU in
        # DuckDB 2.0 (the 54-column jobs row, stored after every batch of decisions).
        key_type = dict(self.columns).get(self.key[0]) if len(self.key) == 1 else None
        self._delete_sql = f"DELETE FROM {name} WHERE {self.key[0]} IN (SELECT unnest(?::{key_type}[]))" if key_type else None

    def ddl(self) -> str:
        cols = ", ".join(f"{n} {t}" for n, t in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {self.name} ({cols}, PRIMARY KEY ({', '.join(self.key)}))"

    def migrate(self, con: duckdb.DuckDBPyConnection) -> set[str]:
        """Create the table, or add the columns a newer version of the view has (new fields only
        ever get added); returns the columns added to an existing table."""
        query = "SELECT column_name FROM information_schema.columns WHERE table_name = ?"
        existed = bool(con.execute(query, [self.name]).fetchall())
        con.execute(self.ddl())
        have = {r[0] for r in con.execute(query, [self.name]).fetchall()}
        added = set()
        for name, sqltype in self.columns:
            if name not in have:
                default = self._added_defaults.get(name)
                con.execute(f"ALTER TABLE {self.name} ADD COLUMN {name} {sqltype}" + (f" DEFAULT {default}" if default else ""))
                added.add(name)
        return added if existed else set()

    def upsert(self, con: duckdb.DuckDBPyConnection, rows: Sequence[msgspec.Struct], *, replace: bool = True) -> None:
        """Insert (or replace) rows, in the caller's transaction. Many rows go as one JSON
        document that DuckDB takes apart itself (msgspec writes it in one call; cheaper than
        handing DuckDB one Python object per value, by ~30% at thousands of rows); a few go as
        one list per column (the document's fixed cost is higher), and so do floats JSON cannot
        say (NaN, inf)."""
        if not rows:
            return
        if replace and self._delete_sql is not None:
            con.execute(self._delete_sql, [[getattr(row, self.key[0]) for row in rows]])
            replace = False
        if len(rows) < DOC_FROM:
            self._upsert_lists(con, rows, replace=replace)
            return
        try:  # a plain struct's fields are the columns, all scalars: msgspec encodes the row as it is
            docs = [_JSON.encode(row) for row in rows] if self.plain else [_JSON.encode(self._doc_row(row)) for row in rows]
        except _NotJson:
            self._upsert_lists(con, rows, replace=replace)
            return
        # Documents of at most DOC_MAX_BYTES (one row may be more): DuckDB's parse of a document
        # takes several times its size in memory, and a batch of large payloads must not add up.
        part: list[bytes] = []
        size = 0
        for doc in docs:
            if part and size + len(doc) > DOC_MAX_BYTES:
                con.execute(self._doc_sql[replace], [_document(part)])
                part, size = [], 0
            part.append(doc)
            size += len(doc) + 1
        con.execute(self._doc_sql[replace], [_document(part)])

    def _doc_row(self, row: msgspec.Struct) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, sqltype in self.columns:
            value = getattr(row, name)
            if sqltype == "JSON":
                value = _JSON.encode(value).decode()
            elif sqltype == "DOUBLE" and value is not None and not math.isfinite(value):
                raise _NotJson
            out[name] = value
        return out

    def _upsert_lists(self, con: duckdb.DuckDBPyConnection, rows: Sequence[msgspec.Struct], *, replace: bool) -> None:
        """One list per column, `unnest`ed: the same rows as `upsert`, for values JSON cannot carry."""
        lists: list[list[Any]] = [[] for _ in self.columns]
        for row in rows:
            for i, (name, sqltype) in enumerate(self.columns):
                value = getattr(row, name)
                if sqltype == "JSON":
                    value = msgspec.json.encode(value).decode()
                elif isinstance(value, enum.StrEnum):
                    value = value.value
                lists[i].append(value)
        names = ", ".join(n for n, _ in self.columns)
        select = ", ".join(f"unnest(?::{t}[])" for _, t in self.columns)
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        con.execute(f"{verb} INTO {self.name} ({names}) SELECT {select}", lists)

    def decode(self, names: Sequence[str], values: Sequence[Any], extra: dict[str, Any] | None = None) -> Any:
        kinds = dict(self.columns)
        # NULL means "take the field's default": columns added by a later version are NULL in old rows.
        data = {n: (msgspec.json.decode(v) if kinds.get(n) == "JSON" else v) for n, v in zip(names, values, strict=True) if v is not None}
        return msgspec.convert({**data, **(extra or {})}, self.struct, strict=False)


_JSON = msgspec.json.Encoder()
DOC_FROM = 100
"""Rows from which a table's batch goes to DuckDB as JSON documents (measured crossover)."""
DOC_MAX_BYTES = 2 << 20


def _document(rows: list[bytes]) -> str:
    return (b"[" + b",".join(rows) + b"]").decode()


class _NotJson(Exception):
    """A value JSON cannot carry exactly."""


EVENTS = _Table("events", EventRow, "seq")
JOBS = _Table("jobs", JobView, "job_id")
NODES = _Table("nodes", NodeView, "node_id")
PIPELINES = _Table("pipelines", PipelineView, "pipeline_id", exclude=("steps",))
PIPELINE_STEPS = _Table("pipeline_steps", StepView, ("pipeline_id", "step_id"))


# Read models derived from the tables; recreated at every start, so they follow the code.
VIEWS = (
    """CREATE OR REPLACE VIEW job_tests AS
    SELECT job_id, t.n, t.r->>'type' AS type, (t.r->>'passed')::BOOLEAN AS passed,
           t.r->>'expected' AS expected, t.r->>'actual' AS actual, t.r->>'message' AS message
    FROM jobs, LATERAL (
        SELECT unnest(generate_series(1, json_array_length(test_results)::BIGINT)) AS n,
               unnest(json_extract(test_results, '$[*]')) AS r
    ) t""",
)


class DuckDBStore:
    """Owns one DuckDB file. Not thread-safe for writes; queries use their own cursor."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = str(path)
        try:
            # No external access: `nexus sql` must not read or write files on the orchestrator's host.
            self.con = duckdb.connect(self.path, read_only=read_only, config={"enable_external_access": False})
        except duckdb.IOException as exc:
            raise QueryError(f"cannot open {self.path}: {exc}") from None
        self.con.execute("SET TimeZone='UTC'")
        self.con.execute(_NO_PROGRESS_BAR)
        # Who signs the file's end (`head`) as rows are stored: (key, sign), set by the projection
        # that writes (a signing identity's key and its copy signature); None: the head stays unsigned.
        self.head_signer: tuple[str, Callable[[bytes], str]] | None = None
        if not read_only:
            self._migrate()

    def _migrate(self) -> None:
        for table in (EVENTS, JOBS, NODES, PIPELINES, PIPELINE_STEPS):
            added = table.migrate(self.con)
            if table is JOBS and "requester_role" in added:
                # A file from before the columns: who made each job's request is in the row of the
                # request that counted (pipeline steps under way go on counting the orchestrator's).
                self.con.execute(
                    "UPDATE jobs SET requester = e.author, requester_role = e.author_role FROM events e "
                    "WHERE e.job_id = jobs.job_id AND e.type = 'job.requested' AND e.error IS NULL"
                )
        self.con.execute("CREATE TABLE IF NOT EXISTS checkpoint (name VARCHAR PRIMARY KEY, seq BIGINT NOT NULL)")
        # The identities that signed rows' copies in this file (events.copy_signer): their user JWTs.
        self.con.execute("CREATE TABLE IF NOT EXISTS copy_signers (key VARCHAR PRIMARY KEY, jwt VARCHAR NOT NULL)")
        # The file's end as its writer signed it (core.audit.head_statement): one row, moved with the rows.
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS head (name VARCHAR PRIMARY KEY, seq BIGINT NOT NULL, chain VARCHAR NOT NULL, "
            "signer VARCHAR NOT NULL, signature VARCHAR NOT NULL)"
        )
        for statement in view_ddl():  # metrics_*: the API's per-phase metrics as views (CREATE OR REPLACE)
            self.con.execute(statement)
        for view in VIEWS:
            self.con.execute(view)

    def close(self) -> None:
        self.con.close()

    def checkpoint(self) -> int:
        row = self.con.execute("SELECT seq FROM checkpoint WHERE name = ?", [CHECKPOINT]).fetchone()
        return int(row[0]) if row else 0

    def announcements(self, upto_seq: int) -> list[Record]:
        """The identity announcements applied so far (trust.announced rows that counted), as
        records again: a restarted projection learns from them who signs."""
        rows = self.con.execute(
            "SELECT seq, subject, ts, payload, signer, signature FROM events "
            "WHERE type = 'trust.announced' AND error IS NULL AND seq <= ? ORDER BY seq",
            [upto_seq],
        ).fetchall()
        found = []
        for seq, subject, ts, payload, signer, signature in rows:
            raw = payload.encode()
            try:
                event = codec.decode(subject, raw)
            except DecodeError:
                continue
            found.append(Record(seq=seq, subject=subject, stream_ts=ts, raw=raw, event=event, signer=signer, signature=signature))
        return found

    def add_copy_signer(self, key: str, jwt: str) -> None:
        """Keep the user JWT of an identity that signs rows' copies here (core.audit.copy_statement),
        so that an audit of the file alone learns whom the account issued that key to."""
        self.con.execute("INSERT OR REPLACE INTO copy_signers VALUES (?, ?)", [key, jwt])

    def head(self) -> tuple[int, str, str, str] | None:
        """(seq, chain, signer, signature) of the file's signed end; None: never signed (no signing
        writer, or a file from before heads were signed)."""
        if not self.con.execute("SELECT 1 FROM information_schema.tables WHERE table_name = 'head'").fetchall():
            return None
        row = self.con.execute("SELECT seq, chain, signer, signature FROM head WHERE name = ?", [CHECKPOINT]).fetchone()
        return (int(row[0]), str(row[1]), str(row[2]), str(row[3])) if row else None

    def copy_signers(self) -> list[tuple[str, str]]:
        """(key, user JWT) of every identity that signed copies here; none in a file from before copies were signed."""
        if not self.con.execute("SELECT 1 FROM information_schema.tables WHERE table_name = 'copy_signers'").fetchall():
            return []
        return [(str(k), str(j)) for k, j in self.con.execute("SELECT key, jwt FROM copy_signers ORDER BY key").fetchall()]

    def chain_at(self, seq: int) -> str | None:
        """The log's hash chain value stored with row `seq` (GENESIS before the first row; None:
        a row written before the chain existed)."""
        if seq == 0:
            return GENESIS
        row = self.con.execute("SELECT chain FROM events WHERE seq = ?", [seq]).fetchone()
        return str(row[0]) if row and row[0] is not None else None

    def write_batch(
        self,
        rows: Sequence[EventRow],
        jobs: Iterable[JobView],
        nodes: Iterable[NodeView],
        last_seq: int,
        pipelines: Iterable[PipelineView] = (),
    ) -> None:
        """Store one batch and move the checkpoint, atomically."""
        con = self.con
        pipelines = list(pipelines)
        con.execute("BEGIN TRANSACTION")
        try:
            EVENTS.upsert(con, rows, replace=False)
            JOBS.upsert(con, list(jobs))
            NODES.upsert(con, list(nodes))
            PIPELINES.upsert(con, pipelines)
            PIPELINE_STEPS.upsert(con, [s for p in pipelines for s in p.steps])
            # An UPDATE costs less than INSERT OR REPLACE; the row is made once, by the first batch.
            updated = con.execute("UPDATE checkpoint SET seq = ? WHERE name = ?", [last_seq, CHECKPOINT]).fetchone()
            if not (updated and updated[0]):
                con.execute("INSERT INTO checkpoint VALUES (?, ?)", [CHECKPOINT, last_seq])
            if self.head_signer is not None and rows and (chain := rows[-1].chain) is not None:
                key, sign = self.head_signer  # the last row stored, signed: the file's end
                signature = sign(head_statement(rows[-1].seq, chain))
                con.execute("INSERT OR REPLACE INTO head VALUES (?, ?, ?, ?, ?)", [CHECKPOINT, rows[-1].seq, chain, key, signature])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def load_jobs(self, job_ids: Iterable[str]) -> dict[str, JobView]:
        ids = list(job_ids)
        if not ids:
            return {}
        cur = self.con.execute("SELECT * FROM jobs WHERE job_id IN (SELECT unnest(?::VARCHAR[]))", [ids])
        return self._views(cur, JOBS)

    def active_jobs(self, terminal: Iterable[str]) -> dict[str, JobView]:
        cur = self.con.execute("SELECT * FROM jobs WHERE status NOT IN (SELECT unnest(?::VARCHAR[]))", [list(terminal)])
        return self._views(cur, JOBS)

    def load_pipelines(self, ids: Iterable[str] | None = None, *, running_only: bool = False) -> dict[str, PipelineView]:
        """Pipeline views with their steps; all running ones, or the given ids."""
        if ids is not None:
            cur = self.con.execute("SELECT * FROM pipelines WHERE pipeline_id IN (SELECT unnest(?::VARCHAR[]))", [list(ids)])
        else:
            where = "WHERE status IN ('running', 'rolling_back')" if running_only else ""
            cur = self.con.execute(f"SELECT * FROM pipelines {where}")
        names = [d[0] for d in cur.description or []]
        heads = [dict(zip(names, values, strict=True)) for values in cur.fetchall()]
        if not heads:
            return {}
        steps_cur = self.con.execute(
            "SELECT * FROM pipeline_steps WHERE pipeline_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY pipeline_id, position",
            [[h["pipeline_id"] for h in heads]],
        )
        step_names = [d[0] for d in steps_cur.description or []]
        steps: dict[str, list[StepView]] = {}
        for values in steps_cur.fetchall():
            step = PIPELINE_STEPS.decode(step_names, values)
            steps.setdefault(step.pipeline_id, []).append(step)
        out = {}
        for head in heads:
            view = PIPELINES.decode(list(head), list(head.values()), extra={"steps": []})
            out[view.pipeline_id] = msgspec.structs.replace(view, steps=steps.get(view.pipeline_id, []))
        return out

    def all_nodes(self) -> dict[str, NodeView]:
        return self._views(self.con.execute("SELECT * FROM nodes"), NODES)

    @staticmethod
    def _views(cur: duckdb.DuckDBPyConnection, table: _Table) -> dict[str, Any]:
        names = [d[0] for d in cur.description or []]
        out = {}
        for values in cur.fetchall():
            view = table.decode(names, values)
            out[getattr(view, table.key[0])] = view
        return out

    def query(self, sql: str, params: Sequence[Any] = (), *, timeout_s: float | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run read-only SQL (see `run_query`; default timeout QUERY_TIMEOUT_S); anything else is refused."""
        return run_query(self.con, sql, params, timeout_s=QUERY_TIMEOUT_S if timeout_s is None else timeout_s)


# ---------------------------------------------------------------- read-only queries
#
# `nexus sql` and the query responder run user SQL on the orchestrator's database. Three
# layers keep it read-only, so one gap is not a hole: the text must be one SELECT, or
# EXPLAIN [ANALYZE] of one SELECT (rebuilt from the checked text, not run as given); its
# syntax tree (json_serialize_sql, which serializes SELECTs only) may call only table
# functions without side effects; and it runs in a READ ONLY transaction, rolled back.

QUERY_TIMEOUT_S = 5.0
"""Longest a query may run. Below the client's 10 s request timeout, so the caller hears why."""
QUERY_MAX_ROWS = 100_000
"""Most rows a query may return: more would not fit in a reply and would only fill memory."""
_FETCH_BATCH = 1000  # rows converted per GIL hold, so the timeout timer gets to run

# Table functions a query may read from. Everything else is refused: checkpoint(),
# enable_logging(), enable_profiling() change the database or the process; query('...')
# would hide SQL from this check; arrow_scan() and friends take raw pointers.
_TABLE_FUNCTIONS = frozenset({
    "range", "generate_series", "unnest", "repeat", "repeat_row", "json_each", "json_tree",
    "histogram", "histogram_values", "pragma_table_info", "pragma_version", "pragma_database_size",
    "duckdb_columns", "duckdb_constraints", "duckdb_databases", "duckdb_dependencies", "duckdb_functions",
    "duckdb_indexes", "duckdb_keywords", "duckdb_schemas", "duckdb_settings", "duckdb_tables",
    "duckdb_types", "duckdb_views",
})  # fmt: skip
_WRITING_FUNCTIONS = frozenset({"nextval", "setval", "setseed", "write_log"})  # scalars that change state
_WORD = re.compile(r"[A-Za-z_]*")


def run_query(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: Sequence[Any] = (),
    *,
    timeout_s: float = QUERY_TIMEOUT_S,
    max_rows: int = QUERY_MAX_ROWS,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read-only query (see above) on `con`; raises QueryError when refused,
    failed, slower than `timeout_s` or larger than `max_rows`. Safe to call in a thread
    with a cursor of its own."""
    text = _read_only_text(con, sql)
    if con.execute("SELECT current_setting('enable_progress_bar')").fetchone() != (False,):
        con.execute(_NO_PROGRESS_BAR)  # a cursor of its own: DuckDB's default depends on the terminal
    con.execute("BEGIN TRANSACTION READ ONLY")
    try:
        with _Deadline(con, timeout_s) as deadline:
            try:
                cur = con.execute(text, list(params))
                names = [d[0] for d in cur.description or []]
                rows: list[tuple[Any, ...]] = []
                while batch := cur.fetchmany(_FETCH_BATCH):
                    rows.extend(batch)
                    if len(rows) > max_rows:
                        raise QueryError(f"the query returns more than {max_rows} rows: add a LIMIT or aggregate")
                return names, rows
            except duckdb.InterruptException:
                raise QueryError(f"query took longer than {timeout_s:g}s" if deadline.expired else "query interrupted") from None
            except duckdb.Error as exc:
                raise QueryError(str(exc).splitlines()[0]) from None
    finally:
        con.execute("ROLLBACK")


_NO_PROGRESS_BAR = "SET enable_progress_bar = false"
"""A slow query must not draw on the orchestrator's terminal."""


class _Deadline:
    """Interrupts `con` when the query outlives `timeout_s`; never after the block is left."""

    def __init__(self, con: duckdb.DuckDBPyConnection, timeout_s: float) -> None:
        self._con = con
        self._lock = threading.Lock()
        self._running = False
        self.expired = False
        self._timer = threading.Timer(timeout_s, self._expire)
        self._timer.daemon = True

    def _expire(self) -> None:
        with self._lock:
            if self._running:
                self.expired = True
                self._con.interrupt()

    def __enter__(self) -> _Deadline:
        self._running = True
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._running = False
        self._timer.cancel()


def _read_only_text(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    """The statement to run for `sql`, once it is known to only read."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(str(exc).splitlines()[0]) from None
    if len(statements) != 1:
        raise QueryError("give exactly one SQL statement")
    kind = statements[0].type
    if kind == duckdb.StatementType.SELECT:
        _check_select(con, sql)
        return sql
    if kind == duckdb.StatementType.EXPLAIN:
        prefix, explained = _split_explain(statements[0].query)
        _check_select(con, explained)
        return prefix + explained
    raise QueryError(f"only SELECT queries are allowed here, not {kind.name}")


def _split_explain(text: str) -> tuple[str, str]:
    """`EXPLAIN [ANALYZE] stmt` -> ("EXPLAIN [ANALYZE] ", "stmt"), by DuckDB's own tokens."""
    starts = [pos for pos, kind in duckdb.tokenize(text) if kind != duckdb.token_type.comment][:3]
    words = [m.group(0).upper() if (m := _WORD.match(text, pos)) else "" for pos in starts]
    analyze = len(words) > 1 and words[1] in ("ANALYZE", "ANALYSE")
    first = 2 if analyze else 1
    if len(starts) <= first or not words[first]:
        raise QueryError("only EXPLAIN SELECT ... or EXPLAIN ANALYZE SELECT ... is allowed here (no options)")
    return ("EXPLAIN ANALYZE " if analyze else "EXPLAIN "), text[starts[first] :]


def _check_select(con: duckdb.DuckDBPyConnection, text: str) -> None:
    """Refuse `text` unless it is one SELECT that calls nothing with side effects."""
    row = con.execute("SELECT json_serialize_sql(?::VARCHAR)", [text]).fetchone()
    try:
        tree: dict[str, Any] = json.loads(row[0]) if row else {"error": True}
    except RecursionError:
        raise QueryError("the query is nested too deeply") from None
    if tree.get("error"):
        raise QueryError(f"only SELECT queries are allowed here ({tree.get('error_message', 'not a SELECT')})")
    if len(tree.get("statements", ())) != 1:
        raise QueryError("give exactly one SQL statement")
    pending: list[Any] = [tree["statements"]]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            if node.get("type") == "TABLE_FUNCTION":
                name = str(node.get("function", {}).get("function_name", "")).lower()
                if name not in _TABLE_FUNCTIONS:
                    raise QueryError(f"the table function {name}() is not allowed in a query")
            elif node.get("class") == "FUNCTION" and str(node.get("function_name", "")).lower() in _WRITING_FUNCTIONS:
                raise QueryError(f"the function {node['function_name']}() changes state and is not allowed in a query")
            pending.extend(node.values())
