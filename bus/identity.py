"""Who published an event: NATS identities (user JWT + nkey) and the signatures on Nexus events.

Every process with credentials signs what it publishes: the `Nexus-Signer` header
names its public nkey, `Nexus-Sig` carries an Ed25519 signature (the `nkeys`
library's) over the subject and the exact payload bytes (an output chunk: over the
SHA-256 of its bytes, see `output_signing_input`). Once per start it
publishes `nexus.evt.trust.<key>.announced` with its user JWT, so readers of the
log (the orchestrator, agents, `nexus audit verify`) learn which name, role and
node the key stands for, from a JWT whose signature chains to the account they
trust. Nothing here is a crypto primitive: signing and verifying are nkeys'.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing
import nkeys  # type: ignore[import-untyped]

from schemas import subjects
from schemas.envelope import Outgoing
from schemas.records import Author, Record
from schemas.trust import SIG_HEADER, SIGNER_HEADER, TrustAnnounced

TRUSTED_ACCOUNTS_ENV = "NEXUS_TRUSTED_ACCOUNTS"
_CONTEXT = b"nexus-sig-v1\n"
_OUTPUT_CONTEXT = b"nexus-out-sig-v1\n"
_COPY_CONTEXT = b"nexus-copy-sig-v1\n"
_PUBLIC_PREFIXES = {nkeys.PREFIX_BYTE_OPERATOR, nkeys.PREFIX_BYTE_ACCOUNT, nkeys.PREFIX_BYTE_USER}


class IdentityError(Exception):
    """Credentials or a JWT that do not parse or do not verify."""


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def decode_jwt(token: str, *, trusted_issuers: Iterable[str] | None = None) -> dict[str, Any]:
    """The claims of a NATS JWT whose signature verifies against its `iss` (and, given
    `trusted_issuers`, whose issuer is one of them). Raises IdentityError otherwise."""
    try:
        head, body, sig = token.strip().split(".")
        claims: dict[str, Any] = json.loads(_unb64(body))
        header = json.loads(_unb64(head))
        issuer = str(claims["iss"])
        signature = _unb64(sig)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise IdentityError(f"not a NATS JWT: {exc}") from None
    if not isinstance(header, dict) or header.get("alg") != "ed25519-nkey":
        raise IdentityError("not an ed25519-nkey JWT")
    if trusted_issuers is not None and issuer not in set(trusted_issuers):
        raise IdentityError(f"issued by {issuer}, which is not trusted here")
    if not _verify(issuer, f"{head}.{body}".encode(), signature):
        raise IdentityError("JWT signature does not verify")
    return claims


def _verify(key: str, data: bytes, signature: bytes) -> bool:
    verify_key = _verify_key(key)
    if verify_key is None:
        return False
    try:
        verify_key.verify(data, signature)
        return True
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False


def is_account_key(key: str) -> bool:
    """Whether `key` is an account's public nkey (A..., with a good checksum)."""
    return key.startswith("A") and _verify_key(key) is not None


@functools.lru_cache(maxsize=4096)
def _verify_key(key: str) -> nacl.signing.VerifyKey | None:
    """The Ed25519 key inside a public nkey (base32: a prefix byte, 32 key bytes, a CRC-16).
    nkeys.py verifies only with a seed in hand, so the public form is unpacked here and
    the verification itself is PyNaCl's."""
    try:
        raw = base64.b32decode(key + "=" * (-len(key) % 8))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 35 or raw[0] not in _PUBLIC_PREFIXES:
        return None
    body, crc = raw[:-2], raw[-2:]
    if bytes(nkeys.crc16_checksum(body)) != crc:
        return None
    return nacl.signing.VerifyKey(body[1:])


def author_of(claims: dict[str, Any]) -> Author:
    """Name, role and node from a user JWT's claims (tags `role:<r>`, `node:<n>`)."""
    tags = [str(t) for t in (claims.get("nats") or {}).get("tags") or []]
    role = next((t.removeprefix("role:") for t in tags if t.startswith("role:")), "")
    node = next((t.removeprefix("node:") for t in tags if t.startswith("node:")), None)
    service = role == "admin" and "service" in tags
    return Author(key=str(claims.get("sub", "")), name=str(claims.get("name", "")), role=role, node=node, service=service)


def read_creds(text: str) -> tuple[str, bytes]:
    """(user JWT, user seed) from a `.creds` file's text."""
    lines = [line.strip() for line in text.splitlines()]
    jwt = next((line for line in lines if line.count(".") == 2 and " " not in line), None)
    seed = next((line for line in lines if line.startswith("SU")), None)
    if jwt is None or seed is None:
        raise IdentityError("not a NATS .creds file (a user JWT and an SU... seed expected)")
    return jwt, seed.encode()


def signing_input(subject: str, data: bytes) -> bytes:
    return _CONTEXT + subject.encode() + b"\n" + data


def output_signing_input(subject: str, data: bytes) -> bytes:
    """What an output chunk's signature covers: its subject and the SHA-256 of its bytes.

    Ed25519 hashes the whole message it signs twice with SHA-512: over a 1 MiB chunk that was
    5.5 ms of the agent's CPU per chunk, four times everything else it does with one. SHA-256
    once, then a signature over 32 bytes, is 0.6 ms, and binds the chunk as firmly. Its own
    context string keeps an output signature from ever passing for an event's (`signing_input`)."""
    return _OUTPUT_CONTEXT + subject.encode() + b"\n" + hashlib.sha256(data).digest()


def output_signature_holds(subject: str, data: bytes, signer: str, signature: str) -> bool:
    """Whether an output chunk's `Nexus-Sig` verifies under the key in its `Nexus-Signer`
    (whether that key is the node's agent is the reader's question, as for events)."""
    try:
        raw = _unb64(signature)
    except (ValueError, binascii.Error):
        return False
    return _verify(signer, output_signing_input(subject, data), raw)


def copy_signature_holds(statement: bytes, signer: str, signature: str) -> bool:
    """Whether a file row's copy signature (`Identity.sign_copy`) verifies under `signer`'s key
    (whether that key may vouch for the file is the reader's question, as for events)."""
    try:
        raw = _unb64(signature)
    except (ValueError, binascii.Error):
        return False
    return _verify(signer, _COPY_CONTEXT + statement, raw)


class Identity:
    """This process's own identity, from its `.creds` file: signs what it publishes."""

    RECENT = 8192  # own signatures remembered (`made`): more than a burst's decisions in flight

    def __init__(self, jwt: str, seed: bytes) -> None:
        self.jwt = jwt
        # signature -> SHA-256 of what it was made over, for the latest RECENT publishes.
        self._recent: dict[str, bytes] = {}
        self._kp = nkeys.from_seed(bytearray(seed))
        self.key = self._kp.public_key.decode()
        self.claims: dict[str, Any] = json.loads(_unb64(jwt.split(".")[1]))
        self.author = author_of(self.claims)
        if self.author.key != self.key:
            raise IdentityError("the JWT in the credentials is not for their seed")

    @classmethod
    def from_creds(cls, path: str | os.PathLike[str]) -> Identity:
        try:
            with open(path) as fh:
                jwt, seed = read_creds(fh.read())
            return cls(jwt, seed)
        except (OSError, ValueError, nkeys.NkeysError) as exc:
            raise IdentityError(f"cannot read credentials {os.fspath(path)!r}: {exc}") from None

    @property
    def inbox_prefix(self) -> str | None:
        """The private inbox prefix these credentials grant (an agent's `_INBOX_NODE.<node>`), or
        None: the NATS default `_INBOX`. Taken from the JWT's subscribe permissions, so an agent
        whose credentials were issued before private inboxes keeps working until re-issued."""
        node = self.author.node
        if self.author.role != "agent" or node is None or not subjects.is_valid_id(node):
            return None
        prefix = subjects.node_inbox(node)
        allowed = ((self.claims.get("nats") or {}).get("sub") or {}).get("allow") or []
        return prefix if f"{prefix}.>" in allowed else None

    def may_publish(self, subject: str) -> bool:
        """Whether the JWT's publish permissions name `subject` (or allow everything): what
        credentials issued before a permission existed lack, so the caller takes the old way."""
        allowed = ((self.claims.get("nats") or {}).get("pub") or {}).get("allow") or []
        return subject in allowed or ">" in allowed

    def sign(self, subject: str, data: bytes) -> dict[str, str]:
        """The headers that make this publish attributable to this identity."""
        message = signing_input(subject, data)
        signature = _b64(self._kp.sign(message))
        recent = self._recent
        recent[signature] = hashlib.sha256(message).digest()
        if len(recent) > self.RECENT:
            del recent[next(iter(recent))]
        return {SIGNER_HEADER: self.key, SIG_HEADER: signature}

    def made(self, rec: Record) -> bool:
        """Whether this identity signed `rec`, exactly as it reads, in a recent publish: its own
        events read back from the log need no Ed25519 verification (58 us each). Ed25519 is
        deterministic, so the signature this key made over these bytes is this one, and it
        verifies; anything else (another signer, other bytes, an older publish) says False
        and is verified as usual."""
        if rec.signer != self.key or rec.signature is None:
            return False
        made_over = self._recent.get(rec.signature)
        return made_over is not None and made_over == hashlib.sha256(signing_input(rec.subject, rec.raw)).digest()

    def sign_output(self, subject: str, data: bytes) -> dict[str, str]:
        """The same headers for an output chunk, over its digest (`output_signing_input`)."""
        return {SIGNER_HEADER: self.key, SIG_HEADER: _b64(self._kp.sign(output_signing_input(subject, data)))}

    def sign_copy(self, statement: bytes) -> str:
        """A signature over a DuckDB row's copy of an event (orchestrator.core.audit.copy_statement):
        its own context string, so it never passes for an event's or an output chunk's."""
        return _b64(self._kp.sign(_COPY_CONTEXT + statement))

    def announcement(self) -> Outgoing:
        from schemas import msgids

        jti = str(self.claims.get("jti", "0"))[:16]
        return Outgoing(subjects.trust(self.key, "announced"), TrustAnnounced(jwt=self.jwt), msgids.trust(self.key, "announced", jti))


@dataclass(frozen=True)
class Checked:
    """Who made a record (None: unsigned, or not provably anyone) and what is wrong with it."""

    author: Author | None
    problem: str | None = None


class Verifier:
    """Learns identities from announcements (JWTs chaining to a trusted account) and checks
    each record's signature. Deterministic over the log: replaying gives the same answers."""

    def __init__(self, trusted_accounts: Iterable[str]) -> None:
        self.trusted = frozenset(trusted_accounts)
        self.known: dict[str, Author] = {}

    @classmethod
    def trusting_issuer_of(cls, identity: Identity | None) -> Verifier | None:
        """A verifier that trusts the account that issued `identity` (None without one), and the
        accounts listed in NEXUS_TRUSTED_ACCOUNTS (comma-separated: keys retired by a rotation,
        so history they signed still verifies on replay)."""
        if identity is None:
            return None
        retired = [k.strip() for k in os.environ.get(TRUSTED_ACCOUNTS_ENV, "").split(",") if k.strip()]
        return cls([str(identity.claims["iss"]), *retired])

    def learn(self, rec: Record, holds: bool | None = None) -> str | None:
        """Take in an identity announcement; the reason when it is not acceptable.
        `holds`: whether the record's signature verifies under its signer's key, when the
        caller has already checked it (`signatures_hold`); None: checked here."""
        if not isinstance(rec.event, TrustAnnounced):
            return None
        ref = rec.ref
        try:
            claims = decode_jwt(rec.event.jwt, trusted_issuers=self.trusted)
        except IdentityError as exc:
            return f"announcement refused: {exc}"
        author = author_of(claims)
        if ref is None or ref.id != author.key or rec.signer != author.key:
            return "announcement refused: not published and signed by the key it announces"
        if not (holds if holds is not None else self._signature_holds(rec, author.key)):
            return "announcement refused: signature does not verify"
        self.known[author.key] = author
        return None

    def check(self, rec: Record, holds: bool | None = None) -> Checked:
        """Who signed `rec`; `holds` as for `learn`."""
        return self._checked(rec.signer, lambda key: holds if holds is not None else self._signature_holds(rec, key))

    def check_output(self, subject: str, data: bytes, signer: str | None, signature: str | None) -> Checked:
        """Who signed an output chunk (its signature is over its digest: `output_signing_input`)."""
        return self._checked(signer, lambda key: signature is not None and output_signature_holds(subject, data, key, signature))

    def _checked(self, signer: str | None, holds: Callable[[str], bool]) -> Checked:
        if signer is None:
            return Checked(None)
        author = self.known.get(signer)
        if author is None:
            return Checked(None, f"signed by {signer}, which no trusted announcement names")
        if not holds(signer):
            return Checked(None, f"signature by {author.name!r} does not verify (altered or forged)")
        return Checked(author)

    @staticmethod
    def _signature_holds(rec: Record, key: str) -> bool:
        if rec.signature is None:
            return False
        try:
            signature = _unb64(rec.signature)
        except (ValueError, binascii.Error):
            return False
        return _verify(key, signing_input(rec.subject, rec.raw), signature)


def signatures_hold(records: Sequence[Record], own: Identity | None = None) -> list[bool | None]:
    """For each record, whether its signature verifies under the key in its `Nexus-Signer`
    header (None: unsigned). Whether that key is anyone trusted is `Verifier`'s question;
    this is the costly part (one Ed25519 verification each, tens of µs), the same for every
    reader, so it can run ahead of the fold and in threads: libsodium (PyNaCl, cffi) lets
    go of the GIL while it verifies. `own`: the reader's identity, whose own recent
    publishes need no verification (`Identity.made`)."""
    return [
        None if rec.signer is None else (own is not None and own.made(rec)) or Verifier._signature_holds(rec, rec.signer)
        for rec in records
    ]
