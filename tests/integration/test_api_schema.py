"""The HTTP API against its own OpenAPI document: Schemathesis on a live API over a real stack.

A real nats-server, an orchestrator on a real DuckDB file and the API, with a token
file (Schemathesis calls as an admin). There is no agent: the generated commands
must never run here; jobs are stored, judged and rejected ("no node").

`st run` takes the settings of schemathesis.toml (fixed seed, deterministic, a few
examples per operation) and runs every operation through its coverage, fuzzing and
stateful phases, valid and invalid input, with every check: status codes, content
types and response schemas as documented, no 5xx, invalid input refused, valid input
accepted, auth required where the document says so, `Allow` on 405/OPTIONS. It is the
same command as a longer run by hand (see the toml file).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any

from schemas.limits import MAX_COMMAND_CHARS, MAX_PRIORITY
from tests.conftest import Stack
from tests.integration.api_support import bare_stack, serve_api

CONFIG = Path(__file__).with_name("schemathesis.toml")
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
ST = str(Path(sys.executable).parent / "st")
RUN_TIMEOUT_S = 100


async def _schemathesis(url: str, token: str, workdir: Path) -> tuple[int, str]:
    args = [
        *("--config-file", str(CONFIG), "--no-color", "run", f"{url}/schema/openapi.json"),
        *("--workers", "2", "-H", f"Authorization: Bearer {token}"),
    ]
    # Its working directory takes Schemathesis' cache (.schemathesis/).
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}
    proc = await asyncio.create_subprocess_exec(
        ST, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=workdir, env=env
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_every_answer_matches_the_document(tmp_path: Path) -> None:
    token = secrets.token_hex(16)
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[token]]\nuser = "schemathesis"\nrole = "admin"\ntoken = "{token}"\n')
    async with bare_stack(tmp_path, auth_file=tokens) as stack:
        code, output = await _schemathesis(stack.url, token, tmp_path)
    assert code == 0, f"Schemathesis found failures:\n{output[-30000:]}"
    selected, tested = re.search(r"Selected: (\d+)/\d+", output), re.search(r"Tested: (\d+)", output)
    assert selected and tested and selected[1] == tested[1], output[-3000:]  # no operation skipped


async def _document(stack: Stack, auth_file: Path | None, token: str | None = None) -> dict[str, Any]:
    async with serve_api(stack.client, auth_file) as http:
        resp = await http.get("/schema/openapi.json", headers={"Authorization": f"Bearer {token}"} if token else {})
        assert resp.status_code == 200
        doc: dict[str, Any] = resp.json()
        return doc


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in doc["paths"].items() for method, op in item.items()]


async def test_the_document_says_who_needs_a_token(stack: Stack, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('[[token]]\nuser = "a"\nrole = "admin"\ntoken = "a-token-of-sixteen-chars"\n')
    secured = await _document(stack, tokens, "a-token-of-sixteen-chars")
    assert secured["security"] == [{"bearer": []}] and "bearer" in secured["components"]["securitySchemes"]
    assert secured["paths"]["/health"]["get"]["security"] == []  # /health answers anyone
    assert all("security" not in op for _, path, op in _operations(secured) if path != "/health")
    open_doc = await _document(stack, None)  # an open API asks nobody for a token
    assert "security" not in open_doc and "securitySchemes" not in open_doc["components"]


async def test_the_document_lists_the_problems_and_the_bounds_the_server_enforces(stack: Stack) -> None:
    doc = await _document(stack, None)
    for method, path, op in _operations(doc):
        responses = op["responses"]
        for status in ("400", "503"):
            assert "application/problem+json" in responses[status]["content"], (method, path, status)
        if "requestBody" in op:
            assert {"413", "415"} <= set(responses), (method, path)
        if any(p["in"] == "path" for p in op.get("parameters", [])):
            assert "404" in responses, (method, path)
            ids = [p for p in op["parameters"] if p["in"] == "path"]
            assert all(p["schema"]["pattern"].startswith("^[A-Za-z0-9_-]{1,64}") for p in ids), (method, path)
    assert {"409", "422", "200", "201"} <= set(doc["paths"]["/api/v1/jobs"]["post"]["responses"])
    assert "202" in doc["paths"]["/api/v1/jobs/{job_id}/test"]["post"]["responses"]
    schemas = doc["components"]["schemas"]
    create = schemas["CreateJobRequest"]
    assert create["additionalProperties"] is False  # unknown fields are a 400
    props = create["properties"]
    assert props["priority"]["minimum"] == -MAX_PRIORITY and props["priority"]["maximum"] == MAX_PRIORITY
    assert props["command"]["maxLength"] == MAX_COMMAND_CHARS
    assert props["env"]["maxProperties"] and props["metadata"]["maxProperties"]
    assert all(schemas[name]["additionalProperties"] is False for name in schemas if name.endswith("Request"))
    # Every 2xx JSON answer is a typed model (review: GET /api/v1/pipelines/{id} was `additionalProperties: {}`).
    pipeline = doc["paths"]["/api/v1/pipelines/{pipeline_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert pipeline == {"$ref": "#/components/schemas/PipelineOut"}
    out = schemas["PipelineOut"]["properties"]
    assert {"pipelineId", "requestedBy", "steps", "spec"} <= set(out) and not [k for k in out if "_" in k]
    assert "maxParallel" in schemas["StepSpecOut"]["properties"] and "stepId" in schemas["PipelineStepOut"]["properties"]
