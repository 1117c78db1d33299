"""The keyring's list of issued identities and its revocations (real keys, files in a temp dir)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.trust import nats_jwt
from orchestrator.trust.keyring import Keyring, KeyringError


@pytest.fixture
def ring(tmp_path: Path) -> Keyring:
    keyring = Keyring(tmp_path / "creds")
    keyring.ensure()
    return keyring


def _account_claims(ring: Keyring, config: str | None = None) -> dict[str, object]:
    text = ring.server_config() if config is None else config
    line = next(line for line in text.splitlines() if line.strip().startswith(ring.account_public_key))
    token = re.search(r'"(.+)"', line).group(1)  # type: ignore[union-attr]
    return nats_jwt.decode(token)["nats"]  # type: ignore[no-any-return]


def test_revoked_keys_go_into_the_account_jwt_and_the_operator_stays_the_same(ring: Keyring) -> None:
    eve = ring.issue("viewer", "eve")
    operator_line = ring.server_config().splitlines()[1]
    assert "revocations" not in _account_claims(ring)
    assert ring.revoke([eve.public_key]) == [eve.public_key]
    assert ring.revoke([eve.public_key]) == []  # once is enough
    assert set(_account_claims(ring)["revocations"]) == {eve.public_key}  # type: ignore[arg-type]
    assert ring.server_config().splitlines()[1] == operator_line  # a running server can reload it
    written = _account_claims(ring, (ring.dir / "server.conf").read_text())  # for servers of your own
    assert set(written["revocations"]) == {eve.public_key}  # type: ignore[arg-type]
    with pytest.raises(KeyringError, match="not a user public key"):
        ring.revoke([ring.account_public_key])


def test_every_identity_issued_is_listed_and_a_revoked_service_is_issued_again(ring: Keyring) -> None:
    first = ring.ensure_creds("admin", "orchestrator", service=True)
    key = nats_jwt.read_creds(first.read_text())[0]
    before = nats_jwt.decode(key)["sub"]
    assert ring.ensure_creds("admin", "orchestrator", service=True) == first
    assert [i.public_key for i in ring.issued()] == [before]
    ring.revoke([before])
    again = ring.ensure_creds("admin", "orchestrator", service=True)
    after = nats_jwt.decode(nats_jwt.read_creds(again.read_text())[0])["sub"]
    assert after != before and [(i.name, i.role) for i in ring.issued()] == [("orchestrator", "admin")] * 2


def test_a_damaged_revocation_list_is_said_not_ignored(ring: Keyring) -> None:
    (ring.dir / "revocations.json").write_text("{not json")
    with pytest.raises(KeyringError, match=r"revocations\.json is damaged"):
        ring.server_config()


def test_one_name_is_one_role(tmp_path: Path) -> None:
    """Names are what the record shows: a submitter named "orchestrator" read as the orchestrator
    in `nexus history`, and revoking that name took the real one down too. Another key for the
    same name and role (a rotation) is fine."""
    ring = Keyring(tmp_path / "keys")
    ring.ensure()
    ring.issue("admin", "orchestrator", service=True)
    with pytest.raises(KeyringError, match="'orchestrator' already names an identity with role 'admin'"):
        ring.issue("submitter", "orchestrator")
    assert ring.issue("admin", "orchestrator", service=True).name == "orchestrator"
