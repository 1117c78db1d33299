"""Server URLs as they may be shown: with their credentials masked.

A NATS URL can carry a user and password (`nats://user:pass@host:4222`) or a
token (`nats://token@host`). Wherever a URL reaches a log line, an exception
message or CLI output, it goes through `redact_url` first.
"""

from __future__ import annotations

import re

# The embedded default of `nexus up`; here, not in bus.nats_bus, so the CLI names it without importing nats.
DEFAULT_URL = "nats://127.0.0.1:4222"
MASK = "***"

# The userinfo of every `scheme://userinfo@` in the text. Greedy up to the last `@`
# before the host (a password may hold `@` or `,`); `/` and whitespace end the
# authority, so a comma-separated server list is masked URL by URL.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s]*)@")


def _mask(match: re.Match[str]) -> str:
    user, sep, _secret = match["userinfo"].partition(":")
    shown = f"{user}:{MASK}" if sep else MASK  # without a colon, the userinfo is a token
    return f"{match['scheme']}{shown}@"


def redact_url(text: str) -> str:
    """`text` with the password (or lone token) of every URL in it replaced by `***`:
    `nats://user:pass@host:4222` -> `nats://user:***@host:4222`, `nats://tok@host` ->
    `nats://***@host`. Works on one URL, a comma-separated list or a whole message."""
    return _USERINFO.sub(_mask, text)
