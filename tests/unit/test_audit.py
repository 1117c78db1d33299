"""The hash chain over the log and the audit trail (orchestrator.core.audit): pure, on plain lists."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from orchestrator.core import audit
from orchestrator.core.audit import GENESIS, Entry, Stored, Trail

T0 = datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)


def entry(seq: int, payload: bytes | None = None, **kw: object) -> Entry:
    raw = payload if payload is not None else f'{{"n": {seq}}}'.encode()
    fields: dict[str, object] = {
        "seq": seq, "subject": f"nexus.evt.job.j{seq}.requested", "type": "job.requested",
        "ts": T0 + timedelta(seconds=seq), "digest": audit.digest(raw), "author": "orchestrator (admin)",
    }  # fmt: skip
    fields.update(kw)
    return Entry(**fields)  # type: ignore[arg-type]


def chain_of(entries: list[Entry]) -> list[str]:
    out, prev = [], GENESIS
    for e in entries:
        assert e.digest is not None
        prev = audit.link(prev, e.seq, e.subject, e.ts, e.digest, e.signer, e.signature)
        out.append(prev)
    return out


def stored(entries: list[Entry], errors: dict[int, str] | None = None) -> list[Entry]:
    """The entries as a file would hold them, each with its stored chain value."""
    chains, errors = chain_of(entries), errors or {}
    return [msgspec.structs.replace(e, stored=Stored(chain=c, error=errors.get(e.seq))) for e, c in zip(entries, chains, strict=True)]


def checkpoint(seq: int, upto: int, chain: str) -> Entry:
    return entry(seq, f'{{"upto_seq": {upto}}}'.encode(), subject="nexus.evt.trust.orchestrator.checkpoint", type="trust.checkpoint",
                 checkpoint=(upto, chain))  # fmt: skip


def run(entries: list[Entry], last_seq: int | None = None) -> audit.AuditReport:
    trail = Trail("test", ["AKEY"])
    for e in entries:
        trail.add(e)
    return trail.finish(last_seq=last_seq)


# ---------------------------------------------------------------- digest and link


def test_digest_is_the_sha256_of_the_stored_bytes() -> None:
    assert audit.digest(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_link_is_deterministic_and_depends_on_every_field() -> None:
    base = (GENESIS, 7, "nexus.evt.job.a.requested", T0, "ab" * 32, "UKEY", "sig")
    first = audit.link(*base)
    assert first == audit.link(*base) and len(first) == 64
    changed = [
        ("1" * 64, *base[1:]), (base[0], 8, *base[2:]), (*base[:2], "nexus.evt.job.b.requested", *base[3:]),
        (*base[:3], T0 + timedelta(microseconds=1), *base[4:]), (*base[:4], "cd" * 32, *base[5:]),
        (*base[:5], None, base[6]), (*base[:6], None), (*base[:6], "sig2"),
    ]  # fmt: skip
    assert all(audit.link(*c) != first for c in changed)  # type: ignore[arg-type]


def test_null_and_empty_fields_differ_and_fields_do_not_run_together() -> None:
    assert audit.link(GENESIS, 1, "s", T0, "d", None, None) != audit.link(GENESIS, 1, "s", T0, "d", "", None)
    assert audit.link(GENESIS, 1, "s", T0, "d", "ab", "c") != audit.link(GENESIS, 1, "s", T0, "d", "a", "bc")


def test_the_time_is_the_same_instant_in_any_zone_and_naive_means_utc() -> None:
    later = T0.astimezone(timezone_plus_2())
    assert audit.chain_time(T0) == audit.chain_time(later) == audit.chain_time(T0.replace(tzinfo=None)) == "2026-11-24T10:00:00.123456Z"
    assert audit.link(GENESIS, 1, "s", T0, "d", None, None) == audit.link(GENESIS, 1, "s", later, "d", None, None)


def test_the_link_encoding_is_pinned() -> None:
    # Values of the encoding in the module docstring: any implementation must give these
    # (a verifier written elsewhere, or a faster one here), or every stored chain breaks.
    assert audit.link(GENESIS, 7, "nexus.evt.job.a.requested", T0, "ab" * 32, "UKEY", None) == (
        "6f796ae3d43dfb7c2082478548c80ddd1c8e9175f8314d17808030e7b7471852"
    )
    assert audit.link(GENESIS, 7, "nexus.evt.job.é.requested", T0.replace(microsecond=0), "ab" * 32, None, "sig") == (
        "34ff168779120dd6f2b5715e9bfe4a7cc17fba97986cadfd62f259736fa66141"
    )
    assert audit.chain_time(T0.replace(microsecond=0)) == "2026-11-24T10:00:00.000000Z"


def timezone_plus_2() -> object:
    from datetime import timezone

    return timezone(timedelta(hours=2))


# ---------------------------------------------------------------- the trail over a log


def test_an_intact_log_with_a_matching_checkpoint_is_ok_and_covered() -> None:
    events = [entry(s) for s in (1, 2, 3)]
    chains = chain_of(events)
    report = run([*events, checkpoint(4, 3, chains[2]), entry(5)])
    assert report.ok, report.problems
    assert (report.events, report.applied, report.authentic, report.checkpoints, report.covered_upto) == (5, 5, 5, 1, 3)
    assert report.uncovered == 1  # seq 5 comes after the checkpoint; the checkpoint itself is not counted


def test_rejected_events_are_listed_and_not_a_problem() -> None:
    report = run([entry(1), entry(2, verdict="unsigned job.exited: only the node's agent may publish it; refused", author=None)])
    assert report.ok
    assert [(r.seq, r.reason[:8]) for r in report.rejected] == [(2, "unsigned")]
    assert report.applied == 1


def test_unsigned_requests_count_as_unsigned_allowed() -> None:
    report = run([entry(1, author=None), entry(2)])
    assert report.ok and (report.authentic, report.unsigned_allowed) == (1, 1)


def test_a_gap_names_the_missing_seqs() -> None:
    report = run([entry(1), entry(2), entry(5)])
    assert not report.ok
    assert [(p.seq, p.what.split(" missing")[0]) for p in report.problems] == [(3, "seqs 3-4")]


def test_a_seq_that_comes_again_is_named() -> None:
    report = run([entry(1), entry(2), entry(2)])
    assert [p.seq for p in report.problems] == [2] and "inserted or duplicated" in report.problems[0].what


def test_a_checkpoint_that_does_not_match_names_the_range_and_the_unprovable_rows() -> None:
    events = [entry(1), entry(2, author=None), entry(3)]
    honest = chain_of(events)
    altered = [events[0], entry(2, b'{"n": "changed"}', author=None), events[2]]
    report = run([*altered, checkpoint(4, 3, honest[2])])
    assert not report.ok and report.checkpoints == 0
    (problem,) = report.problems
    assert problem.seq == 4 and "seqs 1-3 was altered, removed or inserted" in problem.what and "one by one: 2" in problem.what


def test_a_checkpoint_for_a_seq_the_source_does_not_hold_cannot_be_checked() -> None:
    report = run([entry(1), checkpoint(2, 9, GENESIS)])
    assert [p.seq for p in report.problems] == [2]


def test_a_refused_checkpoint_is_rejected_not_counted() -> None:
    events = [entry(1)]
    forged = msgspec.structs.replace(checkpoint(2, 1, "f" * 64), verdict="unsigned trust.checkpoint: refused", author=None)
    report = run([*events, forged])
    assert report.ok and report.checkpoints == 0 and [r.seq for r in report.rejected] == [2]


def test_the_source_end_must_be_the_last_event() -> None:
    assert run([entry(1), entry(2)], last_seq=2).ok
    short = run([entry(1), entry(2)], last_seq=4)
    assert [p.seq for p in short.problems] == [3]
    assert [p.seq for p in run([entry(1), entry(2)], last_seq=1).problems] == [2]


# ---------------------------------------------------------------- the trail over a file's rows


def test_a_file_whose_stored_chain_follows_is_ok() -> None:
    rows = stored([entry(1), entry(2), entry(3)])
    assert run(rows).ok


def test_an_altered_digest_without_a_new_chain_is_named_at_its_row() -> None:
    rows = stored([entry(1), entry(2), entry(3)])
    rows[1] = msgspec.structs.replace(rows[1], digest="0" * 64)
    report = run(rows)
    assert [p.seq for p in report.problems] == [2]  # its own link breaks; the next one still follows from the stored value


def test_a_removed_row_is_named_by_the_gap_and_the_broken_link() -> None:
    rows = stored([entry(1), entry(2), entry(3)])
    report = run([rows[0], rows[2]])
    assert [p.seq for p in report.problems] == [2, 3]


def test_a_full_rewrite_of_the_chain_is_caught_only_by_the_signed_checkpoint() -> None:
    honest = [entry(1), entry(2), entry(3)]
    signed = checkpoint(4, 3, chain_of(honest)[2])
    forged = [honest[0], entry(2, b'{"n": "forged"}'), honest[2], signed]
    rows = stored(forged)  # the attacker recomputed every stored chain value
    report = run(rows)
    assert [p.seq for p in report.problems] == [4]


def test_the_file_and_the_replay_must_agree_on_what_counted() -> None:
    rows = stored([entry(1), entry(2)], errors={2: "refused"})
    report = run(rows)  # the file hides seq 2 as refused, the replay counts it
    assert [p.seq for p in report.problems] == [2] and "checked again it counts" in report.problems[0].what
    hidden = stored([entry(1), entry(2, verdict="signature does not verify: refused", author=None)])
    report = run(hidden)  # the file shows a forgery as counted
    assert [p.seq for p in report.problems] == [2] and "checked again it does not" in report.problems[0].what


def test_content_that_does_not_match_is_a_problem_a_signed_copy_is_listed() -> None:
    report = run([entry(1, content="altered"), entry(2, content="copy", note="a secret came in clear")])
    assert [p.seq for p in report.problems] == [1]
    assert [(c.seq, c.reason) for c in report.copies] == [(2, "a secret came in clear")] and report.unverifiable == []


def test_a_copy_statement_names_the_kind_the_record_and_the_stored_text() -> None:
    base = ("masked", 6, "nexus.evt.job.a.requested", "ab" * 32, '{"env": {"X_TOKEN": "********"}}')
    first = audit.copy_statement(*base)  # type: ignore[arg-type]
    assert first == audit.copy_statement(*base)  # type: ignore[arg-type]
    changed = [
        ("lossy", *base[1:]), (base[0], 7, *base[2:]), (*base[:2], "nexus.evt.job.b.requested", *base[3:]),
        (*base[:3], "cd" * 32, base[4]), (*base[:4], '{"env": {"X_TOKEN": "*******"}}'),
    ]  # fmt: skip
    assert all(audit.copy_statement(*c) != first for c in changed)  # type: ignore[arg-type]
    assert not first.startswith(b"nexus-chain-v1")  # never the bytes of a chain link


def test_rows_without_digest_or_chain_are_one_problem() -> None:
    rows = [msgspec.structs.replace(entry(s), digest=None, stored=Stored(chain=None, error=None)) for s in (1, 2)]
    report = run(rows)
    assert not report.ok and any("written before the chain existed" in p.what for p in report.problems)
