"""The orchestrator's query responder (`nexus sql`, `nexus show`, the API) only reads, and only for so long."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.client import new_job_id
from orchestrator.errors import QueryError
from orchestrator.store import QUERY_TIMEOUT_S
from schemas.events import JobRequested
from tests.conftest import Stack

SLOW = "SELECT count(*) FROM range(1000000) a(i), range(1000000) b(j) WHERE (i * j) % 7 = 3"  # minutes of work

STATE = "SELECT (SELECT list(j ORDER BY job_id) FROM jobs j), (SELECT count(*) FROM events), (SELECT list(c) FROM checkpoint c)"


async def test_writes_through_the_responder_are_refused_and_change_nothing(stack: Stack) -> None:
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command="echo hi"))
    await stack.wait_job(job_id)
    before = (await stack.client.query(STATE)).rows
    for sql in (
        f"EXPLAIN ANALYZE UPDATE jobs SET status = 'hacked' WHERE job_id = '{job_id}'",
        "EXPLAIN ANALYZE DELETE FROM events",
        "EXPLAIN ANALYZE INSERT INTO checkpoint VALUES ('x', 1)",
        "EXPLAIN ANALYZE CREATE VIEW jobs2 AS SELECT 1",
        "EXPLAIN ANALYZE SET threads = 1",
        "SELECT 1; DELETE FROM jobs",
        "SELECT * FROM enable_profiling()",
        "CALL checkpoint()",
        "PRAGMA enable_profiling",
    ):
        with pytest.raises(QueryError):
            await stack.client.query(sql)
    assert (await stack.client.query(STATE)).rows == before
    row = await stack.job(job_id)
    assert row is not None and row["status"] == "succeeded"


async def test_a_slow_query_is_stopped_and_other_queries_are_answered_meanwhile(stack: Stack) -> None:
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command="true"))
    await stack.wait_job(job_id)
    slow = asyncio.create_task(stack.client.query(SLOW))
    show = asyncio.create_task(stack.job(job_id))  # what `nexus show` asks, queued behind the slow one
    with pytest.raises(QueryError, match=rf"^query took longer than {QUERY_TIMEOUT_S:g}s$"):
        await slow  # the orchestrator's own answer (the client's 10 s timeout says otherwise), minutes before SLOW ends
    row = await show
    assert row is not None and row["job_id"] == job_id
    assert (await stack.client.query("SELECT 42")).rows == [[42]]
