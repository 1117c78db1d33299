"""`redact_url`: a URL's password or token never reaches a message (issue 11)."""

from __future__ import annotations

import pytest

from bus.errors import BusUnavailable
from bus.urls import redact_url
from orchestrator.errors import OrchestratorUnavailable


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://user:pass@host:4222", "nats://user:***@host:4222"),
        ("nats://tok@host", "nats://***@host"),
        ("tls://user:pass@10.0.0.1:4222/", "tls://user:***@10.0.0.1:4222/"),
        ("ws://user:@host", "ws://user:***@host"),  # an empty password is still masked, not shown as empty
        ("nats://user:p@ss:w,rd@host:4222", "nats://user:***@host:4222"),  # `@` and `,` inside the password
        ("nats://a:one@h1:4222,nats://tok@h2,nats://h3", "nats://a:***@h1:4222,nats://***@h2,nats://h3"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),  # nothing to hide: unchanged
        ("nats://[::1]:4222", "nats://[::1]:4222"),
        ("memory://", "memory://"),
        ("", ""),
    ],
)
def test_the_password_or_token_of_a_url_is_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(shown) == shown  # masking twice changes nothing


def test_every_url_in_a_message_is_masked_and_the_rest_kept() -> None:
    text = "cannot reach nats://u:s3cret@a:4222 (then tried tls://t0ken@b:4443): refused"
    assert redact_url(text) == "cannot reach nats://u:***@a:4222 (then tried tls://***@b:4443): refused"


def test_errors_that_name_a_server_never_carry_its_password() -> None:
    exc = BusUnavailable("nats://alice:hunter2@nats.example:4222", "auth failed for nats://alice:hunter2@nats.example:4222")
    assert "hunter2" not in str(exc) and "hunter2" not in exc.url
    assert str(exc) == "cannot reach NATS at nats://alice:***@nats.example:4222: auth failed for nats://alice:***@nats.example:4222"
    assert "hunter2" not in str(OrchestratorUnavailable("nats://alice:hunter2@nats.example:4222"))
