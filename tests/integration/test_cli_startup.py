"""The CLI starts fast because each verb imports its heavy modules only when it runs (issue 13).

No timings here (speed lives in bench/cli_startup.py): these tests run the real entry point in a
child interpreter and then look at which modules it loaded. `nexus --help` must not load the bus,
the analysis (bashlex), DuckDB, the HTTP API or the agent; `nexus run -- true` against a running
stack needs the bus but still none of the orchestrator's own machinery.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import NEXUS, Stack

# The child runs `nexus ARGS...` as the entry point does, then writes what it had loaded; also
# when the verb ends its process at once (orchestrator.cli.process.exit_now).
_PROBE = """
import gc, json, os, sys
from orchestrator.cli.main import main

def written(code):
    with open(OUT, "w") as f:
        json.dump({"code": code, "modules": sorted(sys.modules), "collecting": gc.isenabled()}, f)

exit_now = os._exit
os._exit = lambda code: (written(code), exit_now(code))
sys.argv = ["nexus", *sys.argv[2:]]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
written(code)
"""

# Never needed to print help: each of these costs tens of milliseconds or more to import.
NOT_FOR_HELP = (
    "asyncio", "nats", "duckdb", "bashlex", "structlog", "litestar", "yaml", "ptyprocess", "rich.progress", "rich.live", "pydantic",
    "bus.nats_bus", "orchestrator.app.jobs", "orchestrator.core.analysis", "orchestrator.core.policy",
    "orchestrator.client", "orchestrator.store", "orchestrator.service", "agent.service",
)  # fmt: skip
# `nexus run` talks to the bus, but analysis, storage, the API and the agent are other processes' business.
NOT_FOR_RUN = (
    "duckdb", "bashlex", "litestar", "ptyprocess", "pydantic", "orchestrator.core.analysis", "orchestrator.core.policy",
    "orchestrator.store", "orchestrator.service", "orchestrator.api.app", "agent.service",
)  # fmt: skip


async def _probe(tmp: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, set[str], str, bool]:
    out = tmp / "probe.json"
    code = _PROBE.replace("OUT", repr(str(out)))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "probe", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})}, cwd=tmp,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode(errors="replace")
    found = json.loads(out.read_text())
    said = stdout.decode(errors="replace") + stderr.decode(errors="replace")
    return found["code"], set(found["modules"]), said, found["collecting"]


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return [n for n in names if n in modules]


VERB_MODULES = {f"orchestrator.cli.{m}" for m in ("audit", "creds", "daemons", "jobs", "metrics", "pipelines", "review", "run", "state")}


@pytest.mark.parametrize(
    ("args", "verb_modules"),
    [
        (("--help",), VERB_MODULES),  # the verb list: every verb
        (("run", "--help"), {"orchestrator.cli.run"}),  # one verb: its own module only
        (("jobs", "--help"), {"orchestrator.cli.jobs"}),
        (("pipeline", "--help"), {"orchestrator.cli.pipelines"}),
        (("up", "--help"), {"orchestrator.cli.daemons"}),
    ],
)
async def test_help_loads_no_heavy_module(tmp_path: Path, args: tuple[str, ...], verb_modules: set[str]) -> None:
    code, modules, said, _ = await _probe(tmp_path, *args)
    assert code == 0, said
    assert "Usage" in said
    assert _loaded(modules, NOT_FOR_HELP) == [], f"`nexus {' '.join(args)}` imported heavy modules"
    assert modules & VERB_MODULES == verb_modules


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("jobs", "--status", "bogus"), "nexus: error: Invalid value for '--status': 'bogus' is not one of 'requested',"),
        (("run", "--timeout", "-1", "--", "true"), "nexus: error: Invalid value for '--timeout': -1.0 is not in the range"),
        (("run",), "nexus: error: Missing argument 'command'. (see 'nexus run -h')"),
        (("bogusverb",), "nexus: error: No such command 'bogusverb'. (see 'nexus -h')"),
        (("run", "--node", "a b", "--", "true"), "nexus: error: invalid node id 'a b': ids match"),
        (("submit", "--id", "x.y", "--", "true"), "nexus: error: invalid job id 'x.y': ids match"),
        (("show", "x.y"), "nexus: error: invalid job id 'x.y': ids match"),
        (("pipeline", "show", "x.y"), "nexus: error: invalid pipeline id 'x.y': ids match"),
        (("nodes", "--tool", "bash"), "nexus: error: --tool goes with --optimal"),  # it listed every node as if not given
        (("nodes", "--reason", "x"), "nexus: error: --reason goes with --drain"),
        (("run", "-l", "env=prod ", "--", "true"), "nexus: error: --label 'env=prod ' has spaces around its key or value"),
    ],
)
async def test_a_usage_error_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], said: str) -> None:
    """docs/cli.md: errors are one line on stderr, `nexus: error: ...`; usage errors exit 2 (they
    were typer's boxed panel of five lines)."""
    code, _, output, _ = await _probe(tmp_path, *args)
    assert code == 2 and output.startswith(said) and output.count("\n") == 1, output


async def test_nexus_alone_prints_its_verbs(tmp_path: Path) -> None:
    """`nexus` with no verb printed nothing at all (typer's error printer skips a no-arguments
    help, which the plain verb list had not printed itself)."""
    code, _, said, _ = await _probe(tmp_path)
    assert code == 2 and said.startswith("Usage: nexus [OPTIONS] COMMAND") and "Jobs:" in said, said


async def test_the_verb_list_is_plain_text_grouped_by_panel(tmp_path: Path) -> None:
    code, modules, said, _ = await _probe(tmp_path, "--help")
    assert code == 0
    assert "rich" not in modules  # typer's rich renderer costs more than the rest of the start-up
    for panel, verb in (("Services:", "orchestrator"), ("Jobs:", "submit"), ("State:", "replay"), ("Trust:", "audit")):
        assert panel in said and verb in said.split(panel, 1)[1], f"{verb} under {panel}"


@pytest.mark.parametrize(
    ("quiet", "styled"), [(False, False), (True, False), (False, True)], ids=["status lines", "quiet", "styled status lines"]
)
async def test_run_loads_only_what_it_uses(stack: Stack, quiet: bool, styled: bool) -> None:
    args = ("run", "--node", "node-1", *(["-q"] if quiet else []), "--", "true")
    env = {"NEXUS_NATS_URL": stack.url, **({"FORCE_COLOR": "1"} if styled else {})}
    code, modules, said, collecting = await _probe(stack.tmp, *args, env=env)
    assert code == 0, said
    assert "bus.nats_bus" in modules  # it did talk to the bus
    assert _loaded(modules, NOT_FOR_RUN) == [], "`nexus run -- true` imported modules it does not use"
    # structlog only when something is logged (bus.logs), PyNaCl only for credentials (the stack
    # has none) or secrets, rich only to style status lines (a terminal, FORCE_COLOR).
    assert _loaded(modules, ("structlog", "bus.sealing", "nacl", "nkeys", *([] if styled else ["rich"]))) == []
    assert modules & VERB_MODULES == {"orchestrator.cli.run"}
    assert ("rich" in modules) is styled and (" submitted" in said) is not quiet
    assert collecting, "the collector, off while `nexus run` started (orchestrator.cli.process), never came back"


@pytest.mark.parametrize("as_json", [False, True], ids=["output", "json"])
async def test_run_ends_at_once_with_all_it_printed_and_the_jobs_exit_code(stack: Stack, as_json: bool) -> None:
    """`nexus run` skips the interpreter's teardown (process.exit_now), yet all it printed arrives:
    also where Python buffers stdout (a pipe, no PYTHONUNBUFFERED as in this environment)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | {"NEXUS_NATS_URL": stack.url}
    proc = await asyncio.create_subprocess_exec(
        NEXUS, "run", *(["--json"] if as_json else []), "--", "echo first; echo last; exit 3",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=stack.tmp,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 3, err.decode(errors="replace")
    if as_json:
        report = json.loads(out)
        assert (report["exit"], report["status"]) == (3, "failed") and "first" in report["output"] and "last" in report["output"]
    else:
        assert out == b"first\nlast\n"
        assert b"nexus: job" in err
