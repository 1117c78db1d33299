"""Request/reply messages between the CLI (or any client) and the orchestrator.

Served on core NATS subject `nexus.rpc.query` (queue group `nexus-orchestrator`).
"""

from __future__ import annotations

from typing import Any

import msgspec


class QueryRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One read-only SQL statement against the orchestrator's DuckDB state."""

    sql: str
    params: list[Any] = []


class QueryResult(msgspec.Struct, frozen=True, kw_only=True):
    columns: list[str] = []
    rows: list[list[Any]] = []
    error: str | None = None
    checkpoint: int = 0
