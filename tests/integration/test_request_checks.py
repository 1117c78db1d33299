"""Requests whose meaning a slip would change are refused before anything runs, on every surface
(the CLI, the HTTP API, a foreign NATS publisher), against a real stack: a test key its type does
not have, an output pattern RE2 cannot compile, a template variable the template does not know,
a named node that lacks the job's label selectors. Each was accepted before, and ran."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.client import new_job_id
from tests.conftest import Stack
from tests.integration.api_support import assert_problem, serve_api
from tests.integration.test_input_checks import _publish, _rejected


async def _jobs(stack: Stack) -> int:
    return int((await stack.client.query("SELECT count(*) FROM jobs")).rows[0][0])


async def test_a_test_key_its_type_does_not_have_is_refused_where_a_person_writes_it(stack: Stack, tmp_path: Path) -> None:
    # Review: `negat: true` was dropped, so "no error here" passed a test meant to fail on "error".
    spec = tmp_path / "t7.yaml"
    spec.write_text('- {type: output_contains, pattern: "error", negat: true}\n')
    code, _, err = await stack.nexus("run", "-f", str(spec), "--", "echo no error here")
    assert code == 1 and b"t7.yaml" in err and b"unknown field `negat`" in err and b"did you mean 'negate'?" in err, err
    async with serve_api(stack.client) as http:
        body = {"command": "true", "tests": [{"type": "file_exists", "path": "x", "extra": 1}]}
        assert_problem(await http.post("/api/v1/jobs", json=body), 400, "invalid-body", "`tests[0].extra` is not a field")
    assert await stack.client.bus.last_seq(subject="nexus.evt.job.>") == 0
    # On the bus unknown fields are ignored (DESIGN §4: old events decode, as they were published).
    job_id = new_job_id()
    await _publish(
        stack, job_id, {"command": "echo no error here", "tests": [{"type": "output_contains", "pattern": "error", "negat": True}]}
    )
    assert (await stack.wait_job(job_id))["status"] == "succeeded"


async def test_an_output_pattern_re2_refuses_is_refused_before_anything_runs(stack: Stack, tmp_path: Path) -> None:
    # Review: `(a` was accepted; the command ran, then the job failed `got invalid pattern: missing ): (a`.
    marker = tmp_path / "ran"
    code, _, err = await stack.nexus("run", "--expect-output", "(a", "--", f"touch {marker}")
    assert code == 2 and b"invalid pattern '(a': missing ): (a" in err, err
    async with serve_api(stack.client) as http:
        body = {"command": f"touch {marker}", "tests": [{"type": "output_contains", "pattern": "(a"}]}
        assert_problem(await http.post("/api/v1/jobs", json=body), 422, "invalid-test", "invalid pattern '(a'")
        step = {"id": "s", "command": f"touch {marker}", "tests": [{"type": "output_contains", "pattern": "(a"}]}
        template = json.dumps({"name": "bad", "steps": [step]})
        assert_problem(await http.post("/api/v1/pipelines", json={"template": template}), 422, "invalid-template", "invalid pattern '(a'")
        done = new_job_id()
        assert (await http.post("/api/v1/jobs", json={"command": "echo done", "jobId": done})).status_code == 201
        await stack.wait_job(done)
        resp = await http.post(f"/api/v1/jobs/{done}/test", json={"tests": [{"type": "output_contains", "pattern": "(a"}]})
        assert_problem(resp, 422, "invalid-test", "invalid pattern '(a'")
    assert [k for r in await stack.client.history(done) if (k := r.subject.split(".")[4]) == "test_requested"] == []
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        f"name: p\nsteps:\n  - id: s\n    command: touch {marker}\n    tests:\n      - {{type: output_contains, pattern: '(a'}}\n"
    )
    code, _, err = await stack.nexus("pipeline", "run", str(pipeline))
    assert code == 2 and b"p.yaml:6" in err and b"invalid pattern" in err, err  # refused, nothing stored (docs/cli.md)
    job_id = new_job_id()
    await _publish(stack, job_id, {"command": f"touch {marker}", "tests": [{"type": "output_contains", "pattern": "(a"}]})
    code_, reason = await _rejected(stack, job_id)
    assert code_ == "invalid_request" and reason.startswith("test 1 (output_contains): invalid pattern '(a'")
    assert not marker.exists()
    assert int((await stack.client.query("SELECT count(*) FROM pipelines")).rows[0][0]) == 0


async def test_a_variable_the_template_does_not_know_is_refused_with_a_guess(stack: Stack, tmp_path: Path) -> None:
    # Review: `--var verison=1.2.3` deployed the default `main`, and the pipeline succeeded.
    template = "name: v\nvars: {version: main}\nsteps:\n  - id: deploy\n    command: echo deploying ${version}\n"
    path = tmp_path / "v.yaml"
    path.write_text(template)
    code, _, err = await stack.nexus("pipeline", "run", str(path), "--var", "verison=1.2.3")
    assert code == 2 and b"v.yaml" in err and b"variable 'verison'" in err and b"did you mean 'version'?" in err, err
    async with serve_api(stack.client) as http:
        resp = await http.post("/api/v1/pipelines", json={"template": template, "variables": {"verison": "1.2.3"}})
        assert_problem(resp, 422, "invalid-template", "did you mean 'version'?")
    assert int((await stack.client.query("SELECT count(*) FROM pipelines")).rows[0][0]) == 0
    code, out, err = await stack.nexus("pipeline", "run", str(path), "--var", "version=1.2.3", "--output")
    assert code == 0 and b"deploying 1.2.3" in out, err


async def test_a_named_node_without_the_selected_labels_is_refused_at_analysis(stack: Stack) -> None:
    # Review: `nexus run --node us1 -l region=eu` ran on us1 (region=us); validate said valid.
    await stack.start_agent("us1", labels={"region": "us"})
    code, out, err = await stack.nexus("validate", "--node", "us1", "-l", "region=eu", "--json", "--", "echo hi")
    verdict = json.loads(out)
    assert code == 1 and verdict["valid"] is False, err
    assert "node 'us1' does not have the labels region=eu (it has region=us)" in json.dumps(verdict)
    code, _, err = await stack.nexus("run", "--id", "pinned-eu", "--node", "us1", "-l", "region=eu", "--", "echo hi")
    assert code == 125 and b"does not have the labels region=eu" in err, err
    code_, reason = await _rejected(stack, "pinned-eu")
    assert code_ == "no_capable_node" and reason == "node 'us1' does not have the labels region=eu (it has region=us)"
    code, _, err = await stack.nexus("run", "--node", "us1", "-l", "region=us", "--", "echo hi")
    assert code == 0, err
