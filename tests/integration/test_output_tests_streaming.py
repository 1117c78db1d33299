"""Output tests on a real job: judged while streaming the stored output, with RE2.

The matcher's memory bound is proven in tests/unit/test_output_matcher.py; what the bus
buffers while reading the stored output is bus.output_chunks's to bound."""

from __future__ import annotations

from orchestrator.client import new_job_id
from schemas.events import JobRequested
from schemas.values import OutputContainsTest
from tests.conftest import Stack

MiB = 1024 * 1024


async def test_a_large_output_is_read_to_its_end_and_a_catastrophic_pattern_does_not_stall(stack: Stack) -> None:
    # 48 MiB of near misses for (a+)+$, then the line the test looks for.
    line = "a" * 63 + "!"
    command = f"yes '{line}' | head -n {48 * MiB // 65}; echo 'THE END'"
    tests = [
        OutputContainsTest(pattern=r"^THE END$"),
        OutputContainsTest(pattern=r"(a+)+$", negate=True),
        OutputContainsTest(pattern="ERROR", negate=True),
    ]
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command=command, tests=tests))
    row = await stack.wait_job(job_id, timeout=120)
    assert row["status"] == "succeeded", row["reason"]
    results = (await stack.client.query("SELECT passed, actual FROM job_tests WHERE job_id = ? ORDER BY n", [job_id])).rows
    assert results[0] == [True, "matched 'THE END'"]
    assert [r[0] for r in results] == [True, True, True]
    assert int(results[1][1].split()[3]) > 48 * MiB - 100  # "no match in N characters": all of it was read


async def test_a_pattern_re2_cannot_run_rejects_the_job_with_the_reason_before_it_runs(stack: Stack) -> None:
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(command="echo ok ok", tests=[OutputContainsTest(pattern=r"(ok) \1")]))
    row = await stack.wait_job(job_id)
    assert (row["status"], row["attempt"]) == ("rejected", 0)
    assert "backreferences are not supported" in row["reason"]
