"""Loading the orchestrator's policy file and tests files (YAML). Errors name the file and the field.

Both are bounded like pipeline templates (size, nesting, aliases expanded), so a
hostile or broken file is refused with the limit it broke instead of eating memory.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path

import msgspec
import yaml

from orchestrator.bounded_yaml import YamlLimitError, compose_bounded
from orchestrator.core.policy import Policy
from schemas.errors import NexusError
from schemas.values import JobTest, StrictJobTest


class ConfigError(NexusError):
    """`path`, the 1-based `line` when known, and what is wrong there: one line, as a template's errors."""

    def __init__(self, path: Path, reason: str, line: int | None = None) -> None:
        self.path = path
        self.reason = reason
        self.line = line
        super().__init__(f"{path}:{line}: {reason}" if line is not None else f"{path}: {reason}")


MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_VALUES = 100_000


def _read(path: Path) -> bytes:
    """The file's bytes, once they are known to stay within the limits above."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(path, exc.strerror or str(exc)) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(path, f"larger than {MAX_FILE_BYTES} bytes")
    try:
        compose_bounded(data.decode("utf-8"), max_depth=MAX_DEPTH, max_nodes=MAX_VALUES)
    except UnicodeDecodeError:
        raise ConfigError(path, "not UTF-8 text") from None
    except YamlLimitError as exc:
        raise ConfigError(path, exc.message, exc.line) from None
    except yaml.MarkedYAMLError as exc:  # PyYAML's own text spans lines and quotes the file
        mark = exc.problem_mark or exc.context_mark
        context = f"{exc.context} (line {exc.context_mark.line + 1}): " if exc.context and exc.context_mark else ""
        raise ConfigError(path, f"not valid YAML: {context}{exc.problem}", mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"not valid YAML: {' '.join(str(exc).split())}") from None
    return data


def load_policy(path: Path | None) -> Policy:
    """The policy in `path`, or the default policy when `path` is None."""
    if path is None:
        return Policy()
    data = _read(path)
    try:
        return msgspec.yaml.decode(data, type=Policy) if data.strip() else Policy()
    except msgspec.ValidationError as exc:
        raise ConfigError(path, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ConfigError(path, f"not valid YAML: {exc}") from None
    except ValueError as exc:  # raised by Policy's own checks
        raise ConfigError(path, str(exc)) from None


def load_tests(path: Path) -> list[JobTest]:
    """A YAML or JSON list of job tests (`[{type: exit_code, expected: 0}, ...]`),
    or a mapping with a `tests:` key holding that list."""
    try:
        data = msgspec.yaml.decode(_read(path))
    except msgspec.DecodeError as exc:
        raise ConfigError(path, f"not valid YAML: {exc}") from None
    if isinstance(data, dict):
        data = data.get("tests")
    try:
        return list(msgspec.convert(data, list[StrictJobTest]))
    except msgspec.ValidationError as exc:
        raise ConfigError(path, f"not a list of tests: {exc}{_hint(data)}") from None


def _hint(data: object) -> str:
    """A "did you mean" for the first key a test's type does not have."""
    kinds = {str(cls.__struct_config__.tag): cls for cls in typing.get_args(JobTest)}
    for item in data if isinstance(data, list) else []:
        kind = item.get("type") if isinstance(item, dict) else None
        cls = kinds.get(kind) if isinstance(kind, str) else None
        if cls is None:
            continue
        for key in item:
            if key != "type" and key not in cls.__struct_fields__:
                close = difflib.get_close_matches(str(key), cls.__struct_fields__, n=1)
                return f"; did you mean {close[0]!r}?" if close else f"; a {kind} test has: {', '.join(cls.__struct_fields__)}"
    return ""
