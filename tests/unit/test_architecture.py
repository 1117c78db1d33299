"""The layout is the architecture: which package may import what (issue 10, item 8).

Read with `ast` from the source files (function-level imports included), so it is
fast and needs none of the imported packages. tests/ is not checked: a test may play
a foreign NATS client.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "bus", "agent", "orchestrator")

# The NATS adapter, the one place that may import nats-py: bus/nats_bus.py (NatsBus) and the
# modules it is split into, all named bus/nats_*.py.
NATS_ADAPTER_PREFIX = "bus.nats_"

# Modules allowed to import nats for now, while they move behind bus.port.EventBus (issue 10, item 2).
# Empty since the application layer and the orchestrator split landed; keep it empty.
NATS_ALLOWED_FOR_NOW: set[str] = set()

# No clock, randomness, I/O or logging in pure code (DESIGN.md §1, STYLE.md "pure core").
IMPURE = {
    "nats", "duckdb", "asyncio", "time", "socket", "subprocess", "ptyprocess", "litestar", "os", "threading",
    "signal", "select", "selectors", "shutil", "pathlib", "io", "tempfile", "urllib", "http", "ssl", "random",
    "secrets", "uuid", "logging", "structlog", "typer", "rich", "uvicorn", "anyio", "sys", "multiprocessing",
    "concurrent", "sqlite3", "bus", "agent",
}  # fmt: skip

# What schemas/ may import: msgspec and the stdlib's typing bits.
SCHEMAS_MAY_IMPORT = {
    "__future__", "msgspec", "schemas", "typing", "collections", "dataclasses", "datetime", "enum", "re",
    "itertools", "functools", "json", "string", "codecs",
}  # fmt: skip

# What the agent must stay free of, so that a node installs it without the orchestrator's stack.
AGENT_MUST_NOT = {"orchestrator", "duckdb", "litestar", "typer", "rich", "uvicorn", "anyio", "bashlex", "re2", "yaml", "nats"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def sources() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


@cache
def imports(module: str) -> frozenset[str]:
    """Every absolute module name `module` imports, anywhere in the file."""
    path = sources()[module]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.add(node.module)
            elif node.level > 0:  # relative: resolve against the package
                base = module.split(".")[: -node.level or None] if path.name != "__init__.py" else module.split(".")
                found.add(".".join([*base, *([node.module] if node.module else [])]))
    return frozenset(found)


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _violations(modules: Iterator[str], forbidden: set[str]) -> dict[str, list[str]]:
    bad: dict[str, list[str]] = {}
    for module in modules:
        hits = sorted(i for i in imports(module) if _top(i) in forbidden or i in forbidden)
        if hits:
            bad[module] = hits
    return bad


def test_the_source_tree_is_where_the_test_looks() -> None:
    assert {"bus.port", "bus.nats_bus", "agent.service", "schemas.events", "orchestrator.core.reducer"} <= set(sources())


def test_the_pure_core_and_schemas_import_no_io() -> None:
    pure = (m for m in sources() if _under(m, "orchestrator.core") or _under(m, "schemas"))
    assert _violations(pure, IMPURE) == {}


def test_the_core_imports_nothing_of_the_orchestrators_edges() -> None:
    core = [m for m in sources() if _under(m, "orchestrator.core")]
    bad = {m: sorted(i for i in imports(m) if _under(i, "orchestrator") and not _under(i, "orchestrator.core")) for m in core}
    assert {m: hits for m, hits in bad.items() if hits} == {}


EDGES = ("orchestrator.api", "orchestrator.cli", "orchestrator.console")


def test_nothing_under_the_edges_imports_them() -> None:
    """The HTTP API, the CLI and the console are thin adapters over the application layer:
    no other orchestrator module (use cases, store, service, projection) reaches into them."""
    inner = [m for m in sources() if _under(m, "orchestrator") and not any(_under(m, e) for e in EDGES)]
    bad = {m: sorted(i for i in imports(m) if any(_under(i, e) for e in EDGES)) for m in inner}
    assert {m: hits for m, hits in bad.items() if hits} == {}


def test_schemas_import_only_msgspec_and_typing_bits() -> None:
    bad = {
        m: sorted(i for i in imports(m) if _top(i) not in SCHEMAS_MAY_IMPORT)
        for m in sources()
        if _under(m, "schemas")
    }
    assert {m: hits for m, hits in bad.items() if hits} == {}


def test_only_the_nats_adapter_imports_nats() -> None:
    importers = {m for m in sources() if any(_top(i) == "nats" for i in imports(m)) and not m.startswith(NATS_ADAPTER_PREFIX)}
    assert importers - NATS_ALLOWED_FOR_NOW == set(), "import the bus port (bus.port.EventBus) instead"


def test_the_agent_stands_alone() -> None:
    agent = [m for m in sources() if _under(m, "agent")]
    first_party = {m: sorted(i for i in imports(m) if _top(i) in PACKAGES and _top(i) not in {"agent", "bus", "schemas"}) for m in agent}
    assert {m: hits for m, hits in first_party.items() if hits} == {}
    assert _violations(iter(agent), AGENT_MUST_NOT) == {}


def test_the_bus_imports_only_schemas_and_itself() -> None:
    bus = [m for m in sources() if _under(m, "bus")]
    bad = {m: sorted(i for i in imports(m) if _top(i) in {"orchestrator", "agent", "duckdb", "litestar", "typer"}) for m in bus}
    assert {m: hits for m, hits in bad.items() if hits} == {}


def test_the_agent_starts_without_the_orchestrators_stack() -> None:
    """The same rule at run time, transitive imports included: the agent's entry point loads
    with DuckDB, Litestar, typer, rich, the analysis and the orchestrator made unimportable."""
    blocked = sorted(AGENT_MUST_NOT - {"nats"})
    probe = (
        "import importlib.abc, sys\n"
        f"BLOCKED = {blocked!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError(f'the agent imported {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import agent.main, agent.service, bus.memory\n"
        "agent.main.options(['--node', 'n1'])\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
