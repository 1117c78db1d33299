"""Policy and tests files are bounded like templates: a YAML bomb is refused, not expanded."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from orchestrator.config import MAX_FILE_BYTES, ConfigError, load_policy, load_tests

BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)),
    ]
)


@pytest.mark.parametrize("load", [load_policy, load_tests])
def test_a_billion_laughs_file_is_refused_before_expanding(tmp_path: Path, load) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match="aliases"):
            load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 1024 * 1024, peak  # expanded, 387 million values would be gigabytes


@pytest.mark.parametrize("load", [load_policy, load_tests])
def test_oversized_and_deep_files_are_refused(tmp_path: Path, load) -> None:  # type: ignore[no-untyped-def]
    big = tmp_path / "big.yaml"
    big.write_text("#" * (MAX_FILE_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        load(big)
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 200 + "]" * 200)
    with pytest.raises(ConfigError, match="nested deeper"):
        load(deep)


def test_ordinary_files_still_load(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("approvers: [alice]\n")
    assert load_policy(policy).approvers == ["alice"]
    tests = tmp_path / "tests.yaml"
    tests.write_text("- {type: exit_code, expected: 0}\n")
    assert len(load_tests(tests)) == 1


@pytest.mark.parametrize("load", [load_policy, load_tests])
def test_a_yaml_syntax_error_is_one_line_naming_the_file_and_the_line(tmp_path: Path, load) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.yaml"
    path.write_text("- type: exit_code\n  expected: [0\n- type: output_contains\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    said = str(info.value)
    assert "\n" not in said and said.startswith(f"{path}:") and "not valid YAML" in said, said
    assert info.value.line is not None and 1 <= info.value.line <= 3, said


def test_a_test_with_a_key_its_type_does_not_have_is_refused_with_a_guess(tmp_path: Path) -> None:
    # Review: `negat: true` was dropped silently, so the test meant its opposite.
    path = tmp_path / "t7.yaml"
    path.write_text('- {type: output_contains, pattern: "error", negat: true}\n')
    with pytest.raises(ConfigError, match=r"unknown field `negat`.*did you mean 'negate'"):
        load_tests(path)
    path.write_text("tests:\n  - {type: file_exists, path: x, zzz: 1}\n")
    with pytest.raises(ConfigError, match="a file_exists test has: path"):
        load_tests(path)
