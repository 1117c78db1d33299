"""The keys behind a Nexus deployment's NATS identities, and the credentials issued from them.

Layout of a keyring directory (`./.nexus/creds/` for `nexus up`; every file 0600):

    operator.nk        the operator's nkey seed: signs the account JWTs (trust anchor)
    account.nk         the NEXUS account's seed: signs every user JWT (`nexus creds new`)
    system.nk          the system account's seed (the server's own account)
    server.conf        the nats-server authorization block: operator JWT, account JWTs
    operator.jwt       the operator's JWT, system.jwt the system account's: made once, kept
    <name>.creds       issued credentials (user JWT + user seed)
    issued.jsonl       one line per identity issued: name, role, node, public key, when
    revocations.json   revoked user keys and since when (in the account JWT, so in server.conf)

NATS decentralized auth: the server trusts the operator, the operator signs the
accounts (preloaded in server.conf), the account signs users. So a new identity
needs no server change and no restart: `nexus creds new` signs a user JWT with
the account key and the server checks that signature on connect. Revoking one
(`nexus creds revoke`) lists its key in the account JWT's `revocations`: the server
refuses it once it has re-read server.conf (a reload, no restart).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.trust import nats_jwt
from orchestrator.trust.roles import PERMISSIONS_VERSION, Role, permissions

ACCOUNT_NAME = "NEXUS"
SERVICE_TAG = "service"  # an admin identity that acts for the users it authenticated (the API, the orchestrator)
SYSTEM_NAME = "SYS"
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")

# The NEXUS account: JetStream on, no other limits (streams are sized by Nexus itself).
_ACCOUNT_LIMITS = {
    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1,
    "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1, "max_ack_pending": -1,
    "mem_max_stream_bytes": -1, "disk_max_stream_bytes": -1, "max_bytes_required": False,
}  # fmt: skip


class KeyringError(Exception):
    pass


@dataclass(frozen=True)
class Issued:
    """An identity this keyring issued (one line of `issued.jsonl`)."""

    path: Path
    name: str
    role: Role
    node: str | None
    public_key: str
    issued_at: int
    expires_at: int | None = None

    def as_json(self) -> dict[str, object]:
        return {**self.__dict__, "path": str(self.path)}

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> Issued:
        return cls(**{**fields, "path": Path(fields["path"])})


class Keyring:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    # ------------------------------------------------------------ keys

    def exists(self) -> bool:
        return (self.dir / "account.nk").is_file()

    def ensure(self) -> None:
        """Create the operator, account and system keys on first use, then the server config."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        for name, kind in (("operator", "operator"), ("account", "account"), ("system", "account")):
            path = self.dir / f"{name}.nk"
            if not path.exists():
                _write_private(path, nats_jwt.new_seed(kind).decode() + "\n")
        self.write_server_config()

    def _seed(self, name: str) -> bytes:
        path = self.dir / f"{name}.nk"
        try:
            return path.read_text().strip().encode()
        except FileNotFoundError:
            raise KeyringError(f"no {name} key in {self.dir}: run `nexus up` once there, or point --keyring at the keys") from None

    @property
    def account_public_key(self) -> str:
        return nats_jwt.public_key(self._seed("account"))

    # ------------------------------------------------------------ server side

    def server_config(self) -> str:
        """The nats-server block that trusts this keyring's operator and preloads its accounts."""
        operator = self._seed("operator")
        op_pub = nats_jwt.public_key(operator)
        sys_pub = nats_jwt.public_key(self._seed("system"))
        acct_pub = self.account_public_key
        # Written once and kept: a running server reloads a new account JWT (revocations), but
        # not a changed operator.
        operator_claims = {"type": "operator", "system_account": sys_pub}
        operator_jwt = self._kept("operator.jwt", lambda: nats_jwt.encode(operator, op_pub, "nexus", operator_claims))
        system_claims = {"type": "account", "limits": {"conn": -1}}
        system_jwt = self._kept("system.jwt", lambda: nats_jwt.encode(operator, sys_pub, SYSTEM_NAME, system_claims))
        account: dict[str, object] = {"type": "account", "limits": _ACCOUNT_LIMITS}
        if revoked := self.revocations():
            account["revocations"] = revoked  # user key -> unix time: JWTs issued up to then are refused
        account_jwt = nats_jwt.encode(operator, acct_pub, ACCOUNT_NAME, account)
        return (
            "# Written by Nexus (orchestrator.trust.keyring): who the server trusts. Regenerated on start.\n"
            f"operator: {json.dumps(operator_jwt)}\n"
            f"system_account: {sys_pub}\n"
            "resolver: MEMORY\n"
            "resolver_preload: {\n"
            f"  {sys_pub}: {json.dumps(system_jwt)}\n"
            f"  {acct_pub}: {json.dumps(account_jwt)}\n"
            "}\n"
        )

    def _kept(self, name: str, make: Callable[[], str]) -> str:
        path = self.dir / name
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            token = make()
            _write_private(path, token + "\n")
            return token

    def write_server_config(self) -> Path:
        path = self.dir / "server.conf"
        _write_private(path, self.server_config())
        return path

    # ------------------------------------------------------------ identities

    def issue(
        self,
        role: Role,
        name: str,
        node: str | None = None,
        out: Path | None = None,
        *,
        service: bool = False,
        expires_s: int | None = None,
    ) -> Issued:
        """Sign a user JWT for `name` with `role`'s permissions and write its `.creds` (0600)."""
        if not _NAME.fullmatch(name):
            raise KeyringError(f"invalid name {name!r}: 1-64 of letters, digits, and _ . @ -")
        if role == "agent" and node is None:
            raise KeyringError("an agent identity needs --node")
        # The record shows names: one name, one role (a submitter named "orchestrator" read as the
        # orchestrator in `nexus history`, and revoking the name took the real one down too).
        if (other := next((i for i in self.issued() if i.name == name and i.role != role), None)) is not None:
            raise KeyringError(f"{name!r} already names an identity with role {other.role!r} here: one name, one role; pick another name")
        user_seed = nats_jwt.new_seed("user")
        user_pub = nats_jwt.public_key(user_seed)
        try:
            perms = permissions(role, node, user_pub)
        except ValueError as exc:
            raise KeyringError(str(exc)) from None
        claims = perms.claims()
        if service and role != "admin":
            raise KeyringError("only an admin identity can be a service (one that acts for the users it authenticated)")
        claims["tags"] = [f"role:{role}", *([f"node:{node}"] if node else []), *([SERVICE_TAG] if service else []), PERMISSIONS_VERSION]
        token = nats_jwt.encode(self._seed("account"), user_pub, name, claims, expires_s=expires_s)
        path = out if out is not None else self.dir / f"{name}.creds"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, nats_jwt.creds_file(token, user_seed))
        issued_at = int(nats_jwt.decode(token, trusted_issuers={self.account_public_key})["iat"])
        expires_at = issued_at + expires_s if expires_s is not None else None
        issued = Issued(path, name, role, node, user_pub, issued_at, expires_at)
        kept = dataclasses.replace(issued, path=path.resolve())  # the list outlives the working directory
        _append_private(self.dir / "issued.jsonl", json.dumps(kept.as_json()) + "\n")
        return issued

    def issued(self) -> list[Issued]:
        """Every identity issued here (since the keyring kept a list), oldest first."""
        try:
            lines = (self.dir / "issued.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        found = []
        for number, line in enumerate(lines, 1):
            try:
                found.append(Issued.from_json(json.loads(line)))
            except (ValueError, TypeError, KeyError) as exc:
                raise KeyringError(f"{self.dir / 'issued.jsonl'} line {number} is damaged: {exc}") from None
        return found

    # ------------------------------------------------------------ revocation

    def revocations(self) -> dict[str, int]:
        """Revoked user keys -> the unix time from which the server refuses them."""
        path = self.dir / "revocations.json"
        try:
            loaded = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise KeyringError(f"{path} is damaged: {exc}") from None
        if not isinstance(loaded, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in loaded.items()):
            raise KeyringError(f"{path} is damaged: not a map of user keys to unix times")
        return loaded

    def revoke(self, keys: Iterable[str]) -> list[str]:
        """Revoke user `keys` (public nkeys, U...) from now on and rewrite server.conf; returns
        the keys that were not revoked before. A running server applies it when it reloads."""
        revoked = self.revocations()
        now = int(time.time())
        new = []
        for key in keys:
            if not nats_jwt.is_user_key(key):
                raise KeyringError(f"not a user public key: {key!r} (a U... nkey, as `nexus creds list` shows)")
            if key not in revoked:
                revoked[key] = now
                new.append(key)
        if new:
            _write_private(self.dir / "revocations.json", json.dumps(revoked, indent=1, sort_keys=True) + "\n")
            self.write_server_config()
        return new

    def ensure_creds(self, role: Role, name: str, node: str | None = None, *, service: bool = False) -> Path:
        """`<name>.creds`, issued once and reused while it was issued by this account."""
        path = self.dir / f"{name}.creds"
        if path.is_file():
            try:
                token, _seed = nats_jwt.read_creds(path.read_text())
                claims = nats_jwt.decode(token, trusted_issuers={self.account_public_key})
                tags = set(claims.get("nats", {}).get("tags", []))
                if (
                    {f"role:{role}", PERMISSIONS_VERSION} <= tags
                    and (node is None or f"node:{node}" in tags)
                    and (SERVICE_TAG in tags) == service
                    and claims.get("sub") not in self.revocations()
                ):
                    return path
            except nats_jwt.JwtError:
                pass  # issued by another keyring, or damaged: issue again
        return self.issue(role, name, node, service=service).path


def _append_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as fh:
        fh.write(text)


def _write_private(path: Path, text: str) -> None:
    """Write a secret file readable by its owner only (created 0600, never world-readable in between)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
