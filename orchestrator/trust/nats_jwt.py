"""NATS decentralized-auth JWTs (operator, account, user) and `.creds` files.

The format is NATS's own (github.com/nats-io/jwt v2): a JWT whose header says
`"alg": "ed25519-nkey"`, signed by the issuer's nkey. Signing and verifying are
the `nkeys` library's (Ed25519 through PyNaCl); this module only lays the claims
out and base64url-encodes them. Every official NATS client reads the `.creds`
file written by `creds_file` (nats-py: `user_credentials=`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from typing import Any

import nacl.signing
import nkeys  # type: ignore[import-untyped]

from bus.identity import IdentityError, decode_jwt, read_creds

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}

PREFIXES = {
    "operator": nkeys.PREFIX_BYTE_OPERATOR,
    "account": nkeys.PREFIX_BYTE_ACCOUNT,
    "user": nkeys.PREFIX_BYTE_USER,
}


# Reading and verifying are the bus's (agents verify too): one implementation.
JwtError = IdentityError
decode = decode_jwt
__all__ = ["JwtError", "creds_file", "decode", "encode", "is_user_key", "keypair", "new_seed", "public_key", "read_creds"]


def new_seed(kind: str) -> bytes:
    """A fresh nkey seed (`SO...` operator, `SA...` account, `SU...` user)."""
    return bytes(nkeys.encode_seed(bytes(nacl.signing.SigningKey.generate()), PREFIXES[kind]))


def keypair(seed: bytes) -> nkeys.KeyPair:
    return nkeys.from_seed(bytearray(seed))


def public_key(seed: bytes) -> str:
    return str(keypair(seed).public_key.decode())


def is_user_key(key: str) -> bool:
    """A well-formed public user nkey: `U...`, its prefix byte and checksum right."""
    try:
        raw = base64.b32decode(key + "=" * (-len(key) % 8))
    except (binascii.Error, ValueError):
        return False
    return len(raw) == 35 and raw[0] == nkeys.PREFIX_BYTE_USER and bytes(nkeys.crc16_checksum(raw[:-2])) == raw[-2:]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(issuer_seed: bytes, subject: str, name: str, nats: dict[str, Any], *, expires_s: int | None = None) -> str:
    """A JWT for `subject` (a public nkey) signed by `issuer_seed`."""
    issuer = keypair(issuer_seed)
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    if expires_s is not None:
        claims["exp"] = claims["iat"] + expires_s
    # The JWT id: a digest of the claims, as nats-io/jwt computes it (base32, no padding).
    body = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    claims["jti"] = base64.b32encode(hashlib.sha256(body).digest()).decode().rstrip("=")
    signing_input = f"{_b64(json.dumps(HEADER, separators=(',', ':')).encode())}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
    return f"{signing_input}.{_b64(issuer.sign(signing_input.encode()))}"


def creds_file(user_jwt: str, user_seed: bytes) -> str:
    """The standard `.creds` text: the user JWT and the user's nkey seed."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed.decode()}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )
