"""Job tests (phase 4) and analysis findings (phase 1): values carried inside events.

On the bus a test ignores keys it does not know, as every event does (DESIGN §4: old
events decode, unknown fields are ignored). What a person writes (a tests file, an API
body) is read as `StrictJobTest`, which refuses them: a misspelt `negate` would be
dropped and the test would mean its opposite.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.limits import MAX_TESTS, Command, Int64, Path, Pattern, TimeoutS


class ExitCodeTest(msgspec.Struct, frozen=True, kw_only=True, tag="exit_code", tag_field="type"):
    """The job's exit code must equal `expected`."""

    expected: Int64 = 0


class OutputContainsTest(msgspec.Struct, frozen=True, kw_only=True, tag="output_contains", tag_field="type"):
    """A regex that must (or, negated, must not) match the job's text output."""

    pattern: Pattern
    stream: Literal["stdout"] = "stdout"
    negate: bool = False


class FileExistsTest(msgspec.Struct, frozen=True, kw_only=True, tag="file_exists", tag_field="type"):
    """A path that must exist on the job's node, checked by its agent."""

    path: Path


class HttpOkTest(msgspec.Struct, frozen=True, kw_only=True, tag="http_ok", tag_field="type"):
    """A URL that must answer 2xx within `timeout_s`, checked from the node."""

    url: Path
    timeout_s: TimeoutS = 5.0


class CommandTest(msgspec.Struct, frozen=True, kw_only=True, tag="command", tag_field="type"):
    """Another command on the same node that must exit 0."""

    command: Command
    timeout_s: TimeoutS = 60.0


JobTest = ExitCodeTest | OutputContainsTest | FileExistsTest | HttpOkTest | CommandTest
Tests = Annotated[list[JobTest], msgspec.Meta(max_length=MAX_TESTS)]


class StrictExitCodeTest(ExitCodeTest, frozen=True, forbid_unknown_fields=True):
    pass


class StrictOutputContainsTest(OutputContainsTest, frozen=True, forbid_unknown_fields=True):
    pass


class StrictFileExistsTest(FileExistsTest, frozen=True, forbid_unknown_fields=True):
    pass


class StrictHttpOkTest(HttpOkTest, frozen=True, forbid_unknown_fields=True):
    pass


class StrictCommandTest(CommandTest, frozen=True, forbid_unknown_fields=True):
    pass


StrictJobTest = StrictExitCodeTest | StrictOutputContainsTest | StrictFileExistsTest | StrictHttpOkTest | StrictCommandTest
"""A test as a person writes it (a tests file, an API body): the same, but a key its type does
not have is an error. Each is a `JobTest` (a subclass), encoded the same."""
StrictTests = Annotated[list[StrictJobTest], msgspec.Meta(max_length=MAX_TESTS)]
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
