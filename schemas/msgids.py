"""Nats-Msg-Id builders: every publish carries an id its retries share, so a retry is stored once.

The id names what is published and the one thing that makes it unique (for output
chunks, a random token the agent keeps for the chunk's retries); JetStream
drops a second publish with the same id inside the stream's duplicate window.
Listed in docs/events.md ("Nats-Msg-Id: retries never duplicate").
"""

from __future__ import annotations


def job(job_id: str, kind: str, discriminator: int | str) -> str:
    """`job:<id>:<kind>:<n>`: n is the attempt, a sequence, or a random token for requests a human may repeat."""
    return f"job:{job_id}:{kind}:{discriminator}"


def job_request(job_id: str) -> str:
    """The job id is the publisher's idempotency key: one `requested` per job."""
    return job(job_id, "requested", 1)


def pipeline(pipeline_id: str, kind: str, *parts: int | str) -> str:
    """`pipeline:<id>:<kind>[:<part>...]`."""
    return ":".join(["pipeline", pipeline_id, kind, *map(str, parts)])


def node(node_id: str, kind: str, seq: int) -> str:
    """`node:<id>:<kind>:<seq>`: seq is the node's last sequence the decision was made on."""
    return f"node:{node_id}:{kind}:{seq}"


def node_change(node_id: str, kind: str, token: str) -> str:
    """`node:<id>:<kind>:<token>`: an operator's change to a node (drained, undrained), each its own."""
    return f"node:{node_id}:{kind}:{token}"


def output(job_id: str, attempt: int, number: int, token: str) -> str:
    """`out:<id>:<attempt>:<chunk number>:<token>`. The duplicate window is the whole stream's,
    not one subject's: an id anyone could compute, another node's agent could store first (on
    its own subject) and the chunk would be dropped as its duplicate. So the agent draws a
    random token per chunk (128 bits) and keeps it for that chunk's retries."""
    return f"out:{job_id}:{attempt}:{number}:{token}"


def api(request_id: str, kind: str) -> str:
    return f"api:{request_id}:{kind}"


def reclaimed(msg_id: str, digest: str) -> str:
    """`<id>~<digest>`: where an event goes when a foreign message already holds its id
    (bus.port.reclaimed). The digest of its content keeps its retries one."""
    return f"{msg_id}~{digest}"


def trust(key: str, kind: str, part: str) -> str:
    """`trust:<key>:<kind>:<part>`: an identity's announcement (part: its JWT's id) or a checkpoint."""
    return f"trust:{key}:{kind}:{part}"
