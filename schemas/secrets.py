"""Secret `env` entries: which are secret, their sealed wire form, the mask, and the key record.

An `env` entry of a job is secret when its name matches the redaction patterns
(Buildkite's: `*_PASSWORD`, `*_TOKEN`, ...; the orchestrator's `--redacted-vars`
adds more), when its value is sealed, or when the request
names it in `secrets`. Clients seal every secret value to the orchestrator's
public key, bound to the job's requester or to the job (`sealed:v2:<base64>`, `Bound`:
a copy in another user's request is refused); the orchestrator seals it again to the
chosen node's key for the dispatch (`sealed:v1:<base64>`, the value alone); only the
agent opens it, just before the spawn.
Views show a secret's value as `MASK`, and the agent replaces it by `MASK` in
the job's output. The cryptography itself is in bus.sealing (PyNaCl); this module
is pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache

import msgspec

from schemas.envelope import Timestamp
from schemas.limits import Names

MASK = "********"
"""What a secret value is shown as: in DuckDB, in every view, in the job's output."""

SEALED_PREFIX = "sealed:v1:"
"""A sealed env value: this prefix, then the base64 of a libsodium sealed box (X25519 + XSalsa20-Poly1305)
of the value's UTF-8 bytes. What the orchestrator sends a node in a dispatch (which it signs, for that
node alone). In a request the orchestrator refuses it: anyone who can read the log could copy it into
a request of their own."""

BOUND_PREFIX = "sealed:v2:"
"""A sealed env value bound to whom it is for: this prefix, then the base64 of a sealed box of `Bound`
as JSON. What a request carries: the orchestrator opens it only for that requester or that job."""


class Bound(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The clear text of a `sealed:v2:` value: the value, and whom it may be used for (at least one)."""

    value: str
    requester: str | None = None
    """The job's requester as the record names it (the verified identity; the API's token user)."""
    job: str | None = None
    """The one job id it may be used in (a foreign client that does not sign its requests)."""

DEFAULT_REDACTED_VARS = (
    "*_PASSWORD",
    "*_SECRET",
    "*_TOKEN",
    "*_PRIVATE_KEY",
    "*_ACCESS_KEY",
    "*_SECRET_KEY",
    "*_CONNECTION_STRING",
)
"""Names of env entries that are secret unless configured otherwise (as Buildkite's redactor)."""

MIN_MASKED_BYTES = 4
"""Shorter secret values are not masked in output: masking `1` or `ab` would garble it without hiding anything."""

KEYS_BUCKET = "nexus-keys"
"""KV bucket of public keys: readable by every identity, written by the orchestrator only."""
ORCHESTRATOR_KEY = "orchestrator"
"""Key of the orchestrator's sealing key record in KEYS_BUCKET."""


class OrchestratorKey(msgspec.Struct, frozen=True, kw_only=True):
    """Value of `orchestrator` in the `nexus-keys` bucket: where clients seal secrets to, and which names are secret."""

    public_key: str
    """The orchestrator's X25519 public key, base64 (standard alphabet, padded)."""
    redacted_vars: Names = msgspec.field(default_factory=lambda: list(DEFAULT_REDACTED_VARS))
    """The orchestrator's redaction patterns (the defaults and its `--redacted-vars`): clients seal the env entries whose names match."""
    ts: Timestamp | None = None


def is_sealed(value: str) -> bool:
    return value.startswith((SEALED_PREFIX, BOUND_PREFIX))


@cache
def _pattern(globs: tuple[str, ...]) -> re.Pattern[str]:
    # `*` any run of characters, `?` one; everything else literal; names compare case-insensitively.
    parts = ["".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in g) for g in globs if g]
    return re.compile("|".join(f"(?:{p})" for p in parts) or r"(?!)", re.IGNORECASE)


class Redaction(msgspec.Struct, frozen=True, kw_only=True):
    """Which env entries are secret: names matching `patterns` (globs), sealed values, and names given as secret."""

    patterns: tuple[str, ...] = DEFAULT_REDACTED_VARS

    def matches(self, name: str) -> bool:
        return _pattern(self.patterns).fullmatch(name) is not None

    def secret_names(self, env: Mapping[str, str], explicit: Iterable[str] = ()) -> list[str]:
        """The secret entries of `env`, sorted: by name pattern, sealed, or named in `explicit`."""
        named = set(explicit)
        return sorted(n for n, v in env.items() if n in named or is_sealed(v) or self.matches(n))

    def clear_secrets(self, env: Mapping[str, str], explicit: Iterable[str] = ()) -> list[str]:
        """The secret entries of `env` whose values arrived in clear (not sealed)."""
        return [n for n in self.secret_names(env, explicit) if not is_sealed(env[n])]


def masked(env: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """`env` with the values of `names` replaced by MASK."""
    hidden = set(names)
    return {n: MASK if n in hidden else v for n, v in env.items()}


def shown_env(env: Mapping[str, object], explicit: Iterable[object] = ()) -> dict[str, object]:
    """An `env` object of a payload as people may see it (`nexus history --json`): sealed values,
    names matching the default patterns and names given as secret show as MASK. Takes what any
    payload holds, well-formed or not."""
    named = {n for n in explicit if isinstance(n, str)}
    redaction = Redaction()

    def secret(name: str, value: object) -> bool:
        return name in named or not isinstance(value, str) or is_sealed(value) or redaction.matches(name)

    return {n: MASK if secret(n, v) else v for n, v in env.items()}


def parse_patterns(text: str) -> tuple[str, ...]:
    """`--redacted-vars` / NEXUS_REDACTED_VARS: comma-separated globs (`*_PASSWORD,*_TOKEN`)."""
    return tuple(p.strip() for p in text.split(",") if p.strip())
