"""Open mode's loopback rules, on header values alone (issue 11; the live attacks are in
tests/integration/test_api_open_mode.py)."""

from __future__ import annotations

from typing import cast

import pytest
from litestar.types import HTTPScope

from orchestrator.api.loopback import is_loopback_authority, is_loopback_origin, refusal

LOOPBACK_HOSTS = ["localhost", "localhost:8080", "LocalHost:1", "127.0.0.1", "127.0.0.1:8080", "127.1.2.3:80", "[::1]", "[::1]:8080"]
OTHER_HOSTS = [
    "evil.example", "evil.example:8080", "127.0.0.1.evil.example", "localhost.evil.example", "0.0.0.0:8080",
    "10.0.0.1", "::1", "[::1]x", "[127.0.0.1]", "localhost:", "localhost:http", "localhost@evil.example", "",
]  # fmt: skip


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_loopback_names_with_or_without_a_port_are_loopback(host: str) -> None:
    assert is_loopback_authority(host)
    assert is_loopback_origin(f"http://{host}") and is_loopback_origin(f"https://{host}")


@pytest.mark.parametrize("host", OTHER_HOSTS)
def test_any_other_name_is_not(host: str) -> None:
    assert not is_loopback_authority(host)
    assert not is_loopback_origin(f"http://{host}")


@pytest.mark.parametrize("origin", ["null", "http://localhost/", "http://localhost:8080/page", "file://", "ftp://localhost", "localhost"])
def test_opaque_origins_paths_and_other_schemes_are_not_loopback_origins(origin: str) -> None:
    assert not is_loopback_origin(origin)


def _scope(*headers: tuple[str, str]) -> HTTPScope:
    return cast("HTTPScope", {"type": "http", "headers": [(k.encode(), v.encode()) for k, v in headers]})


def test_the_refusal_names_the_header_the_value_and_the_way_out() -> None:
    assert refusal(_scope(("host", "127.0.0.1:8080"))) is None
    assert refusal(_scope(("host", "localhost:8080"), ("origin", "http://127.0.0.1:8080"))) is None
    rebound = refusal(_scope(("host", "evil.example")))
    assert rebound and "Host 'evil.example' is not a loopback name" in rebound and "--auth" in rebound
    page = refusal(_scope(("host", "127.0.0.1:8080"), ("origin", "null")))
    assert page and "Origin 'null'" in page and "--auth" in page
    assert "no Host header" in (refusal(_scope()) or "")
    # A second Host header is no way around the first check.
    assert refusal(_scope(("host", "localhost"), ("host", "evil.example")))
