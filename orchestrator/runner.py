"""The runner: the orchestrator's one publish path.

It takes a `Plan` from the planner (orchestrator.core.planner) and publishes it:

- the entity's own events as one chain with per-entity optimistic concurrency
  (the first expects the entity's last sequence, each next one the previous);
- the others (a verification job's `requested`, a step's job) idempotent by message id;
- a retryable failure leaves the plan to be tried again with the same message ids
  (`Outcome.RETRY`: the caller keeps it, or decides again on the next tick);
- a refusal that retrying cannot fix is `Outcome.REFUSED`, with the error, so the
  caller can reject the job rather than let it hold a node's slot.

It remembers, per entity, the sequence of its last publish (`pending`), so the
planner does not decide again from a view that has not caught up.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import structlog

from bus.errors import BusError, StaleDecision
from bus.port import EventBus
from orchestrator.core.planner import InFlight, Plan
from schemas.envelope import Outgoing

log = structlog.get_logger("nexus.orchestrator")


class Outcome(enum.Enum):
    DONE = "done"  # every event is in the log
    STALE = "stale"  # the entity moved on first: the planner decides again from the new state
    RETRY = "retry"  # the bus failed in a way that may pass: try the same plan again later
    REFUSED = "refused"  # the server refused an event for good


@dataclass(frozen=True)
class Published:
    outcome: Outcome
    expected: int | None = None  # the sequence the next own event would have expected
    error: BusError | None = None
    refused: Outgoing | None = None  # the event the server refused for good

    @property
    def settled(self) -> bool:
        """Nothing left to retry: done, overtaken, or refused for good."""
        return self.outcome is not Outcome.RETRY


class Runner:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.pending: dict[str, InFlight] = {}

    def folded(self, key: str, last_seq: int) -> None:
        """The entity's view has folded up to `last_seq`: our publish at or before it is no longer
        in flight (kept, `pending` would grow by every job the orchestrator ever decided)."""
        mine = self.pending.get(key)
        if mine is not None and mine.seq <= last_seq:
            del self.pending[key]

    async def publish(self, plan: Plan) -> Published:
        expected = plan.expected
        out: Outgoing | None = None
        try:
            for out in plan.outs:
                if plan.is_own(out):
                    seq = (await self.bus.publish(out, expected_seq=expected)).seq
                    expected = seq if plan.chained else expected
                    self.pending[plan.key] = InFlight(seq=seq, node=plan.node)
                else:
                    await self.bus.publish(out)
                log.info("decision.published", entity=plan.key, subject=out.subject, node=plan.node)
        except StaleDecision:
            log.debug("decision.stale", entity=plan.key, expected=expected)
            return Published(Outcome.STALE, expected)
        except BusError as exc:
            log.error("decision.publish_failed", entity=plan.key, error=str(exc), retryable=exc.retryable)
            if exc.retryable:
                return Published(Outcome.RETRY, expected, exc)
            return Published(Outcome.REFUSED, expected, exc, refused=out)
        return Published(Outcome.DONE, expected)
