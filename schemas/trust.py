"""Trust events (DESIGN §9): who may sign, and signed checkpoints over the log.

nexus.evt.trust.<key>.announced     an identity shows its credentials (user JWT) once per
                                    process start; <key> is its public nkey (U...)
nexus.evt.trust.<id>.checkpoint     the orchestrator's signed (seq, chain) over the log

Every signed message carries its signer's public nkey and the signature in two NATS headers
(bus.identity signs and verifies; here so that a reader without credentials needs no crypto).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from schemas.envelope import Envelope
from schemas.limits import Int64

SIGNER_HEADER = "Nexus-Signer"
SIG_HEADER = "Nexus-Sig"

Jwt = Annotated[str, msgspec.Meta(max_length=16 * 1024)]
Digest = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
MAX_UNVERIFIED = 10_000
"""Seqs a checkpoint may name in `unverified` (about 120 KB of JSON); beyond, it names none
and carries no verdicts."""


class TrustAnnounced(Envelope, frozen=True, kw_only=True, tag="trust.announced"):
    """An identity's user JWT (signed by the account): binds its public key to a name, a role
    and, for agents, a node. The message itself is signed by that key (proof of possession)."""

    jwt: Jwt


class TrustCheckpoint(Envelope, frozen=True, kw_only=True, tag="trust.checkpoint"):
    """The orchestrator's hash-chain value after applying the log up to `upto_seq`, and its
    verdicts on the signatures it checked: every signed record of `verified_from`..`upto_seq`
    held, except those named in `unverified`. A replay whose recomputed chain at `upto_seq`
    equals `chain` folds exactly those records, so it may take these verdicts instead of
    checking each signature again (orchestrator.replay)."""

    upto_seq: Int64
    chain: Digest
    verified_from: Int64 | None = None
    """The first seq the verdicts cover (None: no verdicts, as from an orchestrator before them)."""
    unverified: Annotated[tuple[Int64, ...], msgspec.Meta(max_length=MAX_UNVERIFIED)] = ()
    """The seqs of `verified_from`..`upto_seq` whose signature did not hold (normally none)."""


TrustEvent = TrustAnnounced | TrustCheckpoint
