"""Errors of the use cases, each mapped once per surface (HTTP: api/errors.py `to_problem`; CLI: cli/common.py `run_async`).

    NexusError (schemas.errors)
    +-- AppError                 a use case refused; `http_status` and `exit_code` say how each surface answers
        +-- NoSuchJob            nothing in the log under this job id                     404, exit 1
        +-- NoSuchPipeline       nothing in the log under this pipeline id                404, exit 1
        +-- NoSuchStep           the pipeline has no step of that name                    404, exit 1
        +-- UnknownNode          no node registered under this id                          404, exit 1
        +-- WrongState           the job is not in a state where this makes sense          409, exit 1
            +-- JobFinished      the job already ended (`status`): nothing to cancel       409, exit 1
            +-- NotHeld          the job is not waiting for approval                       409, exit 1
            +-- JobChanged       another event came first (optimistic concurrency)        409, exit 1
            +-- JobExists        the job id is taken by a different request                409, exit 1
            +-- PipelineExists   the pipeline id is taken by a different request           409, exit 1
        +-- SecretsUnprotected   a secret env value, and no orchestrator key to seal it to  503, exit 1
        +-- NotYours             another user's sealed secrets, asked for by someone else   403, exit 1
        +-- InvalidRequest       the request itself is wrong (a bad option or field)       400, exit 2
            +-- InvalidTest        a test that could never be judged (a bad pattern)         422
            +-- Unrunnable         no process could take the command (empty, a NUL byte)     400
            +-- InvalidCommand     shell text bash would refuse to parse                     422
            +-- ConflictingFields  one field under two names, two values                422
            +-- NoSuchDependency   `after` names a job the log has never seen               422
            +-- ReservedJobId      a chosen job id shaped like a pipeline step's job id      400
"""

from __future__ import annotations

from schemas.errors import NexusError


class AppError(NexusError):
    http_status = 400
    exit_code = 1
    slug = "invalid-request"
    title = "Bad request"


class NoSuchJob(AppError):
    http_status = 404
    slug = "unknown-job"
    title = "Unknown job"

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id!r}")


class NoSuchPipeline(AppError):
    http_status = 404
    slug = "unknown-pipeline"
    title = "Unknown pipeline"

    def __init__(self, pipeline_id: str) -> None:
        self.pipeline_id = pipeline_id
        super().__init__(f"no pipeline {pipeline_id!r}")


class NoSuchStep(AppError):
    http_status = 404
    slug = "unknown-step"
    title = "Unknown step"

    def __init__(self, pipeline_id: str, step: str) -> None:
        self.pipeline_id, self.step = pipeline_id, step
        super().__init__(f"pipeline {pipeline_id!r} has no step {step!r}")


class UnknownNode(AppError):
    http_status = 404
    slug = "unknown-node"
    title = "Unknown node"

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        super().__init__(f"no node {node_id!r} registered (see `nexus nodes`)")


class SecretsUnprotected(AppError):
    """Refused rather than publish a secret in clear: the orchestrator's sealing key is not
    in the `nexus-keys` bucket (no orchestrator started yet), or cannot be sealed to."""

    http_status = 503
    slug = "secrets-unprotected"
    title = "Secrets cannot be protected"
    retryable = True

    def __init__(self, names: list[str], reason: str) -> None:
        self.names = names
        self.reason = reason
        super().__init__(f"not submitted: secret env {', '.join(names)} would be published in clear ({reason})")


class NotYours(AppError):
    http_status = 403
    slug = "not-yours"
    title = "Forbidden"

    def __init__(self, job_id: str, owner: str | None, names: list[str]) -> None:
        self.job_id = job_id
        who = f"its requester ({owner})" if owner else "its requester"
        names_ = ", ".join(names)
        super().__init__(f"job {job_id!r} holds secret env entries sealed for its requester ({names_}): only {who} may run it again")


class WrongState(AppError):
    http_status = 409
    slug = "wrong-state"
    title = "Wrong state"


class JobExists(WrongState):
    slug = "job-exists"
    title = "Job exists"


class PipelineExists(WrongState):
    slug = "pipeline-exists"
    title = "Pipeline exists"


class JobFinished(WrongState):
    def __init__(self, job_id: str, status: str) -> None:
        self.job_id = job_id
        self.status = status
        super().__init__(f"job {job_id} already finished ({status}); there is nothing to cancel")


class NotHeld(WrongState):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id!r} is not waiting for approval")


class JobChanged(WrongState):
    retryable = True

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id!r} changed meanwhile; read it again (nexus history {job_id}) and retry")


class InvalidRequest(AppError):
    exit_code = 2


class TooLarge(InvalidRequest):
    """A request whose event the bus would refuse for its size (schemas.limits.MAX_EVENT_BYTES):
    refused before anything is stored, not published and lost."""

    http_status = 413
    slug = "too-large"
    title = "Request too large"


class InvalidTest(InvalidRequest):
    """A test that could never be judged (an output_contains pattern RE2 refuses): what the API
    document cannot say of a string, so 422 rather than 400."""

    http_status = 422
    slug = "invalid-test"
    title = "Invalid test"


class Unrunnable(InvalidRequest):
    """A job no process could take (an empty command, a NUL byte, a bad env name, a job `after`
    itself): phase 1 would reject it as `invalid_request`."""

    slug = "invalid-body"


class InvalidCommand(InvalidRequest):
    """Shell text bash would refuse to parse (`echo "hello`): the job could only fail."""

    http_status = 422
    slug = "invalid-command"
    title = "Invalid command"


class ConflictingFields(InvalidRequest):
    """A body gave a field under two names (`nodeId` and `node`) with different values."""

    http_status = 422
    slug = "conflicting-fields"
    title = "Conflicting fields"


class NoSuchDependency(InvalidRequest):
    """A job to run after one that does not exist would wait for ever: refused at submit."""

    http_status = 422
    slug = "unknown-dependency"
    title = "Unknown dependency"

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"after: no job {job_id!r} (a job waits only for jobs already submitted)")


class ReservedJobId(InvalidRequest):
    """A caller chose a job id of the shape the orchestrator gives a pipeline step's jobs
    (core.pipeline_views.step_job_id): stored first, such a job would count for the step."""

    slug = "invalid-job-id"
    title = "Invalid job id"

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(
            f"job id {job_id!r} has the shape of a pipeline step's job id (<pipeline>-s<step>-<n>, "
            "-s<step>-hc-<batch>-<n> or -s<step>-rb-<n>), which only the orchestrator may request; choose another id"
        )
