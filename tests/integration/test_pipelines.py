"""Pipelines end to end: chains, fan-out, rolling deploys with rollback, and a crash in the middle."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from pathlib import Path

from tests.conftest import NEXUS, Stack, wait_for
from tests.integration.api_support import serve_api


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_build_test_deploy_verify_chain(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "work"
    out.mkdir()
    (tmp_path / "chain.yaml").write_text(f"""
name: chain
steps:
  - id: build
    command: mkdir -p {out}/dist && echo '<html>' > {out}/dist/index.html && echo Build successful
    tests:
      - {{type: output_contains, pattern: Build successful}}
  - id: test
    command: test -s {out}/dist/index.html
  - id: deploy
    command: cp -r {out}/dist {out}/prod
  - id: verify
    command: grep -q html {out}/prod/index.html
""")
    code, stdout, err = await stack.nexus("pipeline", "run", str(tmp_path / "chain.yaml"), "--json")
    assert code == 0, err
    body = json.loads(stdout)
    assert body["status"] == "succeeded"
    assert [s["status"] for s in body["steps"]] == ["succeeded"] * 4
    assert (out / "prod" / "index.html").exists()
    code, stdout, _ = await stack.nexus("pipeline", "show", body["pipeline_id"], "--json")
    assert code == 0 and json.loads(stdout)["status"] == "succeeded"
    code, stdout, _ = await stack.nexus("pipeline", "list", "--json")
    assert json.loads(stdout)[0]["pipeline_id"] == body["pipeline_id"]


async def test_chain_stops_at_first_failure_and_rolls_back_in_reverse(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "log"
    (tmp_path / "p.yaml").write_text(f"""
name: rollback
steps:
  - {{id: one, command: echo one >> {log}, rollback: echo undo-one >> {log}}}
  - {{id: two, command: echo two >> {log}, rollback: echo undo-two >> {log}}}
  - {{id: three, command: exit 7}}
  - {{id: four, command: echo four >> {log}}}
""")
    code, stdout, err = await stack.nexus("pipeline", "run", str(tmp_path / "p.yaml"), "--json")
    assert code == 1, err
    body = json.loads(stdout)
    assert body["status"] == "failed"
    assert [s["status"] for s in body["steps"]] == ["succeeded", "succeeded", "failed", "skipped"]
    assert lines(log) == ["one", "two", "undo-two", "undo-one"]


async def test_parallel_fan_out_on_three_agents(stack: Stack, tmp_path: Path) -> None:
    for name in ("fan-1", "fan-2", "fan-3"):
        await stack.start_agent(name, labels={"role": "fan"})
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "fan.yaml").write_text(f"""
name: fan-out
steps:
  - id: deploy
    labels: {{role: fan}}
    max_parallel: 2
    command: touch {marks}/$NEXUS_NODE
""")
    code, _stdout, err = await stack.nexus("pipeline", "run", str(tmp_path / "fan.yaml"), "--json")
    assert code == 0, err
    assert sorted(p.name for p in marks.iterdir()) == ["fan-1", "fan-2", "fan-3"]


async def test_rolling_deploy_stops_at_a_failed_health_check_and_rolls_back(stack: Stack, tmp_path: Path) -> None:
    for name in ("w1", "w2", "w3"):
        await stack.start_agent(name)
    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "rolling.yaml").write_text(f"""
name: rolling
steps:
  - id: deploy
    nodes: [w1, w2, w3]
    strategy: rolling
    batch_size: 1
    command: echo deployed >> {state}/$NEXUS_NODE
    health_check: test "$NEXUS_NODE" != w2
    rollback: echo rolled-back >> {state}/$NEXUS_NODE
""")
    code, _stdout, err = await stack.nexus("pipeline", "run", str(tmp_path / "rolling.yaml"), "--json")
    assert code == 1, err
    assert lines(state / "w1") == ["deployed", "rolled-back"]  # first batch rolled back
    assert lines(state / "w2")[0] == "deployed"  # the batch whose check failed
    assert not (state / "w3").exists()  # the third batch is never touched


async def test_bad_templates_are_refused_before_anything_runs(stack: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsteps:\n  - id: a\n    command: echo a\n    needs: [nope]\n")
    code, _, err = await stack.nexus("pipeline", "run", str(bad))
    assert code == 2 and b"bad.yaml" in err and b"nope" in err and b"Traceback" not in err  # exit 2: docs/cli.md
    bad.write_text("name: x\nsteps:\n  - id: a\n    comand: echo a\n")
    code, _, err = await stack.nexus("pipeline", "run", str(bad))
    assert code == 2 and b"bad.yaml:4" in err, err
    bad.write_text("name: x\nsteps: [\n")
    code, _, err = await stack.nexus("pipeline", "run", str(bad))
    assert code == 2 and b"YAML syntax error" in err, err
    code, _, err = await stack.nexus("pipeline", "run", str(tmp_path / "missing.yaml"))
    assert code == 2 and b"cannot read the template" in err, err
    rows = await stack.client.query("SELECT count(*) FROM pipelines")
    assert rows.rows == [[0]]


async def test_a_step_that_is_not_valid_bash_is_refused_as_the_api_refuses_it(stack: Stack, tmp_path: Path) -> None:
    """`nexus pipeline run` published such a pipeline, whose step was then rejected; the API
    refused it up front. Both check it in one place (app.refusals, asked by the template
    compiler, which names the line)."""
    bad = tmp_path / "unclosed.yaml"
    bad.write_text('name: x\nsteps:\n  - id: a\n    command: echo "unclosed\n')
    code, _, err = await stack.nexus("pipeline", "run", str(bad), "--id", "unclosed-1")
    assert code == 2 and b"step 'a'" in err and b"not valid bash syntax" in err and b"Traceback" not in err, err
    assert await stack.client.bus.last_seq(subject="nexus.evt.pipeline.unclosed-1.>") == 0
    async with serve_api(stack.client) as api:
        refused = await api.post("/api/v1/pipelines", json={"template": bad.read_text(), "pipelineId": "unclosed-2"})
    assert refused.status_code == 422 and refused.json()["type"].endswith("invalid-template"), refused.text
    # One reason on both surfaces, with the line of the step's command (the file named as each knows it).
    assert refused.json()["detail"].startswith("template:4: step 'a'") and err.decode().startswith(f"nexus: error: {bad}:4: step 'a'")
    assert refused.json()["detail"].split(":4: ", 1)[1] in err.decode()


async def test_a_job_never_requested_is_listed_by_neither_run_show_nor_the_api(stack: Stack, tmp_path: Path) -> None:
    """The first two nodes unknown, max_parallel 2: both jobs are rejected, the step fails, and its
    third job (node-1) is never requested. Both surfaces listed it, as if sent to node-1."""
    (tmp_path / "fan.yaml").write_text(
        "name: fan\nsteps:\n  - id: a\n    nodes: [nope-1, nope-2, node-1]\n    max_parallel: 2\n    command: 'true'\n"
    )
    code, ran, err = await stack.nexus("pipeline", "run", str(tmp_path / "fan.yaml"), "--id", "fan-unsent", "--json")
    assert code == 1, err
    # `nexus pipeline run` itself says the same (its --json, and the table it shows live).
    assert json.loads(ran)["steps"][0]["jobs"] == ["fan-unsent-s0-0", "fan-unsent-s0-1"], ran

    async def failed() -> bool:
        rows = await stack.client.query("SELECT status FROM pipelines WHERE pipeline_id = 'fan-unsent'")
        return rows.rows == [["failed"]]

    await wait_for(failed, what="the pipeline failed in the state")
    code, stdout, err = await stack.nexus("pipeline", "show", "fan-unsent", "--json")
    assert code == 0, err
    step = json.loads(stdout)["steps"][0]
    assert [j["job_id"] for j in step["jobs"]] == ["fan-unsent-s0-0", "fan-unsent-s0-1"]
    assert all([await stack.job(j["job_id"]) for j in step["jobs"]])
    assert step["reason"].endswith("; 1 job(s) not started (node-1)"), step["reason"]
    async with serve_api(stack.client) as api:
        got = (await api.get("/api/v1/pipelines/fan-unsent")).json()["steps"][0]
    assert ([j["jobId"] for j in got["jobs"]], got["reason"]) == (["fan-unsent-s0-0", "fan-unsent-s0-1"], step["reason"])


async def test_orchestrator_killed_mid_pipeline_resumes_without_running_a_step_twice(stack: Stack, tmp_path: Path) -> None:
    await stack.stop_orchestrator()  # this test runs the orchestrator as a real process
    db = tmp_path / "crash.duckdb"
    env = {**os.environ, "NEXUS_NATS_URL": stack.url}

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            NEXUS, "orchestrator", "--db", str(db), "--node-ttl", "5", "--log-level", "warning",
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    orch = await start()
    runs = tmp_path / "runs"
    gate = tmp_path / "gate"
    (tmp_path / "long.yaml").write_text(f"""
name: crash
steps:
  - {{id: s1, command: echo s1 >> {runs}}}
  - {{id: s2, command: "echo s2 >> {runs}; while [ ! -e {gate} ]; do sleep 0.05; done"}}
  - {{id: s3, command: echo s3 >> {runs}}}
""")
    try:
        proc = await asyncio.create_subprocess_exec(
            NEXUS, "pipeline", "run", str(tmp_path / "long.yaml"), "--json", "--id", "crashy",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await wait_for(lambda: "s2" in lines(runs), timeout=60, what="step 2 running")
        orch.send_signal(signal.SIGKILL)
        await orch.wait()
        gate.touch()  # step 2 finishes while no orchestrator runs
        orch = await start()
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode == 0, stderr
        assert json.loads(stdout)["status"] == "succeeded"
        assert lines(runs) == ["s1", "s2", "s3"]  # every step ran exactly once
    finally:
        if orch.returncode is None:
            orch.kill()
            await orch.wait()


async def test_local_examples_run(stack: Stack, tmp_path: Path) -> None:
    for name in ("web-1", "web-2", "web-3"):
        await stack.start_agent(name, labels={"role": "web"}, max_jobs=2)
    examples = Path(__file__).parents[2] / "examples" / "local"
    work = f"workdir={tmp_path}"

    async def run(name: str, *extra: str) -> dict[str, object]:
        code, stdout, err = await stack.nexus("pipeline", "run", str(examples / name), "--var", work, *extra, "--json")
        body = json.loads(stdout)
        assert (code == 0) == (body["status"] == "succeeded"), err
        return body

    assert (await run("chain.yaml"))["status"] == "succeeded"
    assert (tmp_path / "www" / "index.html").exists()
    assert (await run("fan-out.yaml"))["status"] == "succeeded"
    assert sorted(p.name for p in (tmp_path / "fan").iterdir()) == ["web-1", "web-2", "web-3"]
    assert (await run("rolling.yaml", "--var", "break=web-2"))["status"] == "failed"
    assert [lines(tmp_path / "rolling" / n) for n in ("web-1", "web-2")] == [["v1"], ["v1"]]
    assert not (tmp_path / "rolling" / "web-3").exists()
    assert (await run("branch.yaml", "--var", "fail=1"))["status"] == "failed"
    assert lines(tmp_path / "branch.log") == ["build failed, notifying", "cleanup"]

    proc = await asyncio.create_subprocess_exec(
        NEXUS, "pipeline", "run", str(examples / "gate.yaml"), "--var", work, "--id", "gate-1", "--json",
        env={**os.environ, "NEXUS_NATS_URL": stack.url}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip

    async def waiting() -> bool:
        rows = await stack.client.query("SELECT status FROM pipeline_steps WHERE pipeline_id = 'gate-1' AND step_id = 'release'")
        return rows.rows == [["waiting_approval"]]

    await wait_for(waiting, what="gate waiting")
    assert lines(tmp_path / "gate.log") == ["prepared"]
    code, _, err = await stack.nexus("approve", "gate-1", "release", env={"USER": "alice"})
    assert code == 0 and b"pipeline gate-1 step release approved by alice; now running" in err, err
    stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert json.loads(stdout)["status"] == "succeeded"
    assert lines(tmp_path / "gate.log") == ["prepared", "released"]


async def test_pipeline_run_can_stream_step_output(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "out.yaml").write_text(
        "name: out\nsteps:\n"
        '  - {id: a, command: "echo hello from a; echo second line", rollback: "echo undoing a"}\n'
        '  - {id: b, command: "printf tail; exit 3"}\n'
    )
    code, stdout, err = await stack.nexus("pipeline", "run", "--output", str(tmp_path / "out.yaml"))
    assert code == 1, err
    printed = stdout.decode().splitlines()
    # Each step's lines whole and in order, named by the node its job ran on (it named none); steps
    # are followed at once, so a step's last line may come after the next step's first on a
    # loaded machine (seen in CI). The rollback's output says it is the rollback's.
    assert [line for line in printed if line.startswith("a@")] == ["a@node-1 | hello from a", "a@node-1 | second line"]
    assert [line for line in printed if line.startswith("b@")] == ["b@node-1 | tail"]
    assert [line for line in printed if line.startswith("a rollback@")] == ["a rollback@node-1 | undoing a"]


async def test_a_pipeline_id_reused_for_a_different_request_is_refused_and_the_same_one_is_followed(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "log"
    first, other = tmp_path / "first.yaml", tmp_path / "other.yaml"
    first.write_text(f"name: first\nsteps:\n  - {{id: a, command: echo first >> {log}}}\n")
    other.write_text(f"name: other\nsteps:\n  - {{id: a, command: echo other >> {log}}}\n")
    code, stdout, err = await stack.nexus("pipeline", "run", str(first), "--id", "reuse-1", "--json")
    assert code == 0 and json.loads(stdout)["status"] == "succeeded", err
    # It printed the first pipeline's result as if this one ran (review).
    code, stdout, err = await stack.nexus("pipeline", "run", str(other), "--id", "reuse-1", "--json")
    assert code == 1 and b"pipeline id 'reuse-1' is already used by a different request" in err, err
    assert stdout == b""
    # The same request again (a retry) follows the stored pipeline; nothing runs twice.
    code, stdout, err = await stack.nexus("pipeline", "run", str(first), "--id", "reuse-1", "--json")
    assert code == 0 and json.loads(stdout)["status"] == "succeeded", err
    assert lines(log) == ["first"]


async def test_jobs_and_steps_pinned_to_a_node_gone_past_the_grace_are_rejected_not_held_for_ever(stack: Stack, tmp_path: Path) -> None:
    # Review: `nexus submit --node eu1` after eu1 stopped stayed queued with no deadline, and a
    # pipeline step on it kept its pipeline running until the job was cancelled by hand.
    await stack.stop_orchestrator()
    await stack.start_orchestrator(offline_grace_s=1.0)
    await stack.start_agent("eu1")
    await stack.stop_agent("eu1")
    await wait_for(lambda: stack.orchestrator.nodes["eu1"].status == "lost", what="eu1 lost")
    code, _, err = await stack.nexus("submit", "--id", "off-1", "--node", "eu1", "--", "echo", "hi")
    assert code == 0, err
    row = await stack.wait_job("off-1")
    assert row["status"] == "rejected" and "node 'eu1' is offline: not heard from since" in row["reason"], row
    rows = await stack.client.query("SELECT payload->>'code' FROM events WHERE job_id = 'off-1' AND type = 'job.rejected'")
    assert rows.rows == [["node_offline"]]
    (tmp_path / "offl.yaml").write_text("name: offl\nsteps:\n  - {id: deploy, nodes: [eu1, node-1], command: 'true'}\n")
    code, stdout, err = await stack.nexus("pipeline", "run", str(tmp_path / "offl.yaml"), "--id", "offl1", "--json")
    assert code == 1, err
    step = json.loads(stdout)["steps"][0]
    assert step["status"] == "failed" and "job offl1-s0-0 on eu1 rejected (node 'eu1' is offline" in step["reason"], step


async def test_a_step_whose_job_is_held_says_so_and_steps_show_where_their_jobs_ran(stack: Stack, tmp_path: Path) -> None:
    # Review: a step job held for approval looked like a plain `running` step (empty reason, nothing
    # printed by `nexus pipeline run`); unpinned steps showed no node; a step not started showed batch -1.
    await stack.start_agent("prod-1", labels={"env": "prod"})
    (tmp_path / "held.yaml").write_text(
        "name: held\nsteps:\n  - {id: safe, command: 'true'}\n"
        "  - {id: risky, nodes: [prod-1], command: 'false && rm -rf /'}\n  - {id: after, command: 'true'}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        NEXUS, "pipeline", "run", str(tmp_path / "held.yaml"), "--id", "held1",
        env={**os.environ, "NEXUS_NATS_URL": stack.url}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await wait_for(lambda: _status(stack, "held1-s1-0", "approval_required"), what="the step's job held")
    hint = "job held1-s1-0 is held for approval"
    code, stdout, err = await stack.nexus("pipeline", "show", "held1", "--json")
    assert code == 0, err
    body = json.loads(stdout)
    safe, risky, after = body["steps"]
    assert risky["status"] == "running" and hint in risky["reason"] and "nexus approve held1-s1-0" in risky["reason"], risky
    assert hint in body["reason"]
    assert safe["nodes"] == ["node-1"] and safe["jobs"] == [{"job_id": "held1-s0-0", "node": "node-1"}], safe
    assert after["batch"] is None
    code, stdout, err = await stack.nexus("pipeline", "show", "held1")
    assert code == 0 and b"nexus approve" in stdout, stdout
    assert [line.split() for line in stdout.decode().splitlines() if line.startswith("after ")] == [["after", "pending"]], stdout
    async with serve_api(stack.client, None) as api:
        steps = (await api.get("/api/v1/pipelines/held1")).json()["steps"]
    assert hint in steps[1]["reason"] and steps[0]["jobs"] == [{"jobId": "held1-s0-0", "node": "node-1"}], steps
    code, _, err = await stack.nexus("deny", "held1-s1-0", "--reason", "not today")
    assert code == 0, err
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert b"step risky: " + hint.encode() in err and b"nexus approve held1-s1-0" in err, err


async def _status(stack: Stack, job_id: str, status: str) -> bool:
    row = await stack.job(job_id)
    return bool(row and row["status"] == status)


async def test_a_steps_health_check_and_rollback_are_not_held_again_after_its_job_was_approved(stack: Stack, tmp_path: Path) -> None:
    """docs/pipelines.md: a step's run job is judged with its health check and rollback, so approval
    is asked before the step starts, once. A black-box audit saw both held a second time after the
    run job was approved: the rollout stalled on its health check, and a failed deploy's undo waited
    for a person too."""
    gone = f"/srv/nexus-test-{uuid.uuid4().hex}"  # never there: the critical commands delete nothing
    (tmp_path / "once.yaml").write_text(
        "name: once\nsteps:\n"
        f"  - {{id: deploy, nodes: [node-1], command: 'true', health_check: 'rm -rf {gone}-hc', rollback: 'rm -rf {gone}-rb'}}\n"
        "  - {id: verify, needs: [deploy], command: 'false'}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        NEXUS, "pipeline", "run", str(tmp_path / "once.yaml"), "--id", "once1", "--json",
        env={**os.environ, "NEXUS_NATS_URL": stack.url}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await wait_for(lambda: _status(stack, "once1-s0-0", "approval_required"), what="the step's run job held, with its companions")
    code, _, err = await stack.nexus("approve", "once1-s0-0")
    assert code == 0, err
    stdout, err = await asyncio.wait_for(proc.communicate(), 60)  # no second hold to wait on
    assert proc.returncode == 1, err
    assert json.loads(stdout)["status"] == "failed", stdout
    rows = await stack.client.query(
        "SELECT job_id, payload->>'role' FROM (SELECT job_id, metadata AS payload FROM jobs) WHERE job_id LIKE 'once1-s0-%' ORDER BY job_id"
    )
    companions = [job_id for job_id, role in rows.rows if role in ("health_check", "rollback")]
    assert len(companions) == 2, rows.rows
    for job_id in companions:
        row = await stack.job(job_id)
        assert row is not None and row["status"] == "succeeded", row
        said = await stack.client.query(
            "SELECT payload->>'approval_needed', payload FROM events WHERE job_id = ? AND type = 'job.validated'", [job_id]
        )
        assert said.rows[0][0] == "false" and "approved with the step's run job once1-s0-0" in said.rows[0][1], said.rows
    held = await stack.client.query("SELECT count(*) FROM events WHERE job_id LIKE 'once1-%' AND type = 'job.approval_required'")
    assert held.rows == [[1]]


async def test_a_step_whose_start_is_too_large_to_store_fails_and_what_ran_is_rolled_back(stack: Stack, tmp_path: Path) -> None:
    # 3,000 long node names: the template and its request fit, but the step's `step_started`
    # (every node and every job id) is over the event size limit. Deciding again gives the same
    # event: the pipeline used to stay `running` for good, the refusal logged once a second.
    log = tmp_path / "log"
    nodes = ", ".join(f"n{'x' * 58}{i:05d}" for i in range(3000))
    (tmp_path / "wide.yaml").write_text(f"""
name: wide
steps:
  - {{id: first, command: echo first >> {log}, rollback: echo undo-first >> {log}}}
  - id: wide
    command: echo never
    nodes: [{nodes}]
""")
    code, stdout, err = await stack.nexus("pipeline", "run", str(tmp_path / "wide.yaml"), "--json", timeout=60)
    assert code == 1, err
    body = json.loads(stdout)
    assert body["status"] == "failed"
    first, wide = body["steps"]
    assert (first["status"], wide["status"]) == ("succeeded", "failed")
    assert "its start could not be stored" in wide["reason"] and "over the limit" in wide["reason"]
    assert lines(log) == ["first", "undo-first"]


async def test_a_template_whose_request_is_too_large_to_store_is_refused_with_exit_2(stack: Stack, tmp_path: Path) -> None:
    nodes = ", ".join(f"n{'x' * 58}{i:05d}" for i in range(9000))  # the request over 512 KiB, the file under 1 MiB
    (tmp_path / "huge.yaml").write_text(f"name: huge\nsteps:\n  - id: wide\n    command: echo never\n    nodes: [{nodes}]\n")
    code, _stdout, err = await stack.nexus("pipeline", "run", str(tmp_path / "huge.yaml"), "-d")
    assert code == 2, err
    assert b"the pipeline's request would be an event of" in err and b"over the limit of 524288" in err
    code, stdout, _ = await stack.nexus("pipeline", "list", "--json")
    assert json.loads(stdout) == []  # nothing stored
