"""Every event on the Nexus bus, as msgspec Structs in one tagged union.

The tag is the `type` field (`"job.requested"`, ...) and must agree with the
subject the event is published on (see `schemas.subjects`). Evolution rules:
new fields get defaults, no field changes type, a breaking change is a new kind.
Unknown fields are ignored on decode.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.envelope import Envelope, Id, Timestamp
from schemas.limits import (
    MAX_AFTER,
    MAX_LIST_ITEMS,
    Attempt,
    Command,
    Count,
    Env,
    Int64,
    Labels,
    Metadata,
    Name,
    Names,
    Path,
    Priority,
    TimeoutS,
)
from schemas.pipelines import PipelineEvent
from schemas.trust import TrustEvent
from schemas.values import (
    Finding,
    JobTest,
    TestResult,
    Tests,
)

# ---------------------------------------------------------------- job events


class JobRequested(Envelope, frozen=True, kw_only=True, tag="job.requested"):
    """Someone asks for a command to run. The job id (in the subject) is the idempotency key."""

    claims_its_id = True

    command: Command
    tool: Name = "bash"
    node: Id | None = None
    labels: Labels = {}
    prefer: Labels = {}
    working_dir: Path | None = None
    env: Env = {}
    timeout_s: TimeoutS | None = None
    priority: Priority = 0
    tests: Tests = []
    parent: Id | None = None
    metadata: Metadata = {}
    requested_by: Name | None = None
    after: Annotated[list[Id], msgspec.Meta(max_length=MAX_AFTER)] = []
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 0
    idempotent: bool = False
    secrets: Names = []
    """Names of `env` entries that are secret besides those whose names match the redaction
    patterns or whose values are sealed (`sealed:v1:...`, see schemas.secrets)."""
    tty: bool = True
    """Run in a PTY (true) or with plain pipes (false: stdout and stderr kept apart, bulk output at pipe speed)."""


class JobValidated(Envelope, frozen=True, kw_only=True, tag="job.validated"):
    """The analysis phase's verdict: the command may go on (perhaps after approval)."""

    severity: Literal["info", "warning", "critical"] | None = None
    warnings: list[Finding] = []
    suggestions: list[str] = []
    duration_ms: float = 0.0
    approval_needed: bool = False


class JobApprovalRequired(Envelope, frozen=True, kw_only=True, tag="job.approval_required"):
    """The job waits until someone allowed approves (or denies) it."""

    reason: str
    approvers: list[str] = []
    deciders: list[str] | None = None
    """Who may approve or deny it, by name, as the orchestrator's policy said when it held the job
    (its approvers, and the users whose roles are among them or may approve); None: anyone whose
    credentials carry the approver role. A denial by anyone else changes nothing."""


class JobApproved(Envelope, frozen=True, kw_only=True, tag="job.approved"):
    by: str
    reason: str | None = None


class JobDenied(Envelope, frozen=True, kw_only=True, tag="job.denied"):
    by: str
    reason: str | None = None


class JobRejected(Envelope, frozen=True, kw_only=True, tag="job.rejected"):
    """The job will not run. `code` is machine-readable, `reason` is for people. A rejection by the
    analysis phase (a deny rule, no node that can run it, ...) carries what the analysis found, as
    `validated` would have: `severity` and `warnings` (empty when it found nothing or did not run)."""

    code: str
    reason: str
    raw: str | None = None
    severity: Literal["info", "warning", "critical"] | None = None
    warnings: list[Finding] = []


class JobQueued(Envelope, frozen=True, kw_only=True, tag="job.queued"):
    """No node can take the job now; it waits for capacity."""

    reason: str


class JobAssigned(Envelope, frozen=True, kw_only=True, tag="job.assigned"):
    """The orchestrator picked a node for an attempt."""

    node: Id
    attempt: Attempt = 1
    candidates: list[str] = []
    reason: str = ""


class JobDispatch(Envelope, frozen=True, kw_only=True, tag="job.dispatch"):
    """The command for one agent (the node is in the subject). It stays in the log."""

    attempt: Attempt
    tool: Name
    command: Command
    argv: Annotated[list[Command], msgspec.Meta(max_length=MAX_LIST_ITEMS)]
    working_dir: Path | None = None
    env: Env = {}
    timeout_s: TimeoutS | None = None
    tests: Tests = []
    expires_at: Timestamp | None = None
    """After this the agent refuses it (a dispatch delivered late or replayed is not run)."""
    tty: bool = True
    """Run in a PTY (true) or with plain pipes (false: stdout and stderr kept apart)."""


class JobAccepted(Envelope, frozen=True, kw_only=True, tag="job.accepted"):
    """The agent took the dispatch; from here the command may have run."""

    claims_its_id = True

    node: Id
    attempt: Attempt
    instance: str = ""


class JobStarted(Envelope, frozen=True, kw_only=True, tag="job.started"):
    """The process is running in a PTY on the node."""

    node: Id
    attempt: Attempt
    pid: Int64


class JobExited(Envelope, frozen=True, kw_only=True, tag="job.exited"):
    """The process ended (or could not start: `error`). Facts from the node."""

    node: Id
    attempt: Attempt
    exit_code: Int64 | None = None
    signal: Int64 | None = None
    duration_ms: Int64 = 0
    output_bytes: Int64 = 0
    chunks: Int64 = 0
    killed_by: Literal["timeout", "cancel"] | None = None
    error: str | None = None
    checks: list[TestResult] = []
    first_output_at: Timestamp | None = None
    """When the agent read the first output byte (None: no output, or an older agent)."""
    output_dropped: Count = 0
    """Output read past the node's limit (`--output-max-mb`) and not kept: `output_bytes` is then the
    byte-exact start of the output, and this much more was printed."""


class JobTested(Envelope, frozen=True, kw_only=True, tag="job.tested"):
    """The test phase's results: one per assertion. A job succeeds only if all passed."""

    attempt: Attempt
    passed: bool
    results: list[TestResult] = []


class JobTestRequested(Envelope, frozen=True, kw_only=True, tag="job.test_requested"):
    """Run these tests (again) on a finished job. Node-side tests run in a
    verification job on the same node; the results come as a new `tested`."""

    tests: list[JobTest]
    requested_by: str | None = None


class JobRolledBack(Envelope, frozen=True, kw_only=True, tag="job.rolled_back"):
    """A rollback job (its `metadata.rollback_of` names this job) succeeded."""

    rollback_job: Id


class JobSucceeded(Envelope, frozen=True, kw_only=True, tag="job.succeeded"):
    attempt: Attempt
    exit_code: Int64 = 0


class JobFailed(Envelope, frozen=True, kw_only=True, tag="job.failed"):
    attempt: Attempt
    reason: str
    exit_code: Int64 | None = None


class JobTimedOut(Envelope, frozen=True, kw_only=True, tag="job.timed_out"):
    """The orchestrator's verdict on an attempt the agent killed at its timeout."""

    attempt: Attempt
    timeout_s: float | None = None


class JobCancelRequested(Envelope, frozen=True, kw_only=True, tag="job.cancel_requested"):
    requested_by: str | None = None
    reason: str | None = None


class JobCancel(Envelope, frozen=True, kw_only=True, tag="job.cancel"):
    """Kill request to one agent (node in the subject)."""

    attempt: Attempt


class JobCancelled(Envelope, frozen=True, kw_only=True, tag="job.cancelled"):
    reason: str = "cancelled"


class JobLost(Envelope, frozen=True, kw_only=True, tag="job.lost"):
    """The node vanished while the job was on it: outcome unknown, never re-run silently.
    Only a job declared idempotent with `retries` left is tried again (`will_retry`)."""

    node: Id
    attempt: Attempt
    reason: str
    will_retry: bool = False


# ---------------------------------------------------------------- node events


class NodeRegistered(Envelope, frozen=True, kw_only=True, tag="node.registered"):
    """A node was first seen (or came back, or changed its capabilities)."""

    tools: Names = []
    labels: Labels = {}
    max_jobs: Int64 = 1
    hostname: str = ""
    version: str = ""


class NodeLost(Envelope, frozen=True, kw_only=True, tag="node.lost"):
    """A node's heartbeat expired."""

    reason: str
    last_seen: Timestamp | None = None


class NodeDrained(Envelope, frozen=True, kw_only=True, tag="node.drained"):
    """An operator took the node out of placement (maintenance): it gets no new job until it is
    undrained; what it runs goes on, and jobs asked for on it wait. Its agent keeps beating."""

    reason: str = ""
    by: str | None = None


class NodeUndrained(Envelope, frozen=True, kw_only=True, tag="node.undrained"):
    """The node takes jobs again."""

    by: str | None = None


JobEvent = (
    JobRequested
    | JobValidated
    | JobApprovalRequired
    | JobApproved
    | JobDenied
    | JobRejected
    | JobQueued
    | JobAssigned
    | JobDispatch
    | JobAccepted
    | JobStarted
    | JobExited
    | JobTested
    | JobTestRequested
    | JobRolledBack
    | JobSucceeded
    | JobFailed
    | JobTimedOut
    | JobCancelRequested
    | JobCancel
    | JobCancelled
    | JobLost
)
NodeEvent = NodeRegistered | NodeLost | NodeDrained | NodeUndrained
NodeFact = JobAccepted | JobStarted | JobExited
"""The facts a node reports about the attempt it runs (subjects.NODE_FACTS): they count only from
that node, signed by its agent (core.authorship, core.job_fold)."""


# ---------------------------------------------------------------- api events


class ApiCalled(Envelope, frozen=True, kw_only=True, tag="api.called"):
    """One call of the HTTP API, allowed or refused: who, what, result. The request id is in the subject."""

    user: str | None = None
    role: str | None = None
    method: str
    path: str
    query: str = ""
    route: str | None = None
    job_id: str | None = None
    status: Int64
    allowed: bool
    reason: str | None = None
    remote: str | None = None
    duration_ms: float = 0.0


ApiEvent = ApiCalled


Event = JobEvent | NodeEvent | PipelineEvent | ApiEvent | TrustEvent

TERMINAL_JOB_EVENTS = (JobRejected, JobDenied, JobSucceeded, JobFailed, JobTimedOut, JobCancelled, JobLost)
"""Events that end a job (a JobLost with will_retry does not: use `ends_job`)."""


def ends_job(event: Event | None) -> bool:
    return isinstance(event, TERMINAL_JOB_EVENTS) and not (isinstance(event, JobLost) and event.will_retry)


# ---------------------------------------------------------------- not events


class NodeHeartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """Value of a node's key in the `nexus-nodes` KV bucket. Liveness only, not audit."""

    node: Id
    ts: Timestamp
    tools: Names = []
    labels: Labels = {}
    max_jobs: Int64 = 1
    active_jobs: Int64 = 0
    hostname: str = ""
    version: str = ""
    interval_s: float = 2.0
    instance: str = ""
    running: list[str] = []
    sealing_key: str = ""
    """The agent's X25519 public key (base64): the orchestrator seals a job's secret env values
    to it. Empty (an older agent): the node cannot receive jobs with secrets."""
    dispatches_from: str = "NEXUS_EVENTS"
    """The stream whose `agent-<node>` consumer the agent reads its dispatches from:
    `NEXUS_DISPATCH`, or `NEXUS_EVENTS` for agents (or credentials) from before it."""
    stopped: bool = False
    """The agent's last heartbeat before it stopped cleanly: a new agent for the node need not
    wait to see whether this one is still alive (agent.node_claim)."""
