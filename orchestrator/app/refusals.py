"""Requests refused before anything is stored: what phase 1 would reject as `invalid_request`
(core.judge.invalid) can only fail, so a job or a pipeline holding it is refused at submit with
the reason, on every surface alike (`POST /api/v1/jobs`, `POST /api/v1/pipelines`,
`nexus pipeline run`), rather than stored and rejected later."""

from __future__ import annotations

from orchestrator.app.errors import InvalidCommand, InvalidTest, TooLarge, Unrunnable
from orchestrator.core.admission import Submission
from orchestrator.core.assertions import tests_problem
from orchestrator.core.judge import syntax_problem, unrunnable
from orchestrator.core.pipeline import spec_companions
from schemas import codec
from schemas.events import Event
from schemas.limits import MAX_EVENT_BYTES
from schemas.pipelines import PipelineSpec, StepSpec


def refuse_too_large(event: Event, what: str) -> None:
    """TooLarge unless `event` fits on the bus."""
    size = len(codec.encode(event))
    if size > MAX_EVENT_BYTES:
        raise TooLarge(f"{what} would be an event of {size} bytes, over the limit of {MAX_EVENT_BYTES}")


def refuse_unrunnable(sub: Submission, where: str = "") -> None:
    """InvalidTest for a test that could never be judged (a bad pattern), Unrunnable when no
    process could take it (an empty command, a NUL byte, an env name, a job waiting for itself),
    InvalidCommand when bash would refuse its shell syntax; `where` prefixes the reason."""
    if (why := tests_problem(sub.tests)) is not None:
        raise InvalidTest(f"{where}{why}")
    if (why := unrunnable(sub)) is not None:
        raise Unrunnable(f"{where}{why}")
    if (why := syntax_problem(sub)) is not None:
        raise InvalidCommand(f"{where}{why}")


def refuse_unrunnable_steps(spec: PipelineSpec) -> None:
    """`refuse_unrunnable_step` for each step of a compiled template."""
    for step in spec.steps:
        refuse_unrunnable_step(step)


def refuse_unrunnable_step(step: StepSpec) -> None:
    """`refuse_unrunnable` for one step, as its jobs would be judged (with its health check and
    rollback). The template compiler asks it of each step, to name the line."""
    sub = Submission(
        command=step.command,
        tool=step.tool,
        env=dict(step.env),
        tests=list(step.tests),
        working_dir=step.working_dir,
        companions=spec_companions(step),
    )
    refuse_unrunnable(sub, f"step {step.id!r}: ")
