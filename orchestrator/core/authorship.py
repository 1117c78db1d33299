"""Who may author which event (DESIGN §9 "Authentic decisions and facts"). Pure.

The projection checks each record's signature (bus.identity.Verifier) and asks
`refusal` whether its author may have made it. A refused record is kept in
`events` with the reason and changes nothing. Once the log holds a trusted
identity's announcement, the rules are enforced; a log with none (a bus without
credentials) is read as before, so old logs replay unchanged.

    requests  (requested, cancel_requested, test_requested)   anyone the server let publish them;
              unsigned ones too (the external contract: any NATS client with a submitter credential)
    approvals (approved, denied)                                approver or admin, signed
    node drained / undrained (an operator's)                    admin, signed
    node facts (accepted, started, exited)                      the agent of the node they name, signed
    everything else (decisions, node and pipeline decisions,
              the API's audit trail, checkpoints)               admin (the orchestrator, the API), signed
"""

from __future__ import annotations

from msgspec.structs import replace

from schemas.events import JobApprovalRequired, JobApproved, JobCancelRequested, JobDenied, JobRequested, JobTestRequested, NodeFact
from schemas.limits import MAX_REASON_CHARS
from schemas.pipelines import PipelineApproved, PipelineDenied, PipelineRequested
from schemas.records import Author, Record
from schemas.subjects import NODE_FACTS

REQUESTS = frozenset({"requested", "cancel_requested", "test_requested"})
APPROVALS = frozenset({"approved", "denied"})
APPROVERS = frozenset({"approver", "admin"})


def refusal(rec: Record, *, problem: str | None, enforcing: bool) -> str | None:
    """Why `rec` must not count (None: it may). `problem`: what the signature check found."""
    if problem is not None:
        return f"{problem}: refused"
    ref = rec.ref
    if not enforcing or ref is None or (ref.family == "trust" and ref.kind == "announced"):
        return None
    author = rec.author
    what = f"{ref.family}.{ref.kind}"
    if ref.kind in REQUESTS and ref.family in ("job", "pipeline"):
        return None
    if ref.kind in APPROVALS and ref.family in ("job", "pipeline"):
        return _needs(author, what, APPROVERS, "an approver")
    if ref.family == "job" and ref.kind in NODE_FACTS:
        # The node it is a fact of: its subject's, under the node (agents' credentials from
        # before 2026-12-06), else its payload's (DESIGN §3's subject names none). The job's
        # fold then counts it only from the node the attempt is on (core.job_fold).
        claimed = rec.event.node if isinstance(rec.event, NodeFact) else None
        node = ref.node if ref.node is not None else claimed
        if author is not None and author.role == "agent" and author.node != node:
            return f"{what} for node {node!r} signed by the agent of {author.node!r}: refused"
        return _needs(author, what, frozenset({"agent", "admin"}), "the node's agent")
    if ref.family == "node" and ref.kind in ("drained", "undrained"):
        return _needs(author, what, frozenset({"admin"}), "an admin")
    return _needs(author, what, frozenset({"admin"}), "the orchestrator")


def denial_refusal(deciders: list[str] | None, by: str) -> str | None:
    """Why a denial of a held job must not count (None: it may): the hold named who may decide it
    (JobApprovalRequired.deciders: the policy's approvers, by name) and `by` is not one of them.
    The reducer and every reader of the log (orchestrator.vetting) ask this the same way."""
    if deciders is None or by in deciders:
        return None
    return f"{by!r} may not deny this job (who may decide it, by the policy: {', '.join(deciders) or 'no one'}); ignored"


class OpenHolds:
    """Who may decide each job's open approval hold, as a reader of the log meets the records in
    order (a followed job): a denial by anyone else is refused (no event, the reason as its
    error), as the reducer refuses it, so a follower does not take it for the job's end."""

    def __init__(self) -> None:
        self._deciders: dict[str, list[str] | None] = {}

    def judge(self, rec: Record) -> Record:
        ev, job_id = rec.event, rec.ref.id if rec.ref is not None else ""
        if isinstance(ev, JobApprovalRequired):
            self._deciders[job_id] = ev.deciders
        elif isinstance(ev, JobDenied) and (why := denial_refusal(self._deciders.get(job_id), ev.by)) is not None:
            return replace(rec, event=None, error=why[:MAX_REASON_CHARS])
        elif isinstance(ev, JobApproved | JobDenied):
            self._deciders.pop(job_id, None)
        return rec


def _needs(author: Author | None, what: str, roles: frozenset[str], who: str) -> str | None:
    if author is None:
        return f"unsigned {what}: only {who} may publish it; refused"
    if author.role not in roles:
        return f"{what} by {author.name!r} ({author.role}): only {who} may publish it; refused"
    return None


def speaks_for_itself(author: Author | None) -> bool:
    """Whether the record's own `by`/`requested_by` may stand: an admin service (the API, the
    orchestrator; `nexus creds new --service`) acts for the users it authenticated; anyone
    else, an admin at the CLI included, is named by their verified identity."""
    return author is not None and author.service


def named(rec: Record, *, enforcing: bool) -> Record:
    """The record with its requester or approver named by the verified identity.

    A signed request (to run, cancel or test a job, to run a pipeline) or approval by anyone
    but an admin service names its author; an unsigned request, once rules are enforced,
    names no one (its claim is unproven)."""
    ev = rec.event
    if not enforcing or ev is None or speaks_for_itself(rec.author):
        return rec
    name = rec.author.name if rec.author is not None else None
    if isinstance(ev, JobApproved | JobDenied | PipelineApproved | PipelineDenied) and name is not None:
        return replace(rec, event=replace(ev, by=name))
    if isinstance(ev, JobRequested | PipelineRequested | JobCancelRequested | JobTestRequested) and ev.requested_by != name:
        return replace(rec, event=replace(ev, requested_by=name))
    return rec


def output_refusal(
    *, attempt: int, attempt_node: str | None, chunk_node: str | None, author: Author | None, problem: str | None, enforcing: bool
) -> str | None:
    """Why an output chunk must not count (None: it may). Output is a node fact: it counts only
    from the node the orchestrator gave the attempt to (`attempt_node`, from its `assigned` or
    `dispatch`) and, once identities are enforced, only signed by that node's agent (or admin).
    `problem`: what the signature check found. `chunk_node`: the node the chunk says it comes from
    (its `Nexus-Node` header), a claim: the signature is the proof."""
    if attempt_node is None:
        return f"output of attempt {attempt}, which the orchestrator gave to no node: refused"
    if chunk_node is not None and chunk_node != attempt_node:
        return f"output from node {chunk_node!r} for attempt {attempt}, which runs on {attempt_node!r}: refused"
    if not enforcing:
        return None
    if problem is not None:
        return f"output {problem}: refused"
    if author is not None and author.role == "agent" and author.node != attempt_node:
        return f"output for node {attempt_node!r} signed by the agent of {author.node!r}: refused"
    return _needs(author, "output", frozenset({"agent", "admin"}), "the node's agent")
