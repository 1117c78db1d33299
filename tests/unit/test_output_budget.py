"""agent.pty_output.OutputBudget: what is kept of a run's output past the node's limit."""

from __future__ import annotations

from agent.pty_output import OutputBudget


def test_no_limit_keeps_everything() -> None:
    budget = OutputBudget(None)
    assert budget.keep(b"x" * 10_000) == b"x" * 10_000
    assert (budget.dropped, budget.kept) == (0, 0)  # nothing counted: nothing to enforce


def test_the_first_bytes_are_kept_byte_exact_and_the_rest_counted() -> None:
    budget = OutputBudget(10)
    assert budget.keep(b"abcd") == b"abcd"
    assert budget.keep(b"efghijkl") == b"efghij"  # cut inside a chunk: a prefix of it
    assert budget.keep(b"mnop") == b""
    assert budget.keep(b"") == b""
    assert (budget.kept, budget.dropped) == (10, 6)


def test_a_limit_of_exactly_the_output_drops_nothing() -> None:
    budget = OutputBudget(8)
    assert budget.keep(b"12345678") == b"12345678"
    assert budget.dropped == 0
    assert budget.keep(b"9") == b""
    assert budget.dropped == 1
