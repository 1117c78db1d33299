"""`nexus audit verify`: prove the log, or a DuckDB file made from it (DESIGN §9 "The log is evidence").

Both sources go through the same steps (orchestrator.core.audit is the pure part):

    log (NEXUS_EVENTS, through the bus)            file (`events` rows, read-only)
      every record, digest of its bytes              each row: its payload against its stored digest
                    \\                                 /
             the fold, replayed into a scratch DuckDB file: the reducer and the signature
             checks (bus.identity.Verifier, trusting the given account keys) say what
             each event did and who provably made it
                                   |
             core.audit.Trail: seqs contiguous, the chain recomputed (a file's stored chain
             values too), each signed checkpoint matched, the file's rows against the fold

A file's row whose payload is not the log's bytes (a secret that came in clear, masked;
bytes that were not UTF-8) counts only with its writer's copy signature (core.audit.copy_statement),
by an admin identity whose JWT the file keeps (`copy_signers`) and the trusted account issued;
without one the row is altered, whatever its payload looks like. What a file cannot prove by
itself is said, not failed: rows after the last checkpoint. The file's end is its writer's
signed `head` (core.audit.head_statement): without one that holds, the audit fails, since rows
cut from the end could not be told.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import msgspec

from bus.identity import IdentityError, Verifier, author_of, copy_signature_holds, decode_jwt, read_creds
from bus.port import EventBus
from orchestrator.core import audit
from orchestrator.core.audit import AuditReport, Content, CopyKind, Entry, Stored, Trail
from orchestrator.projection import Projection
from orchestrator.store import JOBS, NODES, PIPELINE_STEPS, PIPELINES, DuckDBStore
from schemas import codec
from schemas.errors import DecodeError
from schemas.records import Author, Record
from schemas.subjects import entity_of
from schemas.trust import TrustCheckpoint

Progress = Callable[[int], None]
HEAD_UNPROVEN = (
    "the file's end is not signed by an admin identity the trusted account issued (no `head` row, or its signature "
    "does not hold): rows removed from its end could not be told. A file from an older Nexus, or made without "
    "credentials: replay the log into a new file (`nexus replay`) to audit it"
)
BATCH = 1000
# Columns of an `events` row that the fold derives from the log: a file must agree on them.
DERIVED = ("type", "job_id", "node_id", "pipeline_id", "author", "author_role")
COPY_REASONS: dict[CopyKind, str] = {
    "masked": "a secret env value came in clear: the row masks it",
    "masked-invalid": "a payload that did not decode held secret env values in clear: the row masks them",
    "lossy": "the published bytes were not valid UTF-8: the row keeps a lossy copy",
}


class AuditError(Exception):
    """The audit cannot start (no trusted key, an unreadable file)."""


def trusted_account_of(creds: Path) -> str:
    """The account key that issued the identity in a `.creds` file: whom the log's signers must chain to."""
    try:
        jwt, _seed = read_creds(creds.read_text())
        return str(decode_jwt(jwt)["iss"])
    except (OSError, IdentityError, KeyError) as exc:
        raise AuditError(f"cannot read the account key from {str(creds)!r}: {exc}") from None


async def chain_upto(bus: EventBus, upto: int) -> str:
    """The chain value after record `upto`, recomputed from the log (for a file written
    before the chain existed: the orchestrator carries on from there)."""
    chain = audit.GENESIS
    if upto <= 0:
        return chain
    async for batch in bus.read_records(until_seq=upto):
        for rec in batch:
            chain = audit.link(chain, rec.seq, rec.subject, rec.stream_ts, audit.digest(rec.raw), rec.signer, rec.signature)
    return chain


async def verify_log(bus: EventBus, trusted: Iterable[str], progress: Progress | None = None) -> AuditReport:
    """Audit the whole log as it is now."""
    end = await bus.last_seq()
    with _Replay(f"log {bus.url}", trusted) as replay:
        if end > 0:
            async for batch in bus.read_records(until_seq=end):
                replay.feed([_Item(rec, audit.digest(rec.raw)) for rec in batch])
                if progress:
                    progress(batch[-1].seq)
        return replay.finish(last_seq=end)


def verify_file(path: Path, trusted: Iterable[str], progress: Progress | None = None) -> AuditReport:
    """Audit the `events` table of a DuckDB file, opened read-only."""
    if not path.is_file():
        raise AuditError(f"no such DuckDB file: {path}")
    trusted = list(trusted)
    try:
        store = DuckDBStore(path, read_only=True)
    except duckdb.Error as exc:
        raise AuditError(f"{path} is not a DuckDB file this audit can read: {str(exc).splitlines()[0]}") from None
    try:
        copies = _Copies(store, trusted)
        with _Replay(f"file {path}", trusted) as replay:
            for rows in _rows(store):
                replay.feed([copies.item(row) for row in rows])
                if progress and rows:
                    progress(int(rows[-1]["seq"]))
            end, end_chain = copies.head(store)
            replay.compare_derived(store)
            return replay.finish(last_seq=end, head_chain=end_chain)
    except duckdb.Error as exc:  # a table or column missing or changed: not a state file as Nexus writes them
        raise AuditError(f"{path} cannot be read as a Nexus state file: {str(exc).splitlines()[0]}") from None
    finally:
        store.close()


def count_file(path: Path) -> int:
    store = DuckDBStore(path, read_only=True)
    try:
        row = store.con.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0]) if row else 0
    finally:
        store.close()


# ---------------------------------------------------------------- the replay


@dataclass(frozen=True)
class _Item:
    record: Record
    digest: str | None
    content: Content = "verified"
    note: str | None = None
    stored: dict[str, Any] | None = None


class _Replay:
    """The fold of what is fed, into a scratch file, and the trail over it."""

    def __init__(self, source: str, trusted: Iterable[str]) -> None:
        self.trusted = sorted(set(trusted))
        self.trail = Trail(source, self.trusted)
        self.verifier = Verifier(self.trusted)
        self._dir = tempfile.TemporaryDirectory(prefix="nexus-audit-")
        self.store = DuckDBStore(Path(self._dir.name) / "replay.duckdb")
        self.projection = Projection(self.store, verifier=self.verifier)
        self.unproven_authors: set[str] = set()  # jobs and pipelines whose request is a copy

    def __enter__(self) -> _Replay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close()
        self._dir.cleanup()

    def feed(self, items: list[_Item]) -> None:
        if not items:
            return
        # A copy's signer cannot be checked again (its signed bytes are not in the file): who it
        # names as requester is the file writer's word, compared for nothing here or below.
        self.unproven_authors.update(e.id for i in items if i.content != "verified" and (e := entity_of(i.record.subject)))
        self.projection.apply_batch([i.record for i in items])
        seqs = [i.record.seq for i in items]
        cur = self.store.con.execute(
            f"SELECT seq, error, {', '.join(DERIVED)} FROM events WHERE seq BETWEEN ? AND ?", [min(seqs), max(seqs)]
        )
        names = [d[0] for d in cur.description or []]
        folded = {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}
        for item in items:
            self.trail.add(self._entry(item, folded.get(item.record.seq)))

    def _entry(self, item: _Item, row: dict[str, Any] | None) -> Entry:
        rec = item.record
        if row is None:  # the fold skips a seq it has passed: the trail names it
            row = {"error": "not replayed: out of order", "type": rec.kind, "author": None, "author_role": None}
        stored = None
        if item.stored is not None:
            # Who signed a row whose signed bytes are not in the file cannot be told again.
            compared = DERIVED if item.content == "verified" else tuple(c for c in DERIVED if c not in ("author", "author_role"))
            differs = [c for c in compared if item.stored.get(c) != row.get(c)]
            if differs and item.content != "altered":  # an altered payload is named so already; what it folds to says nothing more
                verb = "differs" if len(differs) == 1 else "differ"
                self.trail.problem(rec.seq, f"{row['type']}: the row's {', '.join(differs)} {verb} from what the log gives: altered")
            stored = Stored(chain=item.stored.get("chain"), error=item.stored.get("error"))
        author = None
        if row.get("author") is not None:
            author = f"{row['author']} ({row.get('author_role') or 'no role'})"
        checkpoint = (rec.event.upto_seq, rec.event.chain) if isinstance(rec.event, TrustCheckpoint) else None
        return Entry(
            seq=rec.seq,
            subject=rec.subject,
            type=str(row["type"]),
            ts=rec.stream_ts,
            digest=item.digest,
            signer=item.stored.get("signer") if item.stored is not None else rec.signer,
            signature=item.stored.get("signature") if item.stored is not None else rec.signature,
            verdict=row["error"],
            author=author,
            content=item.content,
            note=item.note,
            checkpoint=checkpoint,
            stored=stored,
        )

    def compare_derived(self, store: DuckDBStore) -> None:
        """The file's derived tables against what its proven events fold to (the replay here): a
        row edited, added or removed there is named, as one in `events` is. Checked only when
        the events themselves hold (a problem there already says the file cannot be trusted)."""
        if self.trail.report.problems:
            return
        for table in DERIVED_TABLES:
            key = (table.key,) if isinstance(table.key, str) else tuple(table.key)
            have = {r[0] for r in store.con.execute(_TABLE_COLUMNS, [table.name]).fetchall()}
            columns = [c for c, _ in table.columns if c in have]
            if not set(key) <= have:
                self.trail.problem(None, f"{table.name}: the table lacks its key {', '.join(key)}")
                continue
            select = f"SELECT {', '.join(f'CAST({c} AS VARCHAR)' for c in columns)} FROM {table.name}"
            rows = {_key(r, columns, key): r for r in store.con.execute(select).fetchall()}
            folded = {_key(r, columns, key): r for r in self.store.con.execute(select).fetchall()}
            found = [
                f"{table.name}: the row {'/'.join(k)} {what}"
                for k in sorted(rows.keys() | folded.keys())
                if (what := self._differs(k, columns, rows.get(k), folded.get(k)))
            ]
            for what in found[:MAX_DERIVED_NAMED]:
                self.trail.problem(None, what)
            if len(found) > MAX_DERIVED_NAMED:
                self.trail.problem(None, f"{table.name}: {len(found) - MAX_DERIVED_NAMED} more rows differ from what the log gives")

    def _differs(self, key: tuple[str, ...], columns: list[str], row: tuple[Any, ...] | None, want: tuple[Any, ...] | None) -> str | None:
        if row == want:
            return None
        if row is None:
            return "is missing, though the log has it"
        if want is None:
            return "is not in the log: added"
        cols = [c for c, a, b in zip(columns, row, want, strict=True) if a != b]
        if key[0] in self.unproven_authors and set(cols) <= _AUTHOR_COLUMNS:
            return None
        return f"differs from what the log gives in {', '.join(cols)}: altered (or written by another Nexus version: replay the log)"

    def finish(self, *, last_seq: int | None, head_chain: str | None = None) -> AuditReport:
        report = self.trail.report
        report.identities = len(self.verifier.known)
        if report.events and not self.verifier.known:
            keys = ", ".join(self.trusted) or "none given"
            self.trail.problem(
                None,
                f"no identity announced in this source chains to the trusted account key ({keys}): "
                "no event is provably authentic (a bus without credentials, or the wrong --account-key)",
            )
        if head_chain is None and last_seq is None and report.events:
            self.trail.problem(None, HEAD_UNPROVEN)
        return self.trail.finish(last_seq=last_seq, head_chain=head_chain)


# ---------------------------------------------------------------- a file's rows

DERIVED_TABLES = (JOBS, NODES, PIPELINES, PIPELINE_STEPS)
MAX_DERIVED_NAMED = 20
_AUTHOR_COLUMNS = frozenset({"requested_by", "requester", "requester_role"})
_TABLE_COLUMNS = "SELECT column_name FROM information_schema.columns WHERE table_name = ?"


def _key(row: tuple[Any, ...], columns: list[str], key: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(str(row[columns.index(k)]) for k in key)


_COLUMNS = (
    "seq", "subject", "type", "ts", "payload", "error", "digest", "chain", "signer", "signature",
    "copy_kind", "copy_signer", "copy_signature", *DERIVED,
)  # fmt: skip


def _rows(store: DuckDBStore) -> Iterator[list[dict[str, Any]]]:
    have = {r[0] for r in store.con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'events'").fetchall()}
    if not have:
        raise AuditError(f"{store.path} has no events table")
    select = ", ".join(dict.fromkeys(c if c in have else f"NULL AS {c}" for c in _COLUMNS))
    cur = store.con.execute(f"SELECT {select} FROM events ORDER BY seq")
    names = [d[0] for d in cur.description or []]
    while rows := cur.fetchmany(BATCH):
        yield [dict(zip(names, row, strict=True)) for row in rows]


UNSIGNED_COPY = (
    "no copy signature vouches for it; rows masked by a Nexus from before signed copies have none either: "
    "to audit those, replay the log into a new file (`nexus replay`)"
)


class _Copies:
    """Which rows of a file are their writer's signed copies (core.audit.copy_statement), decided
    by the signature alone: signed by an admin identity whose JWT the file keeps and a trusted
    account issued. Anyone else's, or none, and a payload that is not the log's bytes is altered."""

    def __init__(self, store: DuckDBStore, trusted: Iterable[str]) -> None:
        self.writers: dict[str, Author] = {}
        self.refused: dict[str, str] = {}
        for key, jwt in store.copy_signers():
            try:
                author = author_of(decode_jwt(jwt, trusted_issuers=trusted))
            except IdentityError as exc:
                self.refused[key] = f"its JWT in copy_signers does not hold: {exc}"
                continue
            if author.key != key:
                self.refused[key] = "the JWT copy_signers keeps for it is another key's"
            elif author.role != "admin":
                self.refused[key] = f"{author.name!r} ({author.role or 'no role'}) may not vouch for a file: only an admin identity"
            else:
                self.writers[key] = author

    def head(self, store: DuckDBStore) -> tuple[int | None, str | None]:
        """Where the file ends, as its writer signed it: (seq, chain there); (None, None) when no
        signed head holds (the audit then fails: rows cut from the end could not be told)."""
        head = store.head()
        if head is None:
            return None, None
        seq, chain, signer, signature = head
        writer = self.writers.get(signer)
        if writer is None or not copy_signature_holds(audit.head_statement(seq, chain), signer, signature):
            return None, None
        return seq, chain

    def item(self, row: dict[str, Any]) -> _Item:
        seq, subject, ts, payload = int(row["seq"]), str(row["subject"]), row["ts"], str(row["payload"] or "")
        digest = row["digest"]
        raw, content, note = self._content(row, payload, digest)
        signer, signature = row["signer"], row["signature"]
        error = None
        if content != "verified":
            # The signed bytes are not in the row: replay it as unsigned (a request still counts so).
            signer = signature = None
        if content == "copy" and row["copy_kind"] != "masked":
            error = "the payload did not decode"  # as the log's bytes did not: the copy might
        return _Item(_record(seq, subject, ts, raw, signer, signature, error), digest, content, note, row)

    def _content(self, row: dict[str, Any], payload: str, digest: str | None) -> tuple[bytes, Content, str | None]:
        """The payload's bytes as published when the row keeps them exactly, or whether it is a signed copy."""
        raw = payload.encode()
        if digest is None:
            return raw, "unverifiable", "no digest recorded"
        if audit.digest(raw) == digest:
            return raw, "verified", None
        if "\\u0000" in payload:  # a quarantined row has its NUL bytes escaped
            unescaped = payload.replace("\\u0000", "\x00").encode()
            if audit.digest(unescaped) == digest:
                return unescaped, "verified", None
        kind = next((k for k in COPY_REASONS if k == row["copy_kind"]), None)
        signer, signature = row["copy_signer"], row["copy_signature"]
        if kind is None or signer is None or signature is None:
            return raw, "altered", UNSIGNED_COPY
        writer = self.writers.get(signer)
        if writer is None:
            why = self.refused.get(signer, "no JWT in copy_signers")
            return raw, "altered", f"its copy is signed by {signer}: {why}"
        statement = audit.copy_statement(kind, int(row["seq"]), str(row["subject"]), digest, payload)
        if not copy_signature_holds(statement, signer, signature):
            return raw, "altered", f"its copy signature by {writer.name!r} does not verify"
        return raw, "copy", f"{COPY_REASONS[kind]}; the copy is signed by {writer.name!r}"


def _record(seq: int, subject: str, ts: datetime, raw: bytes, signer: str | None, signature: str | None, error: str | None) -> Record:
    base = Record(seq=seq, subject=subject, stream_ts=ts, raw=raw, signer=signer, signature=signature)
    if error is not None:
        return msgspec.structs.replace(base, error=error)
    try:
        return msgspec.structs.replace(base, event=codec.decode(subject, raw))
    except DecodeError as exc:
        return msgspec.structs.replace(base, error=exc.reason)
