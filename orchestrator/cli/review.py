"""Analysis verbs: validate (phase 1 alone), approve and deny held jobs."""

import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from orchestrator.cli.common import (
    DEFAULT_NATS,
    CredsOpt,
    JsonOpt,
    NatsOpt,
    connect,
    default_user,
    err,
    fail,
    out,
    parse_pairs,
    print_json,
    run_async,
)
from orchestrator.cli.job_options import CwdOpt, EnvOpt, JobTestFlags, tests_from

if TYPE_CHECKING:  # the analysis (bashlex, the policy) is imported when a verb runs, not for `nexus --help`
    from orchestrator.core.admission import Candidate

# A node silent this long is offline to `nexus validate --node` (the orchestrator's default --node-ttl).
VALIDATE_NODE_TTL_S = 10.0
PolicyOpt = Annotated[Path | None, typer.Option("--policy", help="Policy file (YAML) to check against; default: the built-in policy.")]


def validate(
    command: Annotated[list[str], typer.Argument(help="The command, after `--`.", show_default=False)],
    tool: Annotated[str, typer.Option("--tool", help="Tool the command is for.")] = "bash",
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="Labels of the target node KEY=VALUE (e.g. env=prod).")] = None,
    node: Annotated[
        str | None, typer.Option("--node", "-n", help="Judge it for this node (its labels and tools are read from the orchestrator).")
    ] = None,
    env: EnvOpt = None,
    cwd: CwdOpt = None,
    tests: Annotated[Path | None, typer.Option("--tests", "-f", help="YAML/JSON list of tests; command tests are analysed too.")] = None,
    policy_file: PolicyOpt = None,
    user: Annotated[str | None, typer.Option("--user", help="Check permissions as this user (default: $USER).")] = None,
    as_json: JsonOpt = False,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """Run the analysis phase alone: verdict, warnings, suggestions. Nothing is submitted.

    The verdict is the orchestrator's own (the same function judges both). Offline, the labels
    stand for the target node; with --node the fleet is read from the orchestrator.
    Exit code 0 when valid, 1 when not (critical findings or refused by policy).
    """
    from orchestrator.cli.follow import SEVERITY_STYLE
    from orchestrator.config import load_policy
    from orchestrator.core.admission import Submission, worst
    from orchestrator.core.judge import judge
    from schemas import subjects

    if not command:
        fail("no command given: nexus validate -- CMD ...", 2)
    line = command[0] if len(command) == 1 else shlex.join(command)
    if node is not None:
        subjects.check_id(node, "node id")
    sub = Submission(
        command=line,
        tool=tool,
        env=parse_pairs(env, "--env"),
        tests=tests_from(JobTestFlags(tests=tests)),
        working_dir=cwd,
        nodes=[node] if node is not None else [],
        labels=parse_pairs(label, "--label"),
        user=user or default_user(),
    )
    fleet = _fleet(nats_url) if node is not None else None
    started = time.perf_counter()
    verdict = judge(sub, load_policy(policy_file), fleet)
    took_ms = (time.perf_counter() - started) * 1000
    found = [*verdict.findings, *verdict.node_findings]
    denial = verdict.reason if verdict.denied else None
    result: dict[str, Any] = {
        "valid": verdict.valid,
        "severity": worst(found),
        "warnings": [{"type": f.type, "message": f.message, "severity": f.severity} for f in found],
        "suggestions": list(verdict.suggestions),
        "approval_required": verdict.approval_needed,
        "denied": denial,
        "parsed": verdict.parsed,
        "validation_ms": round(took_ms, 3),
    }
    if as_json:
        print_json(result)
    else:
        shown = "[green]valid[/green]" if result["valid"] else "[bold red]not valid[/bold red]"
        out.print(f"{shown}  {line}", highlight=False)
        if denial:
            out.print(f"  [bold red]refused by policy:[/bold red] {denial}", highlight=False)
        for f in found:
            style = SEVERITY_STYLE.get(f.severity, "")
            out.print(f"  [{style}]{f.severity:<8}[/{style}] {f.type}: {f.message}", highlight=False)
        if verdict.approval_needed:
            out.print(f"  needs approval before it runs ({verdict.approval_reason}); nexus approve JOB", highlight=False)
        for s in verdict.suggestions:
            out.print(f"  suggestion: {s}", highlight=False)
    sys.stdout.flush()
    raise typer.Exit(0 if result["valid"] else 1)


@run_async
async def _fleet(nats_url: str) -> "dict[str, Candidate]":
    from orchestrator.app import nodes as nodes_app

    async with connect(nats_url) as client:
        return await nodes_app.candidates(client, ttl_s=VALIDATE_NODE_TTL_S, now=datetime.now(UTC))


Decision = Literal["approved", "denied"]
IdArg = Annotated[str, typer.Argument(help="Job id, or pipeline id with STEP.", show_default=False)]
StepArg = Annotated[str | None, typer.Argument(help="Pipeline step waiting at an approval gate.", show_default=False)]


def approve(
    target: IdArg,
    step: StepArg = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the record.")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who approves (default: $USER); must be an approver in the policy.")] = None,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """Release a job held for approval, or a pipeline step at its gate (nexus approve PIPELINE STEP)."""
    if step is None:
        _decide(target, "approved", by or default_user(), reason, nats_url)
    else:
        _decide_step(target, step, "approved", by or default_user(), reason, nats_url)


def deny(
    target: IdArg,
    step: StepArg = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the record.")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who denies (default: $USER).")] = None,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """Reject a job held for approval (it never runs), or a pipeline step at its gate (the pipeline fails)."""
    if step is None:
        _decide(target, "denied", by or default_user(), reason, nats_url)
    else:
        _decide_step(target, step, "denied", by or default_user(), reason, nats_url)


@run_async
async def _decide_step(pipeline_id: str, step: str, kind: Decision, by: str, reason: str | None, nats_url: str) -> None:
    from orchestrator.app import pipelines as pipelines_app
    from orchestrator.app.pipelines import DecideStep

    async with connect(nats_url) as client:
        await pipelines_app.decide_step(client, DecideStep(pipeline_id=pipeline_id, step=step, decision=kind, by=by, reason=reason))
    err.print(f"{pipeline_id} step {step} {kind} by {by}", highlight=False)


@run_async
async def _decide(job_id: str, kind: Decision, by: str, reason: str | None, nats_url: str) -> None:
    from orchestrator.app import jobs as jobs_app
    from orchestrator.app.jobs import DecideJob

    async with connect(nats_url) as client:
        await jobs_app.decide(client, DecideJob(job_id=job_id, decision=kind, by=by, reason=reason))
    err.print(f"{job_id} {kind} by {by}", highlight=False)
