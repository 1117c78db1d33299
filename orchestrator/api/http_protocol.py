"""uvicorn's h11 HTTP protocol with a deadline for each request's head.

uvicorn closes a kept-alive connection that stays idle, but not one whose client has started
a request and never finishes its headers: a few hundred of those (slowloris) would hold the
API's connections for ever. Here a connection waiting for a request head (a new connection,
or a kept-alive one that began another request) is closed when the head is not complete
within HEAD_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 1024  # beyond this many at once, uvicorn answers 503


class HeadsInTime(H11Protocol):
    head_timeout_s = HEAD_TIMEOUT_S
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # part of a head, or nothing yet of the next request
            self._wait_for_head()
        else:
            self._cancel_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _wait_for_head(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()
