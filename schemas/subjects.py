"""Subject builders and the parser for Nexus subjects (DESIGN.md section 3).

Every subject in the code base is built here, never with ad-hoc f-strings.
"""

from __future__ import annotations

import functools
import re
from typing import Literal

import msgspec

from schemas.errors import InvalidId, InvalidSubject

EVENTS_STREAM = "NEXUS_EVENTS"
OUTPUT_STREAM = "NEXUS_OUTPUT"
# Agents' delivery copy of the dispatches and cancels (not the log: NEXUS_EVENTS is). The server
# sources them from NEXUS_EVENTS under one literal subject per node (`deliveries`), so a node's
# consumer finds its next message by that subject alone. Filtered on NEXUS_EVENTS instead
# (`nexus.evt.job.*.dispatch.<node>`), each of N consumers scans every event stored since it
# last looked, and walks every job's subjects when that crosses a block: a fan-out cost the
# server N x events, growing with the log's history (bench/fleet.py).
DISPATCH_STREAM = "NEXUS_DISPATCH"
NODES_BUCKET = "nexus-nodes"

EVENTS_ALL = "nexus.evt.>"
OUTPUT_ALL = "nexus.out.>"
RPC_QUERY = "nexus.rpc.query"

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KIND = re.compile(r"[a-z][a-z0-9_]{0,63}")

Family = Literal["job", "pipeline", "node", "api", "trust"]


def is_valid_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def check_id(value: str, what: str = "id") -> str:
    if not is_valid_id(value):
        raise InvalidId(value, what)
    return value


def job(job_id: str, kind: str) -> str:
    """`nexus.evt.job.<job_id>.<kind>`."""
    return f"nexus.evt.job.{check_id(job_id, 'job id')}.{kind}"


def job_all(job_id: str) -> str:
    """Every event of one job: `nexus.evt.job.<job_id>.>`."""
    return f"nexus.evt.job.{check_id(job_id, 'job id')}.>"


def job_kind_all(kind: str) -> str:
    """One kind of event of every job: `nexus.evt.job.*.<kind>`."""
    if not _KIND.fullmatch(kind):
        raise InvalidSubject(kind, "not an event kind")
    return f"nexus.evt.job.*.{kind}"


def node_inbox(node_id: str) -> str:
    """The inbox prefix of node `node_id`'s agent: `_INBOX_NODE.<node>`. Replies to the agent
    (its pull requests' deliveries, JetStream acks) arrive under it, and its credentials let it
    subscribe there and nowhere else, so no agent reads another's dispatches off the wire or
    anyone's answers on `_INBOX.>`."""
    return f"_INBOX_NODE.{check_id(node_id, 'node id')}"


REPLY_PREFIXES = frozenset({"_INBOX", "_INBOX_NODE"})


def is_reply_inbox(subject: str) -> bool:
    """An inbox an answer may go to (`_INBOX.<...>`, an agent's `_INBOX_NODE.<node>.<...>`), and
    nothing else: a request's reply subject is the asker's to choose, and a signed answer sent
    to `nexus.evt.job.X.validated` would be stored in the log as the orchestrator's decision."""
    head, dot, rest = subject.partition(".")
    return head in REPLY_PREFIXES and bool(dot and rest) and not any(c in subject for c in " \t\r\n*>")


def dispatch(job_id: str, node_id: str) -> str:
    return f"nexus.evt.job.{check_id(job_id, 'job id')}.dispatch.{check_id(node_id, 'node id')}"


def cancel(job_id: str, node_id: str) -> str:
    return f"nexus.evt.job.{check_id(job_id, 'job id')}.cancel.{check_id(node_id, 'node id')}"


NODE_FACTS = ("accepted", "started", "exited")
"""Job kinds that are facts from the node that ran the job. They are on DESIGN §3's
`nexus.evt.job.<job_id>.<kind>`, which names no node: any agent may publish there, and only
the fact signed by the agent of the node the job's attempt is on counts (core.authorship,
core.job_fold), as for output. Agents whose credentials were issued before 2026-12-06 publish
them under their node (`fact_under_node`); readers take both."""


def fact(job_id: str, kind: str) -> str:
    """`nexus.evt.job.<job_id>.<kind>`, for the node facts (NODE_FACTS)."""
    if kind not in NODE_FACTS:
        raise InvalidSubject(kind, f"not a node fact (one of {', '.join(NODE_FACTS)})")
    return job(job_id, kind)


def fact_under_node(subject: str, node_id: str) -> str:
    """`nexus.evt.job.<job_id>.<kind>.<node_id>`: where a node fact goes from an agent whose
    credentials allow it only under its node (issued before 2026-12-06)."""
    return f"{subject}.{check_id(node_id, 'node id')}"


AGENT_JOB_KINDS = ("assigned", "cancel_requested", "cancelled", "lost", "rejected", "denied", "succeeded", "failed", "timed_out",
                   *NODE_FACTS)  # fmt: skip
"""The job-level events a node's agent may read of a job: those that stop a dispatch from running
(a newer attempt, a cancel, a loss, an outcome; node facts, any node's). Never
the request (the command and its environment), nor anything else about other people's jobs."""


def node_view_filters(job_id: str, node_id: str) -> list[str]:
    """What of one job a node's agent may read, one filter each: the job-level events that can stop
    a dispatch (AGENT_JOB_KINDS) and its own node's (`nexus.evt.job.<id>.<kind>.<node>`: its dispatches
    and cancels, and facts from agents with credentials from before 2026-12-06); never the
    job's request, never another node's dispatches."""
    check_id(job_id, "job id")
    check_id(node_id, "node id")
    return [*(f"nexus.evt.job.{job_id}.{kind}" for kind in AGENT_JOB_KINDS), f"nexus.evt.job.{job_id}.*.{node_id}"]


def agent_filters(node_id: str) -> list[str]:
    """What one agent's durable consumer on NEXUS_EVENTS filters on (credentials from before
    NEXUS_DISPATCH): its dispatches and cancels."""
    check_id(node_id, "node id")
    return [f"nexus.evt.job.*.dispatch.{node_id}", f"nexus.evt.job.*.cancel.{node_id}"]


DELIVERY_SOURCES = ("nexus.evt.job.*.dispatch.*", "nexus.evt.job.*.cancel.*")
DELIVERY_DEST = "nexus.deliver.{{wildcard(2)}}"  # the node's token of DELIVERY_SOURCES


def delivery(node_id: str) -> str:
    """The one subject of NEXUS_DISPATCH that holds node `node_id`'s dispatches and cancels."""
    return f"nexus.deliver.{check_id(node_id, 'node id')}"


def pipeline(pipeline_id: str, kind: str) -> str:
    return f"nexus.evt.pipeline.{check_id(pipeline_id, 'pipeline id')}.{kind}"


def node(node_id: str, kind: str) -> str:
    return f"nexus.evt.node.{check_id(node_id, 'node id')}.{kind}"


def api(request_id: str, kind: str) -> str:
    """`nexus.evt.api.<request_id>.<kind>`: the HTTP API's audit trail (one event per call)."""
    return f"nexus.evt.api.{check_id(request_id, 'request id')}.{kind}"


def trust(ident: str, kind: str) -> str:
    """`nexus.evt.trust.<id>.<kind>`: identity announcements (id: the public nkey) and checkpoints."""
    return f"nexus.evt.trust.{check_id(ident, 'trust id')}.{kind}"


def output(job_id: str, attempt: int) -> str:
    """Raw output of one attempt of a job: `nexus.out.<job_id>.<attempt>` (DESIGN §3). The node
    that ran it says so in the chunk's `Nexus-Node` header and proves it by its signature."""
    return f"nexus.out.{check_id(job_id, 'job id')}.{attempt}"


def output_all(job_id: str) -> str:
    """All output of a job (also the `nexus.out.<job_id>.<attempt>.<node_id>` of the releases
    that put the node in the subject, and of agents whose credentials still say so)."""
    return f"nexus.out.{check_id(job_id, 'job id')}.>"


class SubjectRef(msgspec.Struct, frozen=True, kw_only=True):
    """What a subject on the event stream names."""

    family: Family
    id: str
    kind: str
    node: str | None = None

    @property
    def type(self) -> str:
        """The payload `type` this subject carries, e.g. `job.exited`."""
        return f"{self.family}.{self.kind}"


@functools.lru_cache(maxsize=4096)  # one record's subject is parsed several times on its way (a replay's hot path)
def parse(subject: str) -> SubjectRef:
    """Parse an event subject; raises InvalidSubject for anything else."""
    parts = subject.split(".")
    if len(parts) < 5 or parts[0] != "nexus" or parts[1] != "evt":
        raise InvalidSubject(subject, "not of the form nexus.evt.<family>.<id>.<kind>")
    family, ident, kind = parts[2], parts[3], parts[4]
    if not _KIND.fullmatch(kind):
        raise InvalidSubject(subject, f"invalid kind {kind!r}")
    if family not in ("job", "pipeline", "node", "api", "trust"):
        raise InvalidSubject(subject, f"unknown family {family!r}")
    if not is_valid_id(ident):
        raise InvalidSubject(subject, f"invalid {family} id {ident!r}")
    node_id: str | None = None
    if family == "job" and kind in ("dispatch", "cancel"):
        if len(parts) != 6 or not is_valid_id(parts[5]):
            raise InvalidSubject(subject, f"{kind} needs exactly one node id after it")
        node_id = parts[5]
    elif family == "job" and kind in NODE_FACTS and len(parts) == 6:  # under the node: agents' credentials from before 2026-12-06
        if not is_valid_id(parts[5]):
            raise InvalidSubject(subject, f"invalid node id {parts[5]!r}")
        node_id = parts[5]
    elif len(parts) != 5:
        raise InvalidSubject(subject, "too many tokens")
    return SubjectRef(family=family, id=ident, kind=kind, node=node_id)  # type: ignore[arg-type]


class Entity(msgspec.Struct, frozen=True, kw_only=True):
    """Whose subjects a subject is under, read leniently: `nexus.evt.<family>.<id>.<kind>...`
    even when the rest is not a valid Nexus subject (the server still counts it there)."""

    family: str
    id: str
    kind: str


@functools.lru_cache(maxsize=4096)
def entity_of(subject: str) -> Entity | None:
    parts = subject.split(".")
    if len(parts) < 5 or parts[0] != "nexus" or parts[1] != "evt":
        return None
    return Entity(family=parts[2], id=parts[3], kind=parts[4])


def entity_filter(subject: str) -> str:
    """Every subject of the entity `subject` belongs to, e.g. `nexus.evt.job.<id>.>`:
    what a publish's optimistic concurrency is checked against."""
    ent = entity_of(subject)
    if ent is None:
        raise InvalidSubject(subject, "not of the form nexus.evt.<family>.<id>.<kind>")
    return f"nexus.evt.{ent.family}.{ent.id}.>"


def output_node(subject: str) -> str | None:
    """The node of an output subject of the releases that named it, `nexus.out.<job_id>.<attempt>.<node_id>`
    (None: no node in it, as in `nexus.out.<job_id>.<attempt>`)."""
    parts = subject.split(".")
    return parts[4] if len(parts) == 5 and parts[:2] == ["nexus", "out"] else None


def output_attempt(subject: str) -> int:
    """The attempt of an output subject `nexus.out.<job_id>.<attempt>[.<node_id>]`; 0 when it
    names none (`nexus.out.<job>.x.<node>`: anyone who may publish output may publish there, so
    readers get a chunk of no attempt, which never counts, rather than an error)."""
    parts = subject.split(".")
    if len(parts) not in (4, 5) or parts[:2] != ["nexus", "out"] or not parts[3].isdigit() or len(parts[3]) > 9:
        return 0
    return int(parts[3])
