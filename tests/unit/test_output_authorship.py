"""core.authorship.output_refusal: output is a node fact (DESIGN §9). Pure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bus.port import OutputChunk
from orchestrator.core.authorship import output_refusal
from orchestrator.output_gate import OutputGate
from schemas.records import Author

AGENT_N1 = Author(key="UN1", name="n1", role="agent", node="n1")
AGENT_N2 = Author(key="UN2", name="n2", role="agent", node="n2")
ADMIN = Author(key="UA", name="orchestrator", role="admin", service=True)
VIEWER = Author(key="UV", name="vic", role="viewer")


def refusal(
    chunk_node: str | None,
    author: Author | None = None,
    *,
    attempt_node: str | None = "n1",
    problem: str | None = None,
    enforcing: bool = True,
) -> str | None:
    return output_refusal(attempt=1, attempt_node=attempt_node, chunk_node=chunk_node, author=author, problem=problem, enforcing=enforcing)


def test_the_attempts_node_signed_by_its_agent_or_admin_counts() -> None:
    assert refusal("n1", AGENT_N1) is None
    assert refusal("n1", ADMIN) is None
    # DESIGN §3's `nexus.out.<job>.<attempt>` with no Nexus-Node header: the signature says who
    assert refusal(None, AGENT_N1) is None


def test_without_identities_the_node_the_chunk_names_decides() -> None:
    assert refusal("n1", enforcing=False) is None
    assert refusal(None, enforcing=False) is None  # it names none
    assert "runs on 'n1'" in str(refusal("n2", enforcing=False))
    assert "gave to no node" in str(refusal("n1", attempt_node=None, enforcing=False))


@pytest.mark.parametrize(
    ("chunk_node", "author", "problem", "why"),
    [
        ("n2", AGENT_N2, None, "which runs on 'n1'"),  # another node's agent, on its own subject
        ("n1", AGENT_N2, None, "signed by the agent of 'n2'"),  # on n1's subject (a laxer server)
        ("n1", None, None, "unsigned output"),
        ("n1", VIEWER, None, "only the node's agent"),
        ("n1", None, "signature by 'n1' does not verify (altered or forged)", "does not verify"),
        (None, AGENT_N2, None, "signed by the agent of 'n2'"),  # names no node: the signer's decides
        (None, None, None, "unsigned output"),
    ],
)
def test_anything_else_is_refused_with_its_reason(chunk_node: str | None, author: Author | None, problem: str | None, why: str) -> None:
    reason = refusal(chunk_node, author, problem=problem)
    assert reason is not None and why in reason and reason.endswith("refused")


def test_a_chunk_stored_again_counts_once() -> None:
    gate = OutputGate(None)  # no identities: the node in the subject decides
    gate.nodes[1] = "n1"

    def chunk(seq: int, number: int) -> OutputChunk:
        return OutputChunk(seq=seq, attempt=1, number=number, data=b"x", stream_ts=datetime.now(UTC), subject="nexus.out.j.1.n1")

    assert [gate.judge(chunk(s, n)) for s, n in ((5, 1), (5, 1), (6, 2))] == [None, None, None]  # judged again: the same verdict
    assert gate.judge(chunk(90, 1)) == "a copy of chunk 1 of attempt 1, counted at seq 5"
    assert gate.judge(chunk(7, 0)) is None and gate.judge(chunk(8, 0)) is None  # no number: nothing to tell copies by


@pytest.mark.parametrize("said", ["n1", None, "x" * 100_000, "n1.n2", "n\u00e91", ""])
def test_the_node_a_chunk_names_is_read_as_a_node_id_or_as_none(said: str | None) -> None:
    """`Nexus-Node` is any bytes a publisher put there: a node id is taken as it is; anything else
    is refused as no node's, and never carried into logs and messages."""
    from nats.aio.msg import Msg

    from bus.nats_translate import NOT_A_NODE, to_output_chunk

    headers = {"Nexus-Chunk": "1"} | ({"Nexus-Node": said} if said is not None else {})
    reply = "$JS.ACK.NEXUS_OUTPUT.c.1.7.7.1765000000000000000.0"
    chunk = to_output_chunk(Msg(_client=None, subject="nexus.out.j.1", reply=reply, data=b"x", headers=headers))  # type: ignore[arg-type]
    assert chunk.node == (said if said in ("n1", None) else NOT_A_NODE)
    gate = OutputGate(None)
    gate.nodes[1] = "n1"
    verdict = gate.judge(chunk)
    assert verdict is None if said in ("n1", None) else (verdict is not None and "(not a node id)" in verdict and len(verdict) < 200)
