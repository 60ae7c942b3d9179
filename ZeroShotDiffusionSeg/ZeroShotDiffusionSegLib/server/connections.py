"""Bounding what slow or incomplete connections can hold on to.

uvicorn closes an idle keep-alive connection, but a connection that never sends a request,
or sends its headers a byte at a time, is kept forever. ``header_timeout_protocol`` makes the
HTTP protocol close a connection that has been waiting for a complete request line and headers
for longer than ``seconds``; a request whose headers have arrived (an upload in progress, a
long poll) is not affected. ``zsdseg serve`` uses it together with uvicorn's ``limit_concurrency``.
"""

from __future__ import annotations

import time
from typing import Optional


def header_timeout_protocol(seconds: float):
    """An ``h11`` protocol class for uvicorn's ``http=`` that enforces a request-header deadline."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._waiting_since: Optional[float] = time.monotonic()
            self._seen_cycle = None
            self._schedule_check()

        def _schedule_check(self) -> None:
            self._header_check = self.loop.call_later(max(seconds / 4, 0.05), self._check_headers)

        def _check_headers(self) -> None:
            if self.transport.is_closing():
                return
            if self._waiting_since is not None and time.monotonic() - self._waiting_since > seconds:
                self.transport.close()
                return
            self._schedule_check()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and self.cycle is not self._seen_cycle:  # a request's headers are complete
                self._seen_cycle = self.cycle
                self._waiting_since = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._waiting_since = time.monotonic()  # waiting for the next request on this connection

        def connection_lost(self, exc) -> None:
            check = getattr(self, "_header_check", None)
            if check is not None:
                check.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutH11Protocol
