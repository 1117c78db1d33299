"""Rows of the read model as people and programs get them: JSON columns decoded, in one place.

The state answers over the query channel as rows of DuckDB values, JSON columns
as text. Which columns are JSON follows from the read-model Structs the store
lays out (`store._column_type`: scalars, Literals and enums are plain columns,
the rest is JSON), so a column added to a view is decoded here without a list
to keep up to date.
"""

from __future__ import annotations

import enum
import types
import typing
from datetime import datetime
from typing import Any

import msgspec

from orchestrator.core.pipeline_views import PipelineView, StepView
from orchestrator.core.views import JobView, NodeView

_SCALARS = (int, str, float, bool, datetime)


def _is_json(tp: Any) -> bool:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:  # `X | None`
        (tp,) = (a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is typing.Literal or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
        return False
    return tp not in _SCALARS


def json_columns(*views: type[msgspec.Struct]) -> frozenset[str]:
    return frozenset(
        f.name for view in views for f in msgspec.structs.fields(view) if _is_json(typing.get_type_hints(view)[f.name])
    )


JSON_COLUMNS = json_columns(JobView, NodeView, PipelineView, StepView)

JOB_HIDDEN = frozenset({"env", "instance", "placement", "checks", "retest", "retest_job", "retest_by", "test_requests", "cancel_sent"})
"""Fields of a job's view that no surface shows: `env` (it may hold secrets) and the orchestrator's own bookkeeping."""
JOB_SHOWN = tuple(f.name for f in msgspec.structs.fields(JobView) if f.name not in JOB_HIDDEN)
"""A job's state as every surface shows it (`GET /api/v1/jobs/:id`, `nexus show`)."""


def decoded(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its JSON columns (text from DuckDB) as values."""
    return {k: (msgspec.json.decode(v) if k in JSON_COLUMNS and isinstance(v, str) else v) for k, v in row.items()}
