"""Analysis verbs: validate (phase 1 alone), approve and deny held jobs."""

from __future__ import annotations

import secrets
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from bus.errors import StaleDecision
from orchestrator.cli.common import (
    DEFAULT_NATS,
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
from orchestrator.cli.follow import SEVERITY_STYLE
from orchestrator.config import load_policy
from schemas import msgids, subjects
from schemas.envelope import Outgoing
from schemas.events import JobApproved, JobDenied
from schemas.pipelines import PipelineApprovalRequired, PipelineApproved, PipelineDenied
from schemas.records import Record

PolicyOpt = Annotated[Path | None, typer.Option("--policy", help="Policy file (YAML) to check against; default: the built-in policy.")]


def validate(
    command: Annotated[list[str], typer.Argument(help="The command, after `--`.", show_default=False)],
    tool: Annotated[str, typer.Option("--tool", help="Tool the command is for.")] = "bash",
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="Labels of the target node KEY=VALUE (e.g. env=prod).")] = None,
    policy_file: PolicyOpt = None,
    user: Annotated[str | None, typer.Option("--user", help="Check permissions as this user (default: $USER).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the analysis phase alone: verdict, warnings, suggestions. Nothing is submitted.

    Exit code 0 when valid, 1 when not (critical findings or refused by policy).
    """
    from orchestrator.core.analysis import analyze

    if not command:
        fail("no command given: nexus validate -- CMD ...", 2)
    line = command[0] if len(command) == 1 else shlex.join(command)
    policy = load_policy(policy_file)
    labels = parse_pairs(label, "--label")
    who = user or default_user()
    started = time.perf_counter()
    analysis = analyze(line, tool)
    took_ms = (time.perf_counter() - started) * 1000
    denial = None if policy.may_submit(who) else f"user {who!r} may not submit jobs"
    denial = denial or policy.denial(line, tool, [labels])
    approval = policy.needs_approval(analysis.severity, policy.is_production(labels))
    result: dict[str, Any] = {
        "valid": denial is None and analysis.severity != "critical",
        "severity": analysis.severity,
        "warnings": [{"type": f.type, "message": f.message, "severity": f.severity} for f in analysis.findings],
        "suggestions": list(analysis.suggestions),
        "approvalRequired": approval,
        "denied": denial,
        "parsed": analysis.parsed,
        "validationMs": round(took_ms, 3),
    }
    if as_json:
        print_json(result)
    else:
        verdict = "[green]valid[/green]" if result["valid"] else "[bold red]not valid[/bold red]"
        out.print(f"{verdict}  {line}", highlight=False)
        if denial:
            out.print(f"  [bold red]refused by policy:[/bold red] {denial}", highlight=False)
        for f in analysis.findings:
            style = SEVERITY_STYLE.get(f.severity, "")
            out.print(f"  [{style}]{f.severity:<8}[/{style}] {f.type}: {f.message}", highlight=False)
        if approval:
            out.print("  needs approval before it runs on a production node (nexus approve JOB)", highlight=False)
        for s in analysis.suggestions:
            out.print(f"  suggestion: {s}", highlight=False)
    sys.stdout.flush()
    raise typer.Exit(0 if result["valid"] else 1)


IdArg = Annotated[str, typer.Argument(help="Job id, or pipeline id with STEP.", show_default=False)]
StepArg = Annotated[str | None, typer.Argument(help="Pipeline step waiting at an approval gate.", show_default=False)]


def approve(
    target: IdArg,
    step: StepArg = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the record.")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who approves (default: $USER); must be an approver in the policy.")] = None,
    nats_url: NatsOpt = DEFAULT_NATS,
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
) -> None:
    """Reject a job held for approval (it never runs), or a pipeline step at its gate (the pipeline fails)."""
    if step is None:
        _decide(target, "denied", by or default_user(), reason, nats_url)
    else:
        _decide_step(target, step, "denied", by or default_user(), reason, nats_url)


@run_async
async def _decide_step(pipeline_id: str, step: str, kind: str, by: str, reason: str | None, nats_url: str) -> None:
    subjects.check_id(pipeline_id, "pipeline id")
    async with connect(nats_url) as client:
        history: list[Record] = []
        async for batch in client.bus.read_records(subjects.pipeline(pipeline_id, ">")):
            history.extend(batch)
        if not history:
            fail(f"no pipeline {pipeline_id!r}")
        waiting = {r.event.step for r in history if isinstance(r.event, PipelineApprovalRequired)}
        answered = {r.event.step for r in history if isinstance(r.event, PipelineApproved | PipelineDenied)}
        if step not in waiting - answered:
            fail(f"step {step!r} of pipeline {pipeline_id!r} is not waiting for approval")
        ev = PipelineApproved(step=step, by=by, reason=reason) if kind == "approved" else PipelineDenied(step=step, by=by, reason=reason)
        out_ = Outgoing(subjects.pipeline(pipeline_id, kind), ev, msgids.pipeline(pipeline_id, kind, step, secrets.token_hex(4)))
        try:
            await client.bus.publish(out_, expected_seq=history[-1].seq)
        except StaleDecision:
            fail(f"pipeline {pipeline_id!r} changed meanwhile; try again")
    err.print(f"{pipeline_id} step {step} {kind} by {by}", highlight=False)


@run_async
async def _decide(job_id: str, kind: str, by: str, reason: str | None, nats_url: str) -> None:
    subjects.check_id(job_id, "job id")
    async with connect(nats_url) as client:
        history = await client.history(job_id)
        if not history:
            fail(f"no job {job_id!r}")
        kinds = [r.subject.split(".")[4] for r in history]
        last_hold = max((i for i, k in enumerate(kinds) if k == "approval_required"), default=None)
        if last_hold is None or any(k in ("approved", "denied") for k in kinds[last_hold + 1 :]):
            fail(f"job {job_id!r} is not waiting for approval")
        ev = JobApproved(by=by, reason=reason) if kind == "approved" else JobDenied(by=by, reason=reason)
        # Expect the hold to still be the job's last event: a racing approve/deny loses cleanly.
        outgoing = Outgoing(subjects.job(job_id, kind), ev, msgids.job(job_id, kind, secrets.token_hex(4)))
        try:
            await client.bus.publish(outgoing, expected_seq=history[-1].seq)
        except StaleDecision:
            fail(f"job {job_id!r} changed meanwhile; look at `nexus history {job_id}` and try again")
    err.print(f"{job_id} {kind} by {by}", highlight=False)
