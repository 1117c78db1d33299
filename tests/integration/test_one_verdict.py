"""One verdict (issue 11 item 5): the orchestrator, `nexus validate` and the API's validate agree.

The same jobs go to all three, under the same policy file, for the same user, against a
real nats-server with two agents (`node-1`, unlabelled, and `prod-1`, `env=prod`): the
orchestrator's answer is read from the job's events (`validated` / `approval_required` /
`rejected`), the CLI's from `nexus validate --json`, the API's from its validate route.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from bus.nats_bus import NatsBus
from orchestrator.config import load_policy
from orchestrator.service import Orchestrator
from orchestrator.store import DuckDBStore
from schemas.events import JobApprovalRequired, JobRejected, JobValidated
from tests.conftest import Stack, wait_for
from tests.integration.api_support import serve_api

POLICY = """\
users:
  alice: [operator]
deny:
  - pattern: '^mkfs'
    reason: no filesystems made by jobs
"""
TOKENS = {"alice": "alice-token-0123456789", "mallory": "mallory-token-0123456789"}
TOKEN_FILE = "".join(f'[[token]]\nuser = "{u}"\nrole = "operator"\ntoken = "{t}"\n\n' for u, t in TOKENS.items())

# (name, user, job fields): the cases the issue names, and a harmless control.
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("prod selector only", "alice", {"command": "rm -rf /srv/old-release", "labels": {"env": "prod"}}),
    ("named prod node", "alice", {"command": "rm -rf /srv/old-release", "nodeId": "prod-1"}),
    ("critical on a non-production node", "alice", {"command": "rm -rf /srv/old-release", "nodeId": "node-1"}),
    ("the command in env", "alice", {"command": "$CMD", "env": {"CMD": "shutdown -h now"}, "nodeId": "node-1"}),
    ("a destructive test command", "alice", {"command": "echo hi", "tests": [{"type": "command", "command": "rm -rf /etc"}]}),
    ("deny-listed", "alice", {"command": "mkfs.ext4 /dev/sdz9", "nodeId": "node-1"}),
    ("unknown user", "mallory", {"command": "echo hi", "nodeId": "node-1"}),
    ("harmless", "alice", {"command": "echo fine", "nodeId": "node-1"}),
]


def _api(stack: Stack, token_file: Path, policy_file: Path) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
    return serve_api(stack.client, token_file, load_policy(policy_file))


async def _orchestrator_with(stack: Stack, policy_file: Path) -> None:
    await stack.stop_orchestrator()
    bus = await NatsBus.connect(stack.url, name="test-orchestrator", daemon=True)
    store = DuckDBStore(stack.db)
    orch = Orchestrator(bus, store, node_ttl_s=5.0, policy=load_policy(policy_file))
    task = asyncio.create_task(orch.run())
    stack.orchestrators.append((orch, task, bus, store))
    await wait_for(lambda: orch.caught_up.is_set() or task.done(), what="orchestrator caught up")


async def _orchestrators_answer(stack: Stack, job_id: str) -> dict[str, Any]:
    """What phase 1 decided for the job, read from its events once it decided."""

    async def decided() -> dict[str, Any] | None:
        events = [r.event for r in await stack.client.history(job_id)]
        rejected = next((e for e in events if isinstance(e, JobRejected)), None)
        if rejected is not None:
            return {"denied": rejected.reason, "approval": False}
        validated = next((e for e in events if isinstance(e, JobValidated)), None)
        if validated is None or (validated.approval_needed and not any(isinstance(e, JobApprovalRequired) for e in events)):
            return None
        return {"denied": None, "approval": validated.approval_needed, "severity": validated.severity}

    return await wait_for(decided, 30, what=f"phase 1 of {job_id}")


def _cli_args(user: str, job: dict[str, Any], policy_file: Path, tests_file: Path) -> list[str]:
    """`nexus validate` for the same job (its tests, if any, from a file, as the CLI reads them)."""
    args = ["validate", "--json", "--policy", str(policy_file), "--user", user]
    if "nodeId" in job:
        args += ["--node", job["nodeId"]]
    args += [a for k, v in job.get("labels", {}).items() for a in ("--label", f"{k}={v}")]
    args += [a for k, v in job.get("env", {}).items() for a in ("--env", f"{k}={v}")]
    if job.get("tests"):
        tests_file.write_text(json.dumps(job["tests"]))
        args += ["--tests", str(tests_file)]
    return [*args, "--", job["command"]]


@pytest.mark.timeout(240)
async def test_the_orchestrator_the_cli_and_the_api_reach_the_same_verdict(stack: Stack, tmp_path: Path) -> None:
    policy_file, token_file = tmp_path / "policy.yaml", tmp_path / "tokens.toml"
    policy_file.write_text(POLICY)
    token_file.write_text(TOKEN_FILE)
    await _orchestrator_with(stack, policy_file)
    await stack.start_agent("prod-1", labels={"env": "prod"})
    answers: dict[str, dict[str, dict[str, Any]]] = {}
    async with _api(stack, token_file, policy_file) as api:
        for name, user, job in CASES:
            headers = {"Authorization": f"Bearer {TOKENS[user]}"}
            said = (await api.post("/api/v1/jobs/validate", json=job, headers=headers)).json()
            api_answer = {"denied": said["denied"], "approval": said["approvalRequired"], "severity": said["severity"]}
            created = await api.post("/api/v1/jobs", json=job, headers=headers)
            assert created.status_code == 201, created.text
            orchestrator = await _orchestrators_answer(stack, created.json()["jobId"])
            code, out, err = await stack.nexus(*_cli_args(user, job, policy_file, tmp_path / "tests.json"))
            assert code in (0, 1), err
            cli = json.loads(out)
            cli_answer = {"denied": cli["denied"], "approval": cli["approval_required"], "severity": cli["severity"]}
            answers[name] = {"orchestrator": orchestrator, "api": api_answer, "cli": cli_answer}

    for name, seen in answers.items():
        orch, api_, cli_ = seen["orchestrator"], seen["api"], seen["cli"]
        assert orch["denied"] == api_["denied"] == cli_["denied"], (name, seen)
        assert orch["approval"] == api_["approval"] == cli_["approval"], (name, seen)
        if orch["denied"] is None:
            assert orch["severity"] == api_["severity"] == cli_["severity"], (name, seen)

    held = {n for n, seen in answers.items() if seen["orchestrator"]["approval"]}
    assert held == {
        "prod selector only",
        "named prod node",
        "critical on a non-production node",
        "the command in env",
        "a destructive test command",
    }
    assert answers["deny-listed"]["orchestrator"]["denied"] == "no filesystems made by jobs"
    assert answers["unknown user"]["orchestrator"]["denied"] == "user 'mallory' may not submit jobs"
    assert answers["harmless"]["orchestrator"] == {"denied": None, "approval": False, "severity": None}


EVASION_POLICY = """\
approval_severity: warning
deny:
  - pattern: '^uname'
"""


@pytest.mark.timeout(240)
async def test_evasions_a_review_ran_live_are_held_refused_or_invalid(stack: Stack, tmp_path: Path) -> None:
    """A review's live runs (2026-12): a nested `bash -c` joined from quoted pieces ran `git reset
    --hard` on a production node without approval; `{uname,-a}` slipped past `^uname`; a command
    with a syntax error was called valid. Now: held, refused, and invalid at validate and submit."""
    policy_file, token_file = tmp_path / "policy.yaml", tmp_path / "tokens.toml"
    policy_file.write_text(EVASION_POLICY)
    token_file.write_text(TOKEN_FILE)
    await _orchestrator_with(stack, policy_file)
    await stack.start_agent("prod-1", labels={"env": "prod"})
    headers = {"Authorization": f"Bearer {TOKENS['alice']}"}
    nested = """bash -c 'bash -c "git reset --hard"'\"\""""
    async with _api(stack, token_file, policy_file) as api:
        created = await api.post("/api/v1/jobs", json={"command": nested, "nodeId": "prod-1"}, headers=headers)
        assert created.status_code == 201, created.text
        assert await _orchestrators_answer(stack, created.json()["jobId"]) == {"denied": None, "approval": True, "severity": "critical"}

        created = await api.post("/api/v1/jobs", json={"command": "{uname,-a}", "nodeId": "prod-1"}, headers=headers)
        assert created.status_code == 201, created.text
        assert (await _orchestrators_answer(stack, created.json()["jobId"]))["denied"] == "command matches deny rule '^uname'"

        broken = {"command": 'echo "hello', "nodeId": "prod-1"}
        said = (await api.post("/api/v1/jobs/validate", json=broken, headers=headers)).json()
        assert said["valid"] is False and said["invalid"].startswith("the command is not valid bash syntax"), said
        refused = await api.post("/api/v1/jobs", json=broken, headers=headers)
        assert refused.status_code == 422 and "invalid-command" in refused.text and "not valid bash syntax" in refused.text, refused.text

    code, out, err = await stack.nexus("validate", "--json", "--policy", str(policy_file), "--", 'echo "hello')
    assert code == 1, err
    assert json.loads(out)["valid"] is False
