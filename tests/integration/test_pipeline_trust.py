"""Pipelines on a bus with credentials, attacked the way a submitter with network access would:
with plain nats-py (a core-NATS publish, unsigned), against a real `nexus up`.

- A step's job id is the idempotency key of its request, so a submitter who publishes a request
  under it first holds it (the orchestrator's own is dropped as a duplicate). The step must
  never count that job: it fails, visibly, gate or no gate.
- A pipeline the orchestrator cannot run (a step that needs itself, a cycle, a payload that does
  not decode) is rejected with the reason, as `nexus pipeline run` refuses the same template.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.conftest import wait_for
from tests.integration.test_bus_auth import Up, connect, up  # noqa: F401  (`up`: the stack fixture)

pytestmark = pytest.mark.timeout(180)


class Log:
    """Every event the log gets, as (subject, payload), read live as admin."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any] | None]] = []

    def has(self, subject: str) -> bool:
        """An event on `subject`, or on it with a node after it (`...started.<node>`)."""
        return any(s == subject or s.startswith(subject + ".") for s, _ in self.seen)


@contextlib.asynccontextmanager
async def watching(stack: Up) -> AsyncIterator[Log]:
    log = Log()
    nc = await connect(stack, stack.creds / "admin.creds")
    sub = await nc.jetstream().subscribe("nexus.evt.>", ordered_consumer=True)

    async def read() -> None:
        async for msg in sub.messages:
            try:
                payload = json.loads(msg.data)
            except ValueError:
                payload = None
            log.seen.append((msg.subject, payload if isinstance(payload, dict) else None))

    task = asyncio.create_task(read())
    try:
        yield log
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await nc.close()


async def publish_as_submitter(stack: Up, subject: str, payload: bytes) -> None:
    """A plain core-NATS publish (no JetStream ack, no Nexus signature) with the submitter's credentials."""
    nc = await connect(stack, stack.creds / "submitter.creds")
    try:
        await nc.publish(subject, payload)
        await nc.flush(timeout=10)
        assert nc.last_error is None, nc.last_error
    finally:
        await nc.close()


async def show(stack: Up, pipeline_id: str) -> dict[str, Any]:
    code, out = await stack.nexus("pipeline", "show", pipeline_id, "--json")
    assert code == 0, out
    shown: dict[str, Any] = json.loads(out)
    return shown


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "behind-an-approval-gate"])
async def test_a_submitter_cannot_take_over_a_pipeline_step(up: Up, tmp_path: Path, gated: bool) -> None:  # noqa: F811
    go, legit = tmp_path / "go", tmp_path / "legit"
    pid = f"hijack-{uuid.uuid4().hex[:8]}"
    (tmp_path / "p.yaml").write_text(f"""
name: hijack
steps:
  - id: a
    command: while [ ! -e {go} ]; do sleep 0.1; done
  - id: b
    command: touch {legit} && echo legit
    approval: {str(gated).lower()}
""")
    async with watching(up) as log:
        code, out = await up.nexus("pipeline", "run", str(tmp_path / "p.yaml"), "--id", pid, "--detach", creds=up.creds / "submitter.creds")
        assert code == 0, out
        await wait_for(lambda: log.has(f"nexus.evt.job.{pid}-s0-0.started"), 60, what="step a to run")
        # Step b's job id, guessed, published first: the request the red team sent.
        hijacked = f"{pid}-s1-0"
        await publish_as_submitter(up, f"nexus.evt.job.{hijacked}.requested", b'{"command": "echo HIJACKED"}')
        # It is a submitter's job like any other: it runs (before anyone approved the gated step).
        await wait_for(lambda: log.has(f"nexus.evt.job.{hijacked}.succeeded"), 60, what="the foreign job to end")
        go.touch()
        if gated:
            await wait_for(lambda: log.has(f"nexus.evt.pipeline.{pid}.approval_required"), 60, what="step b's gate")
            code, out = await up.nexus("approve", pid, "b")
            assert code == 0, out
        ended = await wait_for(
            lambda: next((k for k in ("succeeded", "failed") if log.has(f"nexus.evt.pipeline.{pid}.{k}")), None),
            60,
            what="the pipeline to end",
        )
    assert ended == "failed"
    body = await show(up, pid)
    assert body["status"] == "failed"
    a, b = body["steps"]
    assert (a["status"], b["status"]) == ("succeeded", "failed")
    assert "not by the orchestrator" in b["reason"] and hijacked in b["reason"], b["reason"]
    # The orchestrator's own request was the duplicate: the step's command never ran under that id.
    assert not legit.exists()
    # Nothing forged: the foreign request is an authentic submitter's request that counted for nothing.
    code, out = await up.nexus("audit", "verify")
    assert code == 0, out


async def test_a_pipeline_the_orchestrator_cannot_run_is_rejected_with_the_reason(up: Up) -> None:  # noqa: F811
    token = uuid.uuid4().hex[:8]
    itself, cycle, bad = f"pself-{token}", f"pcycle-{token}", f"pbad-{token}"
    specs = {
        itself: [{"id": "a", "command": "true", "needs": ["a"]}],
        cycle: [{"id": "c", "command": "true", "needs": []}, {"id": "a", "command": "true", "needs": ["b"]},
                {"id": "b", "command": "true", "needs": ["a"]}],
    }  # fmt: skip
    # A client following the malformed one learns that it failed.
    follower = await connect(up, up.creds / "submitter.creds")
    sub = await follower.jetstream().subscribe(f"nexus.evt.pipeline.{bad}.>", ordered_consumer=True)
    try:
        async with watching(up) as log:
            for pid, steps in specs.items():
                payload = {"type": "pipeline.requested", "spec": {"name": pid, "steps": steps}}
                await publish_as_submitter(up, f"nexus.evt.pipeline.{pid}.requested", json.dumps(payload).encode())
            await publish_as_submitter(up, f"nexus.evt.pipeline.{bad}.requested", b"garbage")
            for pid in (itself, cycle, bad):
                await wait_for(lambda pid=pid: log.has(f"nexus.evt.pipeline.{pid}.rejected"), 60, what=f"{pid} rejected")
            # Nothing of them ran: no step job was ever requested.
            assert not [s for s, _ in log.seen if s.startswith("nexus.evt.job.p")]
        kinds = []
        with contextlib.suppress(nats.errors.TimeoutError):
            while "rejected" not in kinds:
                kinds.append((await sub.next_msg(timeout=30)).subject.rsplit(".", 1)[1])
        assert kinds == ["requested", "rejected"]
    finally:
        await follower.close()
    said = {pid: await show(up, pid) for pid in (itself, cycle, bad)}
    assert {pid: body["status"] for pid, body in said.items()} == dict.fromkeys(said, "rejected")
    assert "step a: needs: step 'a' needs itself" in said[itself]["reason"]
    assert "dependency cycle: a -> b -> a" in said[cycle]["reason"]
    assert "payload does not decode" in said[bad]["reason"]
