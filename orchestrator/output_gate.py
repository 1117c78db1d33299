"""Which output chunks of a job count (DESIGN §9: output is a node fact): only those from the
node the orchestrator gave the attempt to and, once identities are enforced, signed by that
node's agent (core.authorship.output_refusal). Every reader of output applies it the same way:
a followed job (`app.follow`), `nexus logs`, the orchestrator's output tests.

Loads no crypto unless the reader has credentials (`nexus run` without them starts lean).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from bus.port import OutputChunk
from orchestrator.core import authorship
from schemas.events import JobAssigned, JobDispatch
from schemas.records import Record

if TYPE_CHECKING:
    from bus.identity import Verifier

Wait = Literal["wait"]
WAIT: Wait = "wait"


class OutputGate:
    """Which output chunks of one job count (core.authorship.output_refusal). Fed the job's
    vetted records (`learn`: the node of each attempt, from the orchestrator's `assigned` and
    `dispatch`), it answers for each chunk: None (it counts), the reason it is refused, or
    WAIT (its attempt's node is not known yet: a follower may read output before the record)."""

    def __init__(self, verifier: Verifier | None) -> None:
        self.verifier = verifier
        self.nodes: dict[int, str] = {}
        self.counted: dict[tuple[int, int], int] = {}  # (attempt, chunk number) -> the seq that counts

    def learn(self, rec: Record) -> None:
        match rec.event:
            case JobAssigned(node=node, attempt=attempt):
                self.nodes[attempt] = node
            case JobDispatch(attempt=attempt) if rec.ref is not None and rec.ref.node is not None:
                self.nodes[attempt] = rec.ref.node

    def judge(self, chunk: OutputChunk, *, final: bool = False) -> str | Wait | None:
        """`final`: every record that could name the attempt's node has been learnt."""
        attempt_node = self.nodes.get(chunk.attempt)
        if attempt_node is None and not final:
            return WAIT
        enforcing = self.verifier is not None and bool(self.verifier.known)
        author, problem = None, None
        if enforcing and self.verifier is not None:
            checked = self.verifier.check_output(chunk.subject, chunk.data, chunk.signer, chunk.signature)
            author, problem = checked.author, checked.problem
        refused = authorship.output_refusal(
            attempt=chunk.attempt, attempt_node=attempt_node, chunk_node=chunk.node, author=author, problem=problem, enforcing=enforcing
        )
        if refused is None and chunk.number > 0:
            # A chunk stored again (a reader's push consumer can deliver the stream's own messages
            # back into it once the duplicate window has passed) counts once: output stays byte-exact.
            first = self.counted.setdefault((chunk.attempt, chunk.number), chunk.seq)
            if first != chunk.seq:
                return f"a copy of chunk {chunk.number} of attempt {chunk.attempt}, counted at seq {first}"
        return refused
