"""The log as evidence (DESIGN §9): a hash chain over the event log, and what an audit finds. Pure.

Every record of NEXUS_EVENTS gets

    digest = sha256(the message bytes as stored in JetStream)
    chain  = link(chain of the previous record, seq, subject, server time, digest, signer, signature)

with the chain of "no previous record" being GENESIS. The projection stores both on each
`events` row; the orchestrator signs a `trust.checkpoint` naming (seq, chain) every so
often. Whoever recomputes the chain from the log, or from the rows of a DuckDB file,
and finds each signed checkpoint's value has proven that nothing up to that seq was
altered, removed or inserted: one changed byte changes every later chain value.

`Trail` is the audit itself over entries the I/O side (orchestrator.audit) builds from
the log or from a file: contiguity, the chain (recomputed; in a file also each row's
stored value), content against the digest, the fold's verdicts, signed checkpoints.

A file's writer also signs its end, `head_statement` (the last seq it stored and the chain
there), in the transaction that stores the rows: rows cut from the end of a file, even
with its `checkpoint` table edited to match, no longer agree with the signed head.

A row whose `payload` is not the log's bytes (a secret that came in clear, masked; bytes
that were not UTF-8, kept as a lossy copy) is a *copy*: the projection that wrote it signs
`copy_statement` (what kind of copy, of which record, which stored text) with its identity,
so a file proves such a row without the log, and nobody without that identity's key can
make a changed row pass for one.

The link's encoding, for anyone who writes their own verifier: sha256 over
`b"nexus-chain-v1"` followed by each field in order (prev, seq in decimal, subject,
time, digest, signer, signature), a null field as the byte `N`, any other as `S`, its
UTF-8 length as 8 bytes big-endian, and its UTF-8 bytes. The time is the server's
timestamp in UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (microseconds, as DuckDB keeps it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

import msgspec

GENESIS = "0" * 64
"""The chain value before the first record."""

CHAIN_WINDOW = 100_000
"""How far back (in seqs) a checkpoint may point and still be checked: the orchestrator
names the record it has just applied, so a checkpoint trails its `upto_seq` by a few."""

_TAG = b"nexus-chain-v1"
_COPY_TAG = b"nexus-copy-v1"
_HEAD_TAG = b"nexus-head-v1"


def digest(raw: bytes) -> str:
    """sha256 (hex) of a message's bytes as stored in the log."""
    return hashlib.sha256(raw).hexdigest()


def chain_time(ts: datetime) -> str:
    """The canonical text of a server timestamp in the chain (naive means UTC)."""
    if ts.tzinfo is UTC and ts.year >= 1000:  # the server's times: the same text, without strftime's cost
        return ts.isoformat(timespec="microseconds")[:-6] + "Z"
    aware = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def link(prev: str, seq: int, subject: str, stream_ts: datetime, digest: str, signer: str | None, signature: str | None) -> str:
    """The chain value of one record, given the previous record's."""
    return hashlib.sha256(_fields(_TAG, prev, str(seq), subject, chain_time(stream_ts), digest, signer, signature)).hexdigest()


def _fields(tag: bytes, *fields: str | None) -> bytes:
    parts = [tag]  # hashed in one call: the same bytes as one update per field
    for field in fields:
        if field is None:
            parts.append(b"N")
        else:
            data = field.encode("utf-8", errors="surrogatepass")
            parts.append(b"S" + len(data).to_bytes(8, "big") + data)
    return b"".join(parts)


CopyKind = Literal["masked", "masked-invalid", "lossy"]
"""Why a row's payload is not the log's bytes: secret env values that came in clear are masked
(in an event, or in a payload that did not decode); the bytes were not valid UTF-8 (the row
keeps them decoded with U+FFFD in place of the bad ones)."""


def copy_statement(kind: CopyKind, seq: int, subject: str, digest: str, payload: str) -> bytes:
    """What the writer of a file signs for a row whose `payload` is its copy of record `seq`
    (`digest`: of the log's bytes), not the bytes themselves: the kind, the record, and the
    sha256 of the stored text (UTF-8). Encoded as the chain's fields, after `nexus-copy-v1`."""
    stored = hashlib.sha256(payload.encode("utf-8", errors="surrogatepass")).hexdigest()
    return _fields(_COPY_TAG, kind, str(seq), subject, digest, stored)


def head_statement(seq: int, chain: str) -> bytes:
    """What the writer of a file signs for its end: the last seq it stored and the chain value
    there. Encoded as the chain's fields, after `nexus-head-v1`."""
    return _fields(_HEAD_TAG, str(seq), chain)


# ---------------------------------------------------------------- what an audit reads and reports

Content = Literal["verified", "copy", "unverifiable", "altered"]
"""Whether an entry's payload is the one its digest names: yes; the writer's signed copy of it
(secrets masked, or bytes that were not UTF-8: `copy_statement`); cannot tell (no digest); no."""


class Stored(msgspec.Struct, frozen=True, kw_only=True):
    """What a DuckDB file claims about a row, to be compared with the recomputation."""

    chain: str | None
    error: str | None


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One event as the audit sees it, in log order."""

    seq: int
    subject: str
    type: str
    ts: datetime
    digest: str | None
    """Of the payload as published (None: a row written before digests existed)."""
    signer: str | None = None
    signature: str | None = None
    verdict: str | None = None
    """Why the fold (reducer and signature checks) refused or ignored it; None: it counted."""
    author: str | None = None
    """The verified identity that signed it, when its signature holds."""
    content: Content = "verified"
    note: str | None = None
    checkpoint: tuple[int, str] | None = None
    """(upto_seq, chain) when it is a `trust.checkpoint`."""
    stored: Stored | None = None
    """A file's row: its stored chain and error. None when reading the log."""


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """Something that does not hold, named by the seq it is found at (None: the whole source)."""

    seq: int | None
    what: str


class Rejected(msgspec.Struct, frozen=True, kw_only=True):
    """An event that is in the log and changed nothing (a forgery, or one that came too late)."""

    seq: int
    type: str
    subject: str
    reason: str


class Unproven(msgspec.Struct, frozen=True, kw_only=True):
    """An event whose content this source cannot prove, and why."""

    seq: int
    type: str
    reason: str


class Copied(msgspec.Struct, frozen=True, kw_only=True):
    """A row that keeps its writer's signed copy of the event, not the log's bytes (`copy_statement`)."""

    seq: int
    type: str
    reason: str


class AuditReport(msgspec.Struct, kw_only=True):
    """The outcome of `nexus audit verify`: ok only when `problems` is empty."""

    source: str
    ok: bool = False
    events: int = 0
    first_seq: int = 0
    last_seq: int = 0
    applied: int = 0
    """Events that counted (changed state, or were recorded as they should be)."""
    authentic: int = 0
    """Of those, signed by an identity the trusted account vouches for, the signature holding."""
    unsigned_allowed: int = 0
    """Of those, unsigned where that is allowed (requests by external submitters)."""
    rejected: list[Rejected] = []
    checkpoints: int = 0
    """Signed checkpoints whose chain value the recomputation matches."""
    covered_upto: int = 0
    """The highest seq a matching checkpoint covers (0: none)."""
    uncovered: int = 0
    """Events after `covered_upto` (checkpoints themselves not counted): not yet covered by a checkpoint."""
    unverifiable: list[Unproven] = []
    copies: list[Copied] = []
    """Rows whose payload is their writer's signed copy (a secret masked, bytes that were not
    UTF-8): proven as that writer stored them; the log holds the bytes as published."""
    trusted_accounts: list[str] = []
    identities: int = 0
    """Identities the log announces that chain to a trusted account."""
    problems: list[Problem] = []


class Trail:
    """Walks entries in order and reports. Only the last CHAIN_WINDOW chain values are kept."""

    def __init__(self, source: str, trusted_accounts: Iterable[str] = ()) -> None:
        self.report = AuditReport(source=source, trusted_accounts=sorted(trusted_accounts))
        self._prev_seq = 0
        self._chain: str | None = GENESIS
        self._stored_prev: str | None = GENESIS
        self._chains: dict[int, str] = {}
        self._pending: list[tuple[int, bool]] = []  # (seq, provable one by one) since the last matching checkpoint
        self._legacy: list[int] = []

    def add(self, e: Entry) -> None:
        r = self.report
        r.events += 1
        r.first_seq = r.first_seq or e.seq
        r.last_seq = max(r.last_seq, e.seq)
        self._sequence(e)
        self._link(e)
        provable = self._content(e)
        provable = self._verdict(e) and provable
        if e.checkpoint is not None and e.verdict is None:
            self._checkpoint(e, *e.checkpoint)
        else:
            self._pending.append((e.seq, provable))

    def problem(self, seq: int | None, what: str) -> None:
        self.report.problems.append(Problem(seq=seq, what=what))

    def _sequence(self, e: Entry) -> None:
        if e.seq <= self._prev_seq:
            self.problem(e.seq, f"seq {e.seq} comes again after seq {self._prev_seq}: a row was inserted or duplicated")
            return
        if e.seq > self._prev_seq + 1:
            missing = range(self._prev_seq + 1, e.seq)
            shown = f"seq {missing[0]}" if len(missing) == 1 else f"seqs {missing[0]}-{missing[-1]}"
            self.problem(missing[0], f"{shown} missing: removed (the log never deletes)")
        self._prev_seq = e.seq

    def _link(self, e: Entry) -> None:
        if e.digest is None:
            self._legacy.append(e.seq)
            self._chain = self._stored_prev = None
            return
        if self._chain is not None:
            self._chain = link(self._chain, e.seq, e.subject, e.ts, e.digest, e.signer, e.signature)
            self._chains[e.seq] = self._chain
            self._chains.pop(e.seq - CHAIN_WINDOW, None)
        if e.stored is None:
            return
        if e.stored.chain is None:
            self._legacy.append(e.seq)
        elif self._stored_prev is not None and e.stored.chain != link(
            self._stored_prev, e.seq, e.subject, e.ts, e.digest, e.signer, e.signature
        ):
            self.problem(
                e.seq,
                f"{e.type}: its stored chain value does not follow from the row before: "
                "this row or the one before it was altered, removed or inserted",
            )
        self._stored_prev = e.stored.chain

    def _content(self, e: Entry) -> bool:
        if e.content == "altered":
            self.problem(e.seq, f"{e.type}: the payload does not match its digest: altered{f' ({e.note})' if e.note else ''}")
            return False
        if e.content == "copy":
            self.report.copies.append(Copied(seq=e.seq, type=e.type, reason=e.note or "the writer's signed copy"))
            return True
        if e.content != "verified":
            self.report.unverifiable.append(Unproven(seq=e.seq, type=e.type, reason=e.note or e.content))
            return False
        return True

    def _verdict(self, e: Entry) -> bool:
        r = self.report
        if e.stored is not None and (e.stored.error is None) != (e.verdict is None):
            if e.stored.error is None:
                self.problem(e.seq, f"{e.type}: the file shows it counted, but checked again it does not: {e.verdict}")
            else:
                self.problem(e.seq, f"{e.type}: the file shows it refused ({e.stored.error}), but checked again it counts")
        if e.verdict is not None:
            r.rejected.append(Rejected(seq=e.seq, type=e.type, subject=e.subject, reason=e.verdict))
            return True  # it changed nothing: nothing to prove
        r.applied += 1
        if e.author is not None:
            r.authentic += 1
            return True
        r.unsigned_allowed += 1
        return False

    def _checkpoint(self, e: Entry, upto: int, value: str) -> None:
        r = self.report
        known = self._chains.get(upto)
        if upto >= e.seq:
            self.problem(e.seq, f"checkpoint names seq {upto}, which is not before it")
        elif known is None:
            why = "rows before it carry no chain" if self._legacy else "it is not in this source or too far back"
            self.problem(e.seq, f"checkpoint for seq {upto} cannot be checked: {why}")
        elif known != value:
            since = r.covered_upto + 1
            suspects = [s for s, provable in self._pending if s <= upto and not provable]
            hint = f"; rows there not provable one by one: {_seqs(suspects)}" if suspects else ""
            self.problem(
                e.seq,
                f"the signed checkpoint says the chain at seq {upto} is {value[:16]}..., the rows give {known[:16]}...: "
                f"a row in seqs {since}-{upto} was altered, removed or inserted{hint}",
            )
        else:
            r.checkpoints += 1
            r.covered_upto = max(r.covered_upto, upto)
            self._pending = [(s, p) for s, p in self._pending if s > upto]

    def finish(self, *, last_seq: int | None = None, head_chain: str | None = None) -> AuditReport:
        """The report; `last_seq`: where the source says it ends (the stream's last seq, the file's
        signed head or checkpoint); `head_chain`: the chain value the file's signed head gives there."""
        r = self.report
        known = self._chains.get(last_seq) if last_seq is not None else None
        if head_chain is not None and last_seq == r.last_seq and known is not None and known != head_chain:
            self.problem(
                last_seq,
                f"the file's signed head says the chain at seq {last_seq} is {head_chain[:16]}..., the rows give "
                f"{known[:16]}...: a row was altered, removed or inserted",
            )
        if self._legacy:
            self.problem(
                self._legacy[0],
                f"{len(self._legacy)} rows carry no digest or chain ({_seqs(self._legacy)}): written before the chain "
                "existed; replay the log into a new file (`nexus replay`) to audit it",
            )
        said = f"the source holds up to seq {last_seq}"
        if last_seq is not None and last_seq > r.last_seq:
            self.problem(r.last_seq + 1, f"{said}, the last event is seq {r.last_seq}: rows at the end removed")
        elif last_seq is not None and last_seq < r.last_seq:
            self.problem(last_seq + 1, f"{said}, but events go on to seq {r.last_seq}: rows added")
        r.uncovered = len(self._pending)
        r.ok = not r.problems
        return r


def _seqs(seqs: list[int], most: int = 20) -> str:
    shown = ", ".join(str(s) for s in seqs[:most])
    return shown + (f" and {len(seqs) - most} more" if len(seqs) > most else "")
