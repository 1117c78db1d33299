"""Templates are bounded: size, nesting, alias expansion, text, steps; every refusal names the limit."""

from __future__ import annotations

import asyncio
import tracemalloc
from pathlib import Path

import pytest

from orchestrator.templates import (
    MAX_TEMPLATE_BYTES,
    MAX_TEMPLATE_STEPS,
    TemplateError,
    compile_template,
    load_template,
)


def laughs(levels: int) -> str:
    """The billion-laughs bomb: each level is a list of 9 aliases of the level below (9**levels values)."""
    parts = ['&l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    parts += [f"&l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "name: p\ndescription: [" + ", ".join(parts) + "]\nsteps: [{id: a, command: x}]\n"


def refused(text: str, **variables: str) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        compile_template(text, variables, file="t.yaml")
    return info.value


def test_the_billion_laughs_bomb_is_refused_at_once() -> None:
    bomb = laughs(9)  # ~460 bytes, 387 million values expanded
    assert len(bomb) < 539
    tracemalloc.start()
    try:
        err = refused(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 1024 * 1024  # expanded, it would be gigabytes: refused before any expansion
    assert err.line == 2 and "more than 100000 values once aliases (*name) are expanded" in err.message


def test_a_smaller_bomb_that_used_to_finish_is_refused_before_expanding() -> None:
    # 9**7 = 4.8 million values: the old compiler walked them all (3 s, 140 MB) before saying "not a string".
    tracemalloc.start()
    try:
        err = refused(laughs(7))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 1024 * 1024, peak
    assert "aliases (*name) are expanded" in err.message


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        pytest.param(
            "name: p\ndescription: " + "[" * 20_000 + "]" * 20_000 + "\nsteps: [{id: a, command: x}]\n",
            2, "nested deeper than 32 levels", id="deep-nesting",
        ),
        pytest.param(
            "name: p\n" + "".join(f"x{i}: &a{i} [[[[[[[[{f'*a{i - 1}' if i else 1}]]]]]]]]\n" for i in range(5)),
            5, "nested deeper than 32 levels (aliases expanded)", id="deep-once-aliases-expand",  # x3: 4 x 8 + 1
        ),
        pytest.param(
            "name: p\ndescription: &a [*a]\nsteps: [{id: a, command: x}]\n", 2, "refers to a mapping or list that contains it",
            id="recursive-alias",
        ),
        pytest.param(
            "name: p\nsteps:\n  - id: a\n    command: x\n    timeout_s: " + "1" * 5000 + "\n", 5, "is not a valid int",
            id="5000-digit-int",
        ),
        pytest.param(
            "name: p\nsteps:\n  - id: a\n    command: x\n    timeout_s: !!python/object:os.system x\n", 5,
            "not a value a template can hold: could not determine a constructor", id="python-tag",
        ),
        pytest.param(
            "name: p\nsteps:\n  - id: a\n    command: x\n    timeout_s: !!timestamp nope\n", 5, "'nope' is not a valid timestamp",
            id="bad-timestamp",
        ),
        pytest.param(
            "name: p\nvars: {x: '" + "y" * 100_000 + "'}\nsteps:\n  - id: a\n    command: '" + "${x}" * 100 + "'\n", 5,
            "expands to more than 8388608 characters of text", id="variable-expansion",
        ),
        pytest.param(
            "name: p\nsteps:\n" + "".join(f"  - {{id: s{i}, command: x, needs: [s{i + 1}]}}\n" for i in range(3000)),
            3 + MAX_TEMPLATE_STEPS, f"more than {MAX_TEMPLATE_STEPS} steps in one pipeline", id="too-many-steps",
        ),
    ],
)  # fmt: skip
def test_refusals_name_the_limit_and_the_line(text: str, line: int, fragment: str) -> None:
    # Each of these used to escape as RecursionError, ValueError, ConstructorError or AttributeError.
    err = refused(text)
    assert fragment in err.message
    assert err.line == line


def test_a_template_larger_than_the_limit_is_refused_before_parsing() -> None:
    err = refused("name: p\n" + "#" * MAX_TEMPLATE_BYTES + "\nsteps: [{id: a, command: x}]\n")
    assert err.line is None and f"larger than {MAX_TEMPLATE_BYTES} bytes" in err.message


def test_a_file_larger_than_the_limit_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"name: p\n" + b"#" * (4 * MAX_TEMPLATE_BYTES))
    with pytest.raises(TemplateError, match=f"big.yaml: the template is larger than {MAX_TEMPLATE_BYTES} bytes"):
        load_template(path, {})


def test_anchors_within_the_limits_still_work() -> None:
    steps = "".join(f"  - {{<<: *base, id: s{i}}}\n" for i in range(1, 200))
    spec = compile_template(f"name: p\nsteps:\n  - &base {{id: s0, command: make, timeout_s: 5}}\n{steps}", {})
    assert len(spec.steps) == 200 and {(s.command, s.timeout_s) for s in spec.steps} == {("make", 5.0)}


async def test_compile_template_runs_in_threads() -> None:
    texts = [f"name: p{i}\nsteps:\n  - {{id: a, command: 'echo {i}'}}\n" for i in range(8)] + [laughs(9)]
    results = await asyncio.gather(*(asyncio.to_thread(compile_template, t, {}) for t in texts), return_exceptions=True)
    assert [r.name for r in results[:8]] == [f"p{i}" for i in range(8)]  # type: ignore[union-attr]
    assert isinstance(results[8], TemplateError)
