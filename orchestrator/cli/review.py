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
    plain,
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
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why, for the record.")]
WaitOpt = Annotated[
    float,
    typer.Option("--wait", min=0, help="Seconds to wait for the orchestrator to act on it (or refuse it); 0: do not wait."),
]


def _no_by(value: str | None) -> None:
    if value is not None:
        fail(
            "--by is not taken: the record names the identity of the credentials you decide with (--creds), "
            "never a typed name; give each approver their own (nexus creds new --role approver --name NAME)",
            2,
        )


# Kept, hidden, to say why a script's `--by NAME` no longer works instead of "No such option".
ByOpt = Annotated[str | None, typer.Option("--by", hidden=True, callback=_no_by, expose_value=False)]


def approve(
    target: IdArg,
    step: StepArg = None,
    reason: ReasonOpt = None,
    wait: WaitOpt = 10.0,
    as_json: JsonOpt = False,
    _by: ByOpt = None,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """Release a job held for approval, or a pipeline step at its gate (nexus approve PIPELINE STEP).

    The record names you by your credentials, which need the approver or admin role (the server
    refuses others); if the orchestrator's policy lists approvers, you must be one of them. Waits
    for the orchestrator's answer: exit 0 once it acted on it (or it is recorded and not acted on
    within --wait), 1 when it refused it.
    """
    raise typer.Exit(0 if _decide(target, step, "approved", reason, wait, as_json, nats_url) else 1)


def deny(
    target: IdArg,
    step: StepArg = None,
    reason: ReasonOpt = None,
    wait: WaitOpt = 10.0,
    as_json: JsonOpt = False,
    _by: ByOpt = None,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """Reject a job held for approval (it never runs), or a pipeline step at its gate (the pipeline fails).

    Who may deny, and the exit codes, as for `nexus approve`.
    """
    raise typer.Exit(0 if _decide(target, step, "denied", reason, wait, as_json, nats_url) else 1)


@run_async
async def _decide(target: str, step: str | None, kind: Decision, reason: str | None, wait: float, as_json: bool, nats_url: str) -> bool:
    """Publish the decision, wait for the orchestrator's answer, say it; False when refused."""
    from bus.errors import NotAllowed
    from orchestrator.app import jobs as jobs_app
    from orchestrator.app import pipelines as pipelines_app

    ids = {"job_id": target} if step is None else {"pipeline_id": target, "step": step}
    async with connect(nats_url) as client:
        identity = client.bus.identity
        # What the record will name: the credentials' name (no credentials: an open bus proves nobody).
        sent = identity.author.name if identity is not None else default_user()
        try:
            if step is None:
                seq = await jobs_app.decide(client, jobs_app.DecideJob(job_id=target, decision=kind, by=sent, reason=reason))
                answer = await jobs_app.decision_answer(client, target, kind, seq, wait)
            else:
                cmd = pipelines_app.DecideStep(pipeline_id=target, step=step, decision=kind, by=sent, reason=reason)
                seq = await pipelines_app.decide_step(client, cmd)
                answer = await pipelines_app.step_answer(client, cmd, seq, wait)
        except NotAllowed as exc:
            if not as_json:
                raise
            # --json promises one object with the outcome: the server refused it before the log.
            print_json({**ids, "decision": kind, "seq": None, "outcome": "refused", "status": None, "reason": str(exc), "by": sent})
            return False
    by = answer.by or sent
    what = f"job {target}" if step is None else f"pipeline {target} step {step}"
    if as_json:
        print_json({**ids, "decision": kind, "seq": seq, **plain(answer), "by": by})
    elif answer.outcome == "refused":
        # The orchestrator's reason names the identity and why ("'bob' may not approve this job; ...").
        err.print(f"nexus: error: {what}: {answer.reason or f'{kind} by {by} refused'}", highlight=False, markup=False)
    elif answer.outcome == "pending":
        err.print(f"{what} {kind} by {by}: recorded; not acted on yet (is the orchestrator running?)", highlight=False, markup=False)
    else:
        now = f"now {answer.status}" + (f": {answer.reason}" if answer.reason else "")
        err.print(f"{what} {kind} by {by}; {now}", highlight=False, markup=False)
    return answer.outcome != "refused"
