"""Request and response bodies of the HTTP API, as msgspec Structs.

JSON names are camelCase (`jobId`, `streamEndpoint`, `exitCode`), the shapes
users know from the product brief; Python attributes stay snake_case.
Durations in JSON are milliseconds unless the name says otherwise
(`timeoutSeconds`). Docstrings become descriptions in the OpenAPI document.
"""

from __future__ import annotations

import functools
import operator
import types
import typing
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from orchestrator.app.errors import ConflictingFields
from orchestrator.app.jobs import SubmitJob
from orchestrator.app.rows import JOB_HIDDEN
from orchestrator.core.admission import Submission
from orchestrator.core.pipeline_views import PipelineView, StepView
from orchestrator.core.views import JobView
from schemas.limits import (
    MAX_AFTER,
    MAX_EVENT_BYTES,
    MAX_LIST_ITEMS,
    MAX_TESTS,
    Command,
    Env,
    EnvValue,
    Labels,
    Metadata,
    Name,
    Path,
    Priority,
    Text,
    TimeoutS,
)
from schemas.pipelines import PipelineSpec, StepJob, StepSpec
from schemas.values import StrictJobTest, StrictTests

# A Python `$` also matches before a final newline; `(?!\n)` makes it mean the end, as `$` does in JSON Schema.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}(?!\n)$"
Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, description="[A-Za-z0-9_-]{1,64}")]
POSITION_PATTERN = r"^[0-9]{1,19}:[0-9]{1,19}(:done)?$"
"""A position in a job's SSE stream (`Last-Event-ID`): see stream.py."""
LABEL_PATTERN = r"^[^=]+="
"""A node selector `KEY=VALUE` (`?label=`)."""
Ids = Annotated[list[Id], msgspec.Meta(max_length=MAX_LIST_ITEMS)]
Severity = Literal["info", "warning", "critical"]
# Half the body limit: a template just over it still fits in a body, and gets the precise 400.
Template = Annotated[str, msgspec.Meta(max_length=MAX_EVENT_BYTES // 2)]
Variables = Annotated[dict[Name, EnvValue], msgspec.Meta(max_length=MAX_LIST_ITEMS)]


class _Body(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """Request bodies refuse unknown fields, so a typo is a 400, not a silently ignored option."""


class _Out(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    pass


# ---------------------------------------------------------------- problems


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """RFC 9457 problem details, served as application/problem+json."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


# ---------------------------------------------------------------- analysis


class ValidateRequest(_Body, frozen=True, kw_only=True):
    """A job to judge without running it, exactly as the orchestrator's phase 1 would: the
    command with its `tool`, `env`, `tests` and `workingDir` (all of what would run is analysed),
    for the nodes it would run on: `nodeId` / `nodeIds` (`node` is accepted for `nodeId`), or
    else every live node with the tool whose labels match `labels`, as the orchestrator places it."""

    command: Command
    tool: Name = "bash"
    node_id: Id | None = None
    node_ids: Ids = []
    labels: Labels = {}
    env: Env = {}
    tests: StrictTests = []
    working_dir: Path | None = None
    node: Id | None = msgspec.field(default=None, name="node")

    def named_nodes(self) -> list[str]:
        """The node ids given, once each, in order."""
        return list(dict.fromkeys([*([self.node_id] if self.node_id else []), *([self.node] if self.node else []), *self.node_ids]))

    def submission(self, user: str | None) -> Submission:
        """What phase 1 judges (core.judge), for this caller."""
        return Submission(
            command=self.command,
            tool=self.tool,
            env=dict(self.env),
            tests=list(self.tests),
            working_dir=self.working_dir,
            nodes=self.named_nodes(),
            labels=dict(self.labels),
            user=user,
        )


class ValidationWarning(_Out, frozen=True, kw_only=True):
    """One finding of the analysis (or of the node checks)."""

    type: str
    severity: Severity | str
    message: str


class ValidateResponse(_Out, frozen=True, kw_only=True):
    """The analysis verdict: `valid` is false when any warning is critical or the policy refuses the command.
    `approvalRequired`: it would be held for an approver (critical command on a production node)."""

    valid: bool
    severity: Severity | None
    warnings: list[ValidationWarning]
    suggestions: list[str]
    parsed: bool
    approval_required: bool = False
    denied: str | None = None
    invalid: str | None = None
    """Why the request can never run as given (an empty command, a NUL byte, a bad env name): `POST /api/v1/jobs` refuses it (400)."""
    validation_ms: float = 0.0
    estimated_duration: float | None = None


# ---------------------------------------------------------------- jobs


class CreateJobRequest(_Body, frozen=True, kw_only=True):
    """A job to create. Only `command` is required; without `nodeId` the orchestrator picks a node,
    ranking the nodes that match `labels` by `prefer` (soft preferences) and cost.
    `node`, `timeout_s` and `working_dir` (the event log's names) are accepted for
    `nodeId`, `timeoutSeconds` and `workingDir`; giving both spellings with different values is a 422."""

    command: Command
    tool: Name = "bash"
    job_id: Id | None = None
    node_id: Id | None = None
    labels: Labels = {}
    prefer: Labels = {}
    working_dir: Path | None = None
    env: Env = {}
    secret_env: Env = {}
    """Env entries that are secret whatever their names (those named like `*_PASSWORD` or `*_TOKEN` in
    `env` are secret too): sealed to the node, never stored in clear, masked in the job's output."""
    timeout_s: TimeoutS | None = msgspec.field(default=None, name="timeoutSeconds")
    priority: Priority = 0
    tests: StrictTests = []
    parent: Id | None = None
    metadata: Metadata = {}
    after: Annotated[list[Id], msgspec.Meta(max_length=MAX_AFTER)] = []
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 0
    idempotent: bool = False
    tty: bool = True
    """False: plain pipes instead of a PTY, stdout and stderr kept apart (each `output_chunk` names its `stream`)."""
    node: Id | None = msgspec.field(default=None, name="node")
    timeout_s_alias: TimeoutS | None = msgspec.field(default=None, name="timeout_s")
    working_dir_alias: Path | None = msgspec.field(default=None, name="working_dir")

    def command_for(self, requested_by: str) -> SubmitJob:
        """The submit command (app.jobs) this body asks for, in the event log's vocabulary."""
        fields = msgspec.structs.asdict(self)
        node = _one_of(fields, "node_id", "node", "nodeId")
        timeout_s = _one_of(fields, "timeout_s", "timeout_s_alias", "timeoutSeconds")
        working_dir = _one_of(fields, "working_dir", "working_dir_alias", "workingDir")
        return SubmitJob(**fields, node=node, timeout_s=timeout_s, working_dir=working_dir, requested_by=requested_by)


def _one_of(fields: dict[str, Any], name: str, alias: str, shown: str) -> Any:
    """Pop a field given under its HTTP name or its event-log alias; both, differing, is a 400."""
    value, other = fields.pop(name), fields.pop(alias)
    if value is not None and other is not None and value != other:
        raise ConflictingFields(f"{shown} and its alias disagree ({value!r} vs {other!r}): give one")
    return value if value is not None else other


class TestRequest(_Body, frozen=True, kw_only=True):
    """Tests to run on a finished job (the product brief's test configuration)."""

    __test__ = False  # not a pytest class

    tests: Annotated[list[StrictJobTest], msgspec.Meta(min_length=1, max_length=MAX_TESTS)]
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = msgspec.field(default=60.0, name="timeoutSeconds")


class TestResultOut(_Out, frozen=True, kw_only=True):
    __test__ = False  # not a pytest class

    type: str
    passed: bool
    expected: str
    actual: str
    message: str = ""


class TestResults(_Out, frozen=True, kw_only=True):
    """`passed` is null when the job has never been tested, or while a test run is `pending`
    (requested, not judged yet: `results` are then empty, not the previous run's)."""

    __test__ = False  # not a pytest class

    job_id: str
    passed: bool | None
    results: list[TestResultOut] = []
    pending: bool = False


class RollbackRequest(_Body, frozen=True, kw_only=True):
    """The command that undoes the job; default: the job's `metadata.rollback`."""

    command: Command | None = None


class RollbackStarted(_Out, frozen=True, kw_only=True):
    job_id: str
    rollback_of: str
    stream_endpoint: str


class CreatePipelineRequest(_Body, frozen=True, kw_only=True):
    """A pipeline from a YAML template (the same format as `nexus pipeline run FILE`)."""

    template: Template
    variables: Variables = {}
    pipeline_id: Id | None = None


class PipelineCreated(_Out, frozen=True, kw_only=True):
    """The pipeline's `requested` event is stored (`created`: false: it was before, the same request)."""

    pipeline_id: str
    status_endpoint: str
    seq: int
    created: bool = True


class JobCreated(_Out, frozen=True, kw_only=True):
    """The job's `requested` event is stored; follow it at `streamEndpoint`."""

    job_id: str
    stream_endpoint: str
    seq: int
    created: bool = True


class CancelRequest(_Body, frozen=True, kw_only=True):
    reason: Text | None = None


class CancelAccepted(_Out, frozen=True, kw_only=True):
    job_id: str
    status: Literal["cancel_requested"] = "cancel_requested"


class DecisionRequest(_Body, frozen=True, kw_only=True):
    """Why a held job (or a step at its gate) is approved or denied, for the record; how long to
    wait for the orchestrator's answer (0: do not wait, `outcome` is then `pending`)."""

    reason: Text | None = None
    timeout_s: Annotated[float, msgspec.Meta(ge=0, le=60)] = msgspec.field(default=10.0, name="timeoutSeconds")


DECISION_OUTCOME_DOC = """`outcome`: what the orchestrator made of it (app.jobs.DecisionAnswer): `acted` (it counted:
`status` is the job's or step's next state), `refused` (it does not count, the job or gate waits
again: `reason` says why, e.g. who may approve), `pending` (stored, no answer within `timeoutSeconds`)."""


class DecisionRecorded(_Out, frozen=True, kw_only=True):
    __doc__ = "The approval or denial is in the log. " + DECISION_OUTCOME_DOC

    job_id: str
    decision: Literal["approved", "denied"]
    by: str
    seq: int
    outcome: Literal["acted", "refused", "pending"] = "pending"
    status: str | None = None
    reason: str | None = None


# JobOut is derived from the read model, so a field added to JobView shows here without a copy.
# Hidden: `env` (may hold secrets) and the orchestrator's own bookkeeping (app.rows.JOB_HIDDEN, as `nexus show`).
_JOB_TYPES: dict[str, Any] = {"status": str, "warnings": list[ValidationWarning]}
_JOB_NAMES = {"timeout_s": "timeoutSeconds"}  # the brief's name; every other field is camelCase


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _derived_job_out() -> type[msgspec.Struct]:
    fields: list[tuple[str, Any, Any]] = []
    for f in msgspec.structs.fields(JobView):
        if f.name in JOB_HIDDEN:
            continue
        default = f.default if f.default_factory is msgspec.NODEFAULT else msgspec.field(default_factory=f.default_factory)
        fields.append((f.name, _JOB_TYPES.get(f.name, f.type), default))
    fields.insert(4, ("stream_endpoint", str, msgspec.NODEFAULT))
    return msgspec.defstruct(
        "JobOut",
        fields,
        bases=(_Out,),
        module=__name__,
        namespace={"__doc__": "A job's state as reduced into DuckDB (the read model `JobView`; `env`, which may hold secrets, never)."},
        rename=lambda name: _JOB_NAMES.get(name) or _camel(name),
        frozen=True,
        kw_only=True,
    )


if TYPE_CHECKING:

    class JobOut(_Out, frozen=True, kw_only=True):
        """For the type checker: the fields of JobView, made at run time by `_derived_job_out`."""

        def __getattr__(self, name: str) -> Any: ...

else:
    JobOut = _derived_job_out()


# ---------------------------------------------------------------- pipelines

# The pipeline's read model as a response body: PipelineView, its StepViews, their StepJobs and the
# spec (PipelineSpec, StepSpec) copied field for field with camelCase names, so a field added to a
# view shows here without a copy. Tests within a step (`JobTest`) keep their names, as in jobs.


def _wire_name(name: str) -> str:
    """camelCase; seconds say so (`timeout_s` is `timeoutSeconds`, the brief's name)."""
    return _camel(name[:-2]) + "Seconds" if name.endswith("_s") else _camel(name)


def _swapped(tp: Any, swap: dict[Any, Any]) -> Any:
    """`tp` with each Struct type in `swap` replaced by its copy, in lists, dicts, unions and bounds."""
    if tp in swap:
        return swap[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return Annotated[(_swapped(args[0], swap), *tp.__metadata__)]
    if origin in (list, dict):
        return origin[tuple(_swapped(a, swap) for a in args)]
    if origin in (types.UnionType, typing.Union):
        return functools.reduce(operator.or_, (_swapped(a, swap) for a in args))
    return tp


def _copied(view: type[msgspec.Struct], name: str, swap: dict[Any, Any] | None = None) -> type[msgspec.Struct]:
    fields: list[tuple[str, Any, Any]] = []
    for f in msgspec.structs.fields(view):
        default = f.default if f.default_factory is msgspec.NODEFAULT else msgspec.field(default_factory=f.default_factory)
        fields.append((f.name, _swapped(f.type, swap or {}), default))
    return msgspec.defstruct(
        name,
        fields,
        bases=(_Out,),
        module=__name__,
        namespace={"__doc__": view.__doc__},
        rename=_wire_name,
        frozen=True,
        kw_only=True,
    )


if TYPE_CHECKING:

    class PipelineOut(_Out, frozen=True, kw_only=True):
        """For the type checker: the fields of PipelineView, made at run time by `_copied`."""

        def __getattr__(self, name: str) -> Any: ...

else:
    StepJobOut = _copied(StepJob, "StepJobOut")
    StepSpecOut = _copied(StepSpec, "StepSpecOut")
    PipelineSpecOut = _copied(PipelineSpec, "PipelineSpecOut", {StepSpec: StepSpecOut})
    PipelineStepOut = _copied(StepView, "PipelineStepOut", {StepJob: StepJobOut})
    PipelineOut = _copied(PipelineView, "PipelineOut", {PipelineSpec: PipelineSpecOut, StepView: PipelineStepOut})


class JobList(_Out, frozen=True, kw_only=True):
    """Jobs, newest first. Pass `nextBefore` as `before` to get the next page."""

    jobs: list[JobOut]
    next_before: int | None = None


# ---------------------------------------------------------------- SSE payloads


class StatusEvent(_Out, frozen=True, kw_only=True):
    """One lifecycle event of the job (`category` is its kind, e.g. `assigned`)."""

    type: Literal["status"] = "status"
    category: str
    message: str
    status: str
    level: Literal["info", "warning", "error"] = "info"
    seq: int
    ts: datetime | None = None
    node: str | None = None
    attempt: int | None = None


class OutputChunkEvent(_Out, frozen=True, kw_only=True):
    """Output of the job. `text` is the text view (ANSI stripped, CRLF folded, invalid UTF-8
    replaced) of the stream so far: a character or escape sequence cut between two chunks
    comes whole with the second, so the `text`s of a stream concatenated are its text view (but
    for what its last chunk leaves open: carriage returns at its very end, a cut character).
    `dataB64` is the raw bytes, so concatenating them (per `stream`) is byte-exact.
    `stream`: always `stdout` for a PTY job (the terminal merges both); `stdout` or `stderr` for a `tty: false` job."""

    type: Literal["output_chunk"] = "output_chunk"
    stream: Literal["stdout", "stderr"] = "stdout"
    text: str
    data_b64: str
    attempt: int
    chunk: int
    seq: int


class DoneEvent(_Out, frozen=True, kw_only=True):
    """The job ended and all of its stored output was sent."""

    type: Literal["done"] = "done"
    job_id: str
    status: str
    exit_code: int | None = None
    reason: str | None = None


class ErrorEvent(_Out, frozen=True, kw_only=True):
    """The stream ends before `done`: the server lost NATS and it did not come back in time.
    Its id is the last position sent, so reconnecting with it (as EventSource does) resumes
    without a gap once NATS is back. `retryable`: whether that may help."""

    type: Literal["error"] = "error"
    job_id: str
    message: str
    retryable: bool = True


# ---------------------------------------------------------------- nodes


class NodeOut(_Out, frozen=True, kw_only=True):
    """A node: registration from the event log, load and liveness from its heartbeat."""

    node_id: str
    status: str
    live: bool
    tools: list[str] = []
    labels: dict[str, str] = {}
    max_jobs: int = 1
    active_jobs: int = 0
    hostname: str = ""
    version: str = ""
    registered_at: datetime | None = None
    last_seen: datetime | None = None


class NoFields(_Body, frozen=True, kw_only=True):
    """The body of a call that takes none: nothing, or `{}` (any field is refused)."""


class DrainRequest(_Body, frozen=True, kw_only=True):
    """Why the node is drained, for the record."""

    reason: Text | None = None


class DrainRecorded(_Out, frozen=True, kw_only=True):
    """The change is in the log (`seq`); placement follows as the orchestrator folds it."""

    node_id: str
    drained: bool
    seq: int


class NodeList(_Out, frozen=True, kw_only=True):
    nodes: list[NodeOut]


class OptimalNode(_Out, frozen=True, kw_only=True):
    """The node the orchestrator would pick now (as it ranks: selectors, free, `prefer`, cost, load), or null."""

    tool: str
    node: NodeOut | None
    candidates: list[str]
    reason: str


class Health(_Out, frozen=True, kw_only=True):
    status: Literal["ok"] = "ok"
    nats: bool
    auth: Literal["tokens", "open"]
