"""The options `nexus run` and `nexus submit` share, and the `requested` event they build."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NamedTuple

import typer

from orchestrator.cli.common import default_user, fail, parse_pairs

if TYPE_CHECKING:  # imported where used, so that `nexus --help` stays fast
    from orchestrator.app.jobs import SubmitJob
    from schemas.values import JobTest

NodeOpt = Annotated[str | None, typer.Option("--node", "-n", help="Run on this node (default: the orchestrator picks one).")]
LabelOpt = Annotated[list[str] | None, typer.Option("--label", "-l", help="Node selector KEY=VALUE; repeatable.")]
PreferOpt = Annotated[list[str] | None, typer.Option("--prefer", help="Preferred node labels KEY=VALUE (e.g. region=eu); repeatable.")]
ToolOpt = Annotated[str, typer.Option("--tool", help="Tool the node must have; bash/sh/zsh also interpret the command.")]
CwdOpt = Annotated[str | None, typer.Option("--cwd", help="Working directory on the node.")]
EnvOpt = Annotated[list[str] | None, typer.Option("--env", "-e", help="Environment variable KEY=VALUE; repeatable.")]
SecretOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--secret",
        help="Secret environment variable NAME (its value from your own environment) or NAME=VALUE: sealed to the node, "
        "masked in output and in the record; repeatable. --env names like *_PASSWORD or *_TOKEN are secret too.",
    ),
]
TimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", help="Kill the command (and its children) after this many seconds.", min=0.001)
]
PriorityOpt = Annotated[int, typer.Option("--priority", help="Higher runs first when nodes are busy.")]
IdOpt = Annotated[str | None, typer.Option("--id", help="Job id (idempotency key); default: a new one.")]
MetaOpt = Annotated[list[str] | None, typer.Option("--meta", help="Metadata KEY=VALUE stored with the job; repeatable.")]
ParentOpt = Annotated[str | None, typer.Option("--parent", help="Link this job to a parent job.")]
AfterOpt = Annotated[list[str] | None, typer.Option("--after", help="Start only after this job succeeded; repeatable.")]
RetriesOpt = Annotated[int, typer.Option("--retries", help="Re-run on a lost node up to N times (needs --idempotent).", min=0, max=10)]
IdempotentOpt = Annotated[bool, typer.Option("--idempotent", help="Declare the command safe to run again.")]
TestsOpt = Annotated[Path | None, typer.Option("--tests", "--file", "-f", help="YAML/JSON list of tests (see docs).")]
ExpectExitOpt = Annotated[int | None, typer.Option("--expect-exit", help="Test: the exit code must be this.")]
ExpectOutputOpt = Annotated[list[str] | None, typer.Option("--expect-output", help="Test: this regex must match the output; repeatable.")]
ExpectFileOpt = Annotated[list[str] | None, typer.Option("--expect-file", help="Test: this path must exist on the node; repeatable.")]
NoTtyOpt = Annotated[
    bool,
    typer.Option(
        "--no-tty",
        help="Run with plain pipes instead of a PTY: stdout and stderr kept apart (here: the job's stderr on yours), "
        "for bulk output at pipe speed.",
    ),
]
CommandArg = Annotated[
    list[str],
    typer.Argument(help="The command, after `--`. One argument is a shell line; several are quoted as argv.", show_default=False),
]


# NamedTuples: a dataclass takes ~1 ms to define, on every start of `nexus run` (issue 13).
class JobTestFlags(NamedTuple):
    """The test options shared by run, submit and test."""

    tests: Path | None = None
    expect_exit: int | None = None
    expect_output: list[str] | None = None
    expect_file: list[str] | None = None


class JobFlags(NamedTuple):
    """The job options shared by run and submit, as typer parsed them."""

    node: str | None = None
    label: list[str] | None = None
    prefer: list[str] | None = None
    tool: str = "bash"
    cwd: str | None = None
    env: list[str] | None = None
    secret: list[str] | None = None
    timeout: float | None = None
    priority: int = 0
    job_id: str | None = None
    meta: list[str] | None = None
    parent: str | None = None
    after: list[str] | None = None
    retries: int = 0
    idempotent: bool = False
    tty: bool = True
    tests: JobTestFlags = JobTestFlags()


def request_from(command: list[str], flags: JobFlags) -> SubmitJob:
    """The submit command given by the shared run/submit options."""
    from orchestrator.app.jobs import SubmitJob
    from schemas import subjects
    from schemas.errors import InvalidId

    if not command:
        fail("no command given: nexus run -- CMD ...", 2)
    line = command[0] if len(command) == 1 else shlex.join(command)
    for value, what in ((flags.node, "node id"), (flags.job_id, "job id")):
        if value is not None and not subjects.is_valid_id(value):
            fail(str(InvalidId(value, what)), 2)  # a usage error: nothing was asked of anyone
    if flags.retries and not flags.idempotent:
        fail("--retries needs --idempotent: Nexus never re-runs a command that is not declared safe to repeat", 2)
    return SubmitJob(
        job_id=flags.job_id,
        command=line,
        tool=flags.tool,
        node=flags.node,
        labels=parse_pairs(flags.label, "--label"),
        prefer=parse_pairs(flags.prefer, "--prefer"),
        working_dir=flags.cwd,
        env=parse_pairs(flags.env, "--env"),
        secret_env=secrets_from(flags.secret),
        timeout_s=flags.timeout,
        priority=flags.priority,
        metadata=dict(parse_pairs(flags.meta, "--meta")),
        parent=flags.parent,
        requested_by=default_user(),
        after=[subjects.check_id(a, "job id") for a in flags.after or []],
        retries=flags.retries,
        idempotent=flags.idempotent,
        tty=flags.tty,
        tests=tests_from(flags.tests),
    )


def secrets_from(given: list[str] | None) -> dict[str, str]:
    """`--secret NAME=VALUE`, or `--secret NAME` for the value of NAME in our own environment
    (so the value is not in the shell's history or in `ps`)."""
    found: dict[str, str] = {}
    for item in given or []:
        name, sep, value = item.partition("=")
        if not name:
            fail(f"--secret {item!r}: give NAME or NAME=VALUE", 2)
        if not sep:
            if name not in os.environ:
                fail(f"--secret {name}: no variable {name} in your environment (or give --secret {name}=VALUE)", 2)
            value = os.environ[name]
        found[name] = value
    return found


def tests_from(flags: JobTestFlags) -> list[JobTest]:
    """The tests given by --tests FILE and the --expect-* shorthands."""
    from schemas.values import ExitCodeTest, FileExistsTest, OutputContainsTest

    tests: list[JobTest] = []
    if flags.tests:
        from orchestrator.config import load_tests  # YAML and the policy's checks: only when a file is given

        tests = load_tests(flags.tests)
    if flags.expect_exit is not None:
        tests.append(ExitCodeTest(expected=flags.expect_exit))
    tests += [OutputContainsTest(pattern=p) for p in flags.expect_output or []]
    tests += [FileExistsTest(path=p) for p in flags.expect_file or []]
    if any(isinstance(t, OutputContainsTest) for t in tests):
        from orchestrator.core.assertions import tests_problem  # RE2: only for a job with output tests

        if (why := tests_problem(tests)) is not None:
            fail(why, 2)
    return tests
