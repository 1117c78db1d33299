"""Sealing secret env values to a process's X25519 key (libsodium sealed boxes, through PyNaCl).

The wire forms are in schemas.secrets: anyone may seal to a public key, only the holder
of the private key opens. Clients seal to the orchestrator's key (published in the
`nexus-keys` bucket) with whom the value is for (`seal_bound`: `sealed:v2:`), the
orchestrator opens (`open_bound`), checks that, and seals the value again to the chosen
node's key (from its heartbeat; `seal`: `sealed:v1:`), the agent opens just before the spawn.

Here, not in schemas/ (which stays free of anything but msgspec) nor in orchestrator/
(the agent-only install has schemas/, bus/ and agent/): every process that talks over
the bus needs it. No cryptography is written here; PyNaCl does all of it.

Errors::

    SealingError          root (a NexusError)
    +-- SealedValueError  a value that is not sealed, does not decode, or was sealed to another key
    +-- KeyFileError      a key file that cannot be read, written, or is readable by others
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import stat
from pathlib import Path

import msgspec
import nacl.exceptions
from nacl.public import PrivateKey, PublicKey, SealedBox

from schemas.errors import NexusError
from schemas.secrets import BOUND_PREFIX, SEALED_PREFIX, Bound

KEY_FILE_HEADER = "nexus-sealing-key-v1"


class SealingError(NexusError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class SealedValueError(SealingError):
    """A sealed value that cannot be opened (or a public key that cannot be sealed to)."""


class KeyFileError(SealingError):
    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"sealing key {path}: {reason}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SealedValueError(f"{what} is not base64") from None


def public_key_of(text: str) -> PublicKey:
    """A base64 X25519 public key (as in a heartbeat or the `nexus-keys` bucket)."""
    raw = _unb64(text, "the public key")
    try:
        return PublicKey(raw)
    except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError, nacl.exceptions.ValueError):
        raise SealedValueError(f"the public key is not an X25519 key ({len(raw)} bytes)") from None


def seal(value: str, public_key: str) -> str:
    """`value` sealed to `public_key` (base64), in the wire form `sealed:v1:<base64>`."""
    box = SealedBox(public_key_of(public_key))
    return SEALED_PREFIX + _b64(box.encrypt(value.encode("utf-8", errors="surrogatepass")))


def seal_bound(value: str, public_key: str, *, requester: str | None = None, job: str | None = None) -> str:
    """`value` sealed to `public_key` for `requester` and/or `job` (`sealed:v2:<base64>` of `Bound`)."""
    if requester is None and job is None:
        raise ValueError("a bound value is for a requester or a job")
    box = SealedBox(public_key_of(public_key))
    return BOUND_PREFIX + _b64(box.encrypt(msgspec.json.encode(Bound(value=value, requester=requester, job=job))))


class SealingKey:
    """One process's X25519 key pair: its public half is advertised, its private half opens sealed values."""

    def __init__(self, private: PrivateKey) -> None:
        self._private = private
        self._box = SealedBox(private)
        self.public_key = _b64(bytes(private.public_key))

    @classmethod
    def generate(cls) -> SealingKey:
        """A new key, in memory only (tests, and in-process agents without a state dir)."""
        return cls(PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> SealingKey:
        """The key in `path`; created there (mode 0600, directory 0700) on first use, reused after.

        A key file readable by group or others is refused, as ssh refuses such a private key."""
        try:
            return cls._load(path)
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = PrivateKey.generate()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"{KEY_FILE_HEADER} {_b64(bytes(key))}\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # atomic, and never over a key another process just made
            except FileExistsError:
                return cls._load(path)
        except OSError as exc:
            raise KeyFileError(path, exc.strerror or str(exc)) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return cls(key)

    @classmethod
    def _load(cls, path: Path) -> SealingKey:
        try:
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise KeyFileError(path, f"readable by others (mode {stat.S_IMODE(mode):04o}); chmod 600 it")
            text = path.read_text("ascii")
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(path, getattr(exc, "strerror", None) or str(exc)) from None
        header, _, body = text.strip().partition(" ")
        if header != KEY_FILE_HEADER:
            raise KeyFileError(path, f"not a Nexus sealing key (expected {KEY_FILE_HEADER!r} first)")
        try:
            return cls(PrivateKey(_unb64(body, "the key")))
        except (SealedValueError, nacl.exceptions.CryptoError, nacl.exceptions.TypeError, nacl.exceptions.ValueError):
            raise KeyFileError(path, "the key is damaged (not 32 bytes of base64)") from None

    def open(self, value: str) -> str:
        """The clear text of a `sealed:v1:` value sealed to this key."""
        if not value.startswith(SEALED_PREFIX):
            raise SealedValueError(f"the value is not sealed ({SEALED_PREFIX}...)")
        try:
            return self._decrypt(value[len(SEALED_PREFIX) :]).decode("utf-8", errors="surrogatepass")
        except UnicodeDecodeError:
            raise SealedValueError("its clear text is not UTF-8") from None

    def open_bound(self, value: str) -> Bound:
        """The clear text of a sealed value, with whom it is for: a `sealed:v2:` value's `Bound`;
        a `sealed:v1:` value is for no one in particular (neither field set)."""
        if value.startswith(SEALED_PREFIX):
            return Bound(value=self.open(value))
        if not value.startswith(BOUND_PREFIX):
            raise SealedValueError("the value is not sealed")
        try:
            bound = msgspec.json.decode(self._decrypt(value[len(BOUND_PREFIX) :]), type=Bound)
        except msgspec.DecodeError as exc:
            raise SealedValueError(f"its clear text is not a bound value: {exc}") from None
        if bound.requester is None and bound.job is None:
            raise SealedValueError("it is bound to no requester and no job")
        return bound

    def _decrypt(self, body: str) -> bytes:
        data = _unb64(body, "the sealed value")
        try:
            return self._box.decrypt(data)
        except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError, nacl.exceptions.ValueError):
            raise SealedValueError("it was sealed to another key, or altered") from None
