"""Loading the orchestrator's policy file (YAML). Errors name the file and the field."""

from __future__ import annotations

from pathlib import Path

import msgspec

from orchestrator.core.policy import Policy
from schemas.errors import NexusError
from schemas.events import JobTest


class ConfigError(NexusError):
    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def load_policy(path: Path | None) -> Policy:
    """The policy in `path`, or the default policy when `path` is None."""
    if path is None:
        return Policy()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(path, exc.strerror or str(exc)) from None
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
        data = msgspec.yaml.decode(path.read_bytes())
    except OSError as exc:
        raise ConfigError(path, exc.strerror or str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ConfigError(path, f"not valid YAML: {exc}") from None
    if isinstance(data, dict):
        data = data.get("tests")
    try:
        return msgspec.convert(data, list[JobTest])
    except msgspec.ValidationError as exc:
        raise ConfigError(path, f"not a list of tests: {exc}") from None
