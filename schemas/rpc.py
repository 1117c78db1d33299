"""Request/reply messages between the CLI (or any client) and the orchestrator.

Served on core NATS subject `nexus.rpc.query` (queue group `nexus-orchestrator`).
"""

from __future__ import annotations

from typing import Any

import msgspec


class QueryRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One read-only SQL statement against the orchestrator's DuckDB state. `in_parts`: the
    asker takes an answer too big for one message in several (clients from before it do not)."""

    sql: str
    params: list[Any] = []
    in_parts: bool = False


class QueryResult(msgspec.Struct, frozen=True, kw_only=True):
    """The answer, or one part of it (`part` of `parts`, from 1; the rows of all parts in order
    are the result; `columns` and `checkpoint` are in each)."""

    columns: list[str] = []
    rows: list[list[Any]] = []
    error: str | None = None
    checkpoint: int = 0
    part: int = 1
    parts: int = 1
