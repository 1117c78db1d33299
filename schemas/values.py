"""Job tests (phase 4) and analysis findings (phase 1): values carried inside events.

A test refuses keys it does not know (unlike the events around it): a misspelt
`negate` would otherwise be dropped and the test would mean its opposite.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.limits import MAX_TESTS, Command, Int64, Path, Pattern, TimeoutS


class ExitCodeTest(msgspec.Struct, frozen=True, kw_only=True, tag="exit_code", tag_field="type", forbid_unknown_fields=True):
    """The job's exit code must equal `expected`."""

    expected: Int64 = 0


class OutputContainsTest(msgspec.Struct, frozen=True, kw_only=True, tag="output_contains", tag_field="type", forbid_unknown_fields=True):
    """A regex that must (or, negated, must not) match the job's text output."""

    pattern: Pattern
    stream: Literal["stdout"] = "stdout"
    negate: bool = False


class FileExistsTest(msgspec.Struct, frozen=True, kw_only=True, tag="file_exists", tag_field="type", forbid_unknown_fields=True):
    """A path that must exist on the job's node, checked by its agent."""

    path: Path


class HttpOkTest(msgspec.Struct, frozen=True, kw_only=True, tag="http_ok", tag_field="type", forbid_unknown_fields=True):
    """A URL that must answer 2xx within `timeout_s`, checked from the node."""

    url: Path
    timeout_s: TimeoutS = 5.0


class CommandTest(msgspec.Struct, frozen=True, kw_only=True, tag="command", tag_field="type", forbid_unknown_fields=True):
    """Another command on the same node that must exit 0."""

    command: Command
    timeout_s: TimeoutS = 60.0


JobTest = ExitCodeTest | OutputContainsTest | FileExistsTest | HttpOkTest | CommandTest
Tests = Annotated[list[JobTest], msgspec.Meta(max_length=MAX_TESTS)]
NODE_TESTS = (FileExistsTest, HttpOkTest, CommandTest)
"""Tests the agent checks on the node, right after the command exits."""


class TestResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one assertion: what was expected, what was seen."""

    __test__ = False  # not a pytest class

    type: str
    passed: bool
    expected: str
    actual: str
    message: str = ""


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """One finding of the analysis phase (the product brief's `warnings` items)."""

    type: str
    severity: Literal["info", "warning", "critical"]
    message: str
    command: str | None = None
    """The simple command (as it will run, after unwrapping) the finding is about."""
