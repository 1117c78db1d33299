"""What each identity may do on the bus (DESIGN §9), as NATS user permissions. Pure.

The server enforces these: they are written into each user's JWT by `nexus creds
new` / `nexus up`. A permission names subjects, so everything an identity may
touch is expressible by subject: a node's heartbeat is the KV key `$KV.nexus-nodes.<node>`, and
its dispatch consumer is the durable `agent-<node>` on NEXUS_DISPATCH (created by the
orchestrator, never by the agent; it filters the node's one subject there, the server's copies
of its dispatches and cancels). Its facts and output are on DESIGN §3's subjects,
`nexus.evt.job.<job>.<kind>` and `nexus.out.<job>.<attempt>`, which name no node: which job a
node runs is the orchestrator's to say, never the server's, so of what agents publish there only
what the attempt's node signed counts (core.authorship, core.job_fold); anything else is kept
in the log, marked rejected with its reason (docs/security.md).

Readers create only ephemeral consumers: an ordered push consumer on the event log
(`$JS.API.CONSUMER.CREATE.NEXUS_EVENTS`, no name) or a pull consumer on the output
stream. They may not pull from, bind to, ack on or delete any consumer of the event
log or of NEXUS_DISPATCH, so no one but node N takes node N's dispatches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from schemas import subjects

Role = Literal["admin", "submitter", "approver", "viewer", "agent"]
ROLES: tuple[Role, ...] = ("admin", "submitter", "approver", "viewer", "agent")

EVENTS = subjects.EVENTS_STREAM
OUTPUT = subjects.OUTPUT_STREAM
DISPATCH = subjects.DISPATCH_STREAM
KV_STREAMS = (f"KV_{subjects.NODES_BUCKET}", "KV_nexus-keys")
INBOX = "_INBOX.>"


@dataclass(frozen=True)
class Permissions:
    publish: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)

    def claims(self) -> dict[str, object]:
        """The `nats` claims of a user JWT that grant exactly these."""
        return {
            "pub": {"allow": sorted(set(self.publish))},
            "sub": {"allow": sorted(set(self.subscribe))},
            "subs": -1,
            "data": -1,
            "payload": -1,
            "type": "user",
        }


def _read() -> list[str]:
    """JetStream reads: stream info, message gets, ephemeral consumers, flow control, queries."""
    allowed = ["$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.FC.>", subjects.RPC_QUERY]
    for stream in (EVENTS, OUTPUT, *KV_STREAMS):
        allowed += [
            f"$JS.API.STREAM.INFO.{stream}",
            f"$JS.API.STREAM.MSG.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}.>",
        ]
        allowed += [f"$JS.API.CONSUMER.CREATE.{stream}"]  # ephemeral (ordered) consumers only: no name
    # The output stream holds no one's durable: pull consumers with a name are harmless there.
    allowed += [f"$JS.API.CONSUMER.CREATE.{OUTPUT}.>", f"$JS.API.CONSUMER.INFO.{OUTPUT}.*"]
    allowed += [f"$JS.API.CONSUMER.MSG.NEXT.{OUTPUT}.*", f"$JS.API.CONSUMER.DELETE.{OUTPUT}.*"]
    for stream in KV_STREAMS:  # a KV watch is an ordered consumer on the bucket's stream
        allowed += [f"$JS.API.CONSUMER.CREATE.{stream}.>"]
    return allowed


def _submit() -> list[str]:
    return [
        "nexus.evt.job.*.requested",
        "nexus.evt.pipeline.*.requested",
        "nexus.evt.job.*.cancel_requested",
        "nexus.evt.job.*.test_requested",
    ]


def _approve() -> list[str]:
    return ["nexus.evt.job.*.approved", "nexus.evt.job.*.denied", "nexus.evt.pipeline.*.approved", "nexus.evt.pipeline.*.denied"]


def _agent(node: str) -> list[str]:
    durable = f"agent-{node}"
    return [
        # Facts and output of any job's attempt (DESIGN §3's `nexus.evt.job.<job>.<kind>` and
        # `nexus.out.<job>.<attempt>` name no node): only what the agent of the attempt's node
        # signed counts (core.authorship). And under its own node, where agents from before
        # 2026-12-06 publish them: such an agent given new credentials keeps working.
        *(subjects.job_kind_all(kind) for kind in subjects.NODE_FACTS),
        *(f"nexus.evt.job.*.{kind}.{node}" for kind in subjects.NODE_FACTS),
        "nexus.out.*.*",
        f"nexus.out.*.*.{node}",
        f"$KV.{subjects.NODES_BUCKET}.{node}",
        # Its own heartbeat, read back: is another agent running under this node id? (agent.node_claim)
        f"$JS.API.DIRECT.GET.KV_{subjects.NODES_BUCKET}.$KV.{subjects.NODES_BUCKET}.{node}",
        "$JS.API.INFO",
        "$JS.FC.>",
        f"$JS.API.STREAM.INFO.{EVENTS}",
        f"$JS.API.STREAM.INFO.KV_{subjects.NODES_BUCKET}",
        # A job's history as this node may see it, read before running a dispatch (is it still
        # runnable?): short-lived consumers whose one filter is in their create subject, either
        # one kind of the job's own events that can stop a dispatch (nexus.evt.job.<id>.cancelled)
        # or this node's (nexus.evt.job.<id>.*.<node>): never a request (the command), never
        # another node's dispatches (subjects.node_view_filters).
        *(f"$JS.API.CONSUMER.CREATE.{EVENTS}.*.nexus.evt.job.*.{kind}" for kind in subjects.AGENT_JOB_KINDS),
        f"$JS.API.CONSUMER.CREATE.{EVENTS}.*.nexus.evt.job.*.*.{node}",
        # Who signed a dispatch: the signer's announcement, by a direct get naming its subject.
        f"$JS.API.DIRECT.GET.{EVENTS}.nexus.evt.trust.*.announced",
        # The last fact on a subject it publishes to, when a publish came back "duplicate": its own,
        # or another's holding its msg id (bus.port.id_taken_by_another).
        *(f"$JS.API.DIRECT.GET.{EVENTS}.{subjects.job_kind_all(kind)}" for kind in subjects.NODE_FACTS),
        f"$JS.API.DIRECT.GET.{EVENTS}.nexus.evt.job.*.*.{node}",
        # Its own dispatch consumer, and nothing else's: on NEXUS_DISPATCH (it holds the node's
        # copies alone), and on NEXUS_EVENTS for an orchestrator or agent from before it.
        *(
            allowed
            for stream in (DISPATCH, EVENTS)
            for allowed in (
                f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
                f"$JS.ACK.{stream}.{durable}.>",
            )
        ),
    ]


PERMISSIONS_VERSION = "perms:10"
"""Tagged on every issued JWT; credentials issued under an older layout are issued again by `nexus up`."""


def permissions(role: Role, node: str | None = None, key: str | None = None) -> Permissions:
    """What `role` may do; `key`: the identity's own public nkey (it announces itself on
    `nexus.evt.trust.<key>.announced`, and on no other identity's subject)."""
    own = [subjects.trust(key, "announced")] if key is not None else []
    if role == "admin":
        return Permissions(publish=[">"], subscribe=[">"])
    if role == "agent":
        if node is None:
            raise ValueError("an agent identity needs its node id")
        # Replies only, under its own inbox prefix (subjects.node_inbox): never `_INBOX.>`, where
        # other agents' pulled dispatches and everyone's answers pass.
        return Permissions(publish=_agent(subjects.check_id(node, "node id")) + own, subscribe=[f"{subjects.node_inbox(node)}.>"])
    if node is not None:
        raise ValueError(f"--node is for agent identities, not {role}")
    publish = _read() + own
    if role in ("submitter", "approver"):
        publish += _submit()
    if role == "approver":
        publish += _approve()
    # Readers may also watch the log live with a plain core subscription (any NATS client).
    return Permissions(publish=publish, subscribe=[INBOX, subjects.EVENTS_ALL, subjects.OUTPUT_ALL])
