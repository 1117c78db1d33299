"""A node keeps at most `--output-max-mb` of each job's output (agent.pty_output.OutputBudget):
one runaway job cannot push everyone's older output out of NEXUS_OUTPUT. The job runs on to its
end (its output is still read, so it never blocks on a full terminal), what is stored is the
byte-exact start of its output, and `exited.output_dropped` says how much more was printed;
`nexus run` and `nexus logs` say so on stderr. Real PTYs and pipes, a real nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.client import new_job_id
from schemas.events import JobExited, JobRequested
from tests.conftest import Stack, wait_for

BIN = Path(sys.executable).parent
LIMIT = 100_000
# 256,000 bytes, every byte value, in one write per 256: more than LIMIT.
PRINTS = "import os\nfor i in range(1000):\n    os.write(1, bytes(range(256)))\n"
PRINTED = bytes(range(256)) * 1000


async def _stored(stack: Stack, job_id: str) -> dict[str, bytes]:
    found = {"stdout": b"", "stderr": b""}
    async for chunk in stack.client.bus.output_chunks(job_id):
        found[chunk.stream] += chunk.data
    return found


async def _submit(stack: Stack, command: str, node: str, **fields: object) -> str:
    job_id = new_job_id()
    await stack.client.submit(job_id, JobRequested(ts=datetime.now(UTC), command=command, node=node, **fields))  # type: ignore[arg-type]
    return job_id


async def _exited(stack: Stack, job_id: str) -> JobExited:
    found = [r.event for r in await stack.client.history(job_id) if isinstance(r.event, JobExited)]
    assert len(found) == 1, found
    return found[0]


async def test_a_pty_job_keeps_the_first_bytes_and_says_how_many_more_it_printed(stack: Stack) -> None:
    await stack.start_agent("capped", output_max=LIMIT)
    job_id = await _submit(stack, shlex.join(["python3", "-c", PRINTS]), "capped")
    row = await stack.wait_job(job_id)
    assert row["status"] == "succeeded", row
    assert (await _stored(stack, job_id))["stdout"] == PRINTED[:LIMIT]
    assert (row["output_bytes"], row["output_dropped"]) == (LIMIT, len(PRINTED) - LIMIT)
    exited = await _exited(stack, job_id)
    assert (exited.output_bytes, exited.output_dropped) == (LIMIT, len(PRINTED) - LIMIT)


async def test_a_job_that_prints_far_past_the_limit_runs_to_its_end(stack: Stack) -> None:
    # 64 MiB into a 100 kB budget: read and dropped as fast as it comes; it never blocks on the terminal.
    await stack.start_agent("capped", output_max=LIMIT)
    job_id = await _submit(stack, "head -c 67108864 /dev/zero; echo done >&2; exit 3", "capped")
    row = await stack.wait_job(job_id, timeout=60)
    assert (row["status"], row["exit_code"]) == ("failed", 3), row
    assert row["output_bytes"] == LIMIT
    assert row["output_dropped"] == 64 * 1024 * 1024 + len(b"done\n") - LIMIT


async def test_both_streams_of_a_tty_false_job_share_the_one_limit(stack: Stack) -> None:
    await stack.start_agent("capped", output_max=LIMIT)
    both = "import os\nfor i in range(300):\n    os.write(1, b'o' * 250)\n    os.write(2, b'e' * 250)\n"  # 75,000 each
    job_id = await _submit(stack, shlex.join(["python3", "-c", both]), "capped", tty=False)
    row = await stack.wait_job(job_id)
    assert row["status"] == "succeeded", row
    stored = await _stored(stack, job_id)
    assert len(stored["stdout"]) + len(stored["stderr"]) == LIMIT
    assert stored["stdout"] == b"o" * len(stored["stdout"]) and stored["stderr"] == b"e" * len(stored["stderr"])  # each a prefix
    assert (row["output_bytes"], row["output_dropped"]) == (LIMIT, 150_000 - LIMIT)


async def test_nexus_run_and_logs_say_what_was_dropped(stack: Stack) -> None:
    await stack.start_agent("capped", output_max=LIMIT)
    code, out, err = await stack.nexus("run", "--id", "capped-run", "--node", "capped", "-q", "--", shlex.join(["python3", "-c", PRINTS]))
    assert code == 0, err
    assert out == PRINTED[:LIMIT]
    assert b"only the first 100,000 bytes of its output were kept; 156,000 more were printed" in err, err
    code, out, err = await stack.nexus("logs", "--raw", "capped-run")
    assert code == 0 and out == PRINTED[:LIMIT]
    assert b"156,000 more were printed past its node's limit" in err, err
    code, out, err = await stack.nexus("logs", "--json", "capped-run")
    assert code == 0 and json.loads(out)["output_dropped"] == 156_000, out
    # Under the limit nothing is said.
    code, out, err = await stack.nexus("run", "--node", "capped", "-q", "--", "echo small")
    assert (code, out, err) == (0, b"small\n", b""), err


async def test_the_limit_is_the_agents_flag_through_nexus_agent(stack: Stack) -> None:
    # `nexus agent` hands --output-max-mb to the agent-only program it becomes.
    env = {**os.environ, "NEXUS_NATS_URL": stack.url}
    agent = await asyncio.create_subprocess_exec(
        BIN / "nexus", "agent", "--node", "flagged", "--heartbeat", "0.5", "--log-level", "warning", "--output-max-mb", "0.05",
        "--state-dir", str(stack.tmp / "flagged"), env=env, cwd=stack.tmp,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_for(lambda: "flagged" in stack.orchestrator.nodes or agent.returncode is not None, what="the agent registered")
        job_id = await _submit(stack, shlex.join(["python3", "-c", PRINTS]), "flagged")
        row = await stack.wait_job(job_id)
        kept = int(0.05 * 1024 * 1024)
        assert (row["status"], row["output_bytes"], row["output_dropped"]) == ("succeeded", kept, len(PRINTED) - kept), row
    finally:
        agent.terminate()
        await agent.wait()


async def test_a_bad_limit_is_a_usage_error(stack: Stack) -> None:
    for args in (("nexus", "agent"), ("nexus-agent",)):
        proc = await asyncio.create_subprocess_exec(
            BIN / args[0], *args[1:], "--node", "x", "--output-max-mb", "-1", "--nats", stack.url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=stack.tmp,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 2 and b"--output-max-mb" in err, (args, err)
