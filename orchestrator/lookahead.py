"""A replay's read-ahead: signature verdicts taken from signed checkpoints instead of re-checked.

The live orchestrator checked every record's signature when it folded it, and its signed
`trust.checkpoint` says so: every signed record of `verified_from`..`upto_seq` held, except
those named in `unverified` (schemas.trust). A replay may take those verdicts, at one Ed25519
verification per checkpoint instead of one per record, when all of this holds:

- the checkpoint's own signature holds, and its signer is an admin *service* identity (the
  orchestrator) announced by a JWT of a trusted account before it, as the fold will learn it:
  an identity announced later, a submitter, an agent or a forged key vouches for nothing;
- the hash chain recomputed here over the very records the replay will fold, from the
  projection's own chain value, equals the checkpoint's `chain` at `upto_seq`. The chain links
  each record's seq, subject, server time, sha256 of its bytes, signer and signature, so the
  verdicts are about exactly those bytes: an altered, inserted, removed or reordered record
  makes it differ, and the checkpoint is then not used;
- the records are still waiting here (not released to the fold), and the verdicts are well
  formed (every named seq inside the range).

Anything else is verified one by one, as before: records before `verified_from`, records no
checkpoint covers (the tail of the log, or more than LOOKAHEAD waiting), old checkpoints
without verdicts, announcements (checked here, ahead, so the identities are known in order).
Only the signature arithmetic is taken from the checkpoint: who the signer is and whether
they may make the event are decided by the fold, for every record, as before. `nexus audit
verify` does not use this: it checks every signature itself.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass

from bus.identity import Verifier, signatures_hold
from orchestrator.core import audit
from orchestrator.projection import Link
from schemas.records import Record
from schemas.trust import TrustAnnounced, TrustCheckpoint

LOOKAHEAD = 20_000
"""Records held back waiting for a checkpoint; older ones are then verified one by one (the
orchestrator signs one every 1000 events, trailing its `upto_seq` by a few)."""


@dataclass(frozen=True)
class Released:
    """Records for the fold, in order, with their verdicts (None: to be verified one by one)
    and their links as computed here (Projection.apply_batch takes them instead of hashing again)."""

    records: list[Record]
    holds: list[bool | None] | None
    links: list[Link | None]


class Lookahead:
    """Fed the log in order (`add`), gives it back in order (`Released`), vouched for or not."""

    def __init__(self, verifier: Verifier, chain: str | None) -> None:
        # Its own verifier: it learns the announcements as they arrive, ahead of the fold's.
        self.verifier = Verifier(verifier.trusted)
        self.verifier.known.update(verifier.known)
        self.chain = chain  # after the last record added (None: unknown, nothing is vouched for)
        self.vouched = 0
        self._waiting: collections.deque[tuple[Record, Link | None, bool | None]] = collections.deque()

    def add(self, records: Iterable[Record]) -> list[Released]:
        out: list[Released] = []
        for rec in records:
            checked = None
            if isinstance(rec.event, TrustAnnounced | TrustCheckpoint):
                checked = signatures_hold([rec])[0]
                self.verifier.learn(rec, checked)
            linked = None
            if self.chain is not None:
                digest = audit.digest(rec.raw)
                chain = audit.link(self.chain, rec.seq, rec.subject, rec.stream_ts, digest, rec.signer, rec.signature)
                linked, self.chain = Link(digest, self.chain, chain), chain
            self._waiting.append((rec, linked, checked))
            if isinstance(rec.event, TrustCheckpoint):
                out.extend(self._vouch(rec, rec.event, checked))
        if len(self._waiting) > LOOKAHEAD:
            out.append(self._release(len(self._waiting) - LOOKAHEAD // 2))
        return out

    def finish(self) -> list[Released]:
        """The records no checkpoint came for."""
        return [self._release(len(self._waiting))] if self._waiting else []

    def _vouch(self, rec: Record, cp: TrustCheckpoint, holds: bool | None) -> list[Released]:
        start = cp.verified_from
        if start is None or not self._waiting or not self._waiting[0][0].seq <= cp.upto_seq:
            return []
        author = self.verifier.check(rec, holds).author
        if author is None or not author.service:
            return []
        bad = set(cp.unverified)
        if start > cp.upto_seq or any(not start <= s <= cp.upto_seq for s in bad):
            return []
        upto = cp.upto_seq - self._waiting[0][0].seq + 1  # how many waiting records it names
        if upto > len(self._waiting):
            return []
        last, linked, _checked = self._waiting[upto - 1]
        if last.seq != cp.upto_seq or linked is None or linked.chain != cp.chain:
            return []
        out = []
        if self._waiting[0][0].seq < start:  # checked by an earlier orchestrator run: not vouched for here
            out.append(self._release(start - self._waiting[0][0].seq))
            upto -= len(out[0].records)
        records, holds_of, links = [], [], []
        for _ in range(upto):
            r, linked, checked = self._waiting.popleft()
            records.append(r)
            holds_of.append(checked if checked is not None or r.signer is None else r.seq not in bad)
            links.append(linked)
        self.vouched += len(records)
        out.append(Released(records, holds_of, links))
        return out

    def _release(self, n: int) -> Released:
        taken = [self._waiting.popleft() for _ in range(n)]
        return Released([r for r, _, _ in taken], None, [linked for _, linked, _ in taken])
