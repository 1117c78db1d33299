"""bus.identity: a process's own recent publishes need no Ed25519 verification when read back
(Identity.made), and nothing else passes for one (real keys from a keyring in a temp dir)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bus.identity import SIG_HEADER, SIGNER_HEADER, Identity, signatures_hold
from orchestrator.trust.keyring import Keyring
from schemas.records import Record

SUBJECT = "nexus.evt.job.J1.validated"


@pytest.fixture
def ring(tmp_path: Path) -> Keyring:
    keyring = Keyring(tmp_path / "creds")
    keyring.ensure()
    return keyring


def record(headers: dict[str, str], raw: bytes, subject: str = SUBJECT, seq: int = 1) -> Record:
    signer, signature = headers[SIGNER_HEADER], headers[SIG_HEADER]
    return Record(seq=seq, subject=subject, stream_ts=datetime.now(UTC), raw=raw, signer=signer, signature=signature)


def test_its_own_publish_read_back_is_known_and_holds(ring: Keyring) -> None:
    me = Identity.from_creds(ring.issue("admin", "orchestrator", service=True).path)
    rec = record(me.sign(SUBJECT, b'{"a":1}'), b'{"a":1}')
    assert me.made(rec)
    assert signatures_hold([rec], me) == [True] == signatures_hold([rec])


def test_other_bytes_another_subject_or_another_key_are_not_its_own(ring: Keyring) -> None:
    me = Identity.from_creds(ring.issue("admin", "orchestrator", service=True).path)
    other = Identity.from_creds(ring.issue("admin", "mallory").path)
    headers = me.sign(SUBJECT, b'{"a":1}')
    altered = record(headers, b'{"a":2}')  # its signature copied onto other bytes
    moved = record(headers, b'{"a":1}', subject="nexus.evt.job.J2.validated")
    assert not me.made(altered) and not me.made(moved)
    assert signatures_hold([altered, moved], me) == [False, False]  # verified as usual, and refused
    theirs = record(other.sign(SUBJECT, b'{"a":1}'), b'{"a":1}')
    assert not me.made(theirs) and signatures_hold([theirs], me) == [True]
    claimed = record({SIGNER_HEADER: me.key, SIG_HEADER: theirs.signature or ""}, b'{"a":1}')  # another's signature, my name
    assert not me.made(claimed) and signatures_hold([claimed], me) == [False]


def test_only_the_latest_publishes_are_remembered_and_older_ones_are_verified(ring: Keyring) -> None:
    me = Identity.from_creds(ring.issue("admin", "orchestrator", service=True).path)
    first = record(me.sign(SUBJECT, b"0"), b"0")
    for n in range(1, Identity.RECENT + 1):
        me.sign(SUBJECT, str(n).encode())
    assert not me.made(first)
    assert signatures_hold([first], me) == [True]  # still its signature: verified, and it holds
