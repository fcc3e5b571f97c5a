"""Uvicorn's HTTP protocol (httptools) with deadlines for slow clients. Uvicorn times out idle
keep-alive connections, but not one that sends nothing, headers that never end, or a client
that never reads its answer (whose bytes the proxy holds meanwhile)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .shutdown import STOP_CLOCK, StopClock

log = logging.getLogger(__name__)


class SlowClientProtocol(HttpToolsProtocol):
    """Closes a connection whose next request's headers are not complete within
    ``header_timeout`` seconds of the connection (or of its previous response), and aborts one
    whose client reads nothing of a waiting answer for ``send_timeout`` seconds (dropping the
    bytes held for it)."""

    def __init__(
        self, *args: Any, header_timeout: float, send_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._send_timeout = send_timeout
        self._send_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Uvicorn arms its keep-alive timer when it waits for the next request (not when a
        # pipelined one is already under way): from then on its headers must come in time.
        if self.timeout_keep_alive_task is not None:
            self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        super().connection_lost(exc)

    def shutdown(self) -> None:
        clock = self.app_state.get(STOP_CLOCK)
        if isinstance(clock, StopClock):
            clock.start()
        super().shutdown()

    def pause_writing(self) -> None:
        # The transport holds more than its high-water mark: the client must read some of it
        # (down to the low-water mark) within send_timeout.
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self._send_timeout, self._not_reading)

    def resume_writing(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        super().resume_writing()

    def _await_headers(self) -> None:
        self._stop_waiting()
        self._header_timer = self.loop.call_later(self._header_timeout, self._too_slow)

    def _stop_waiting(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.info(
                "closed a connection whose request headers did not arrive within %gs "
                "(CACHED_TEI_PROXY_HEADER_TIMEOUT)",
                self._header_timeout,
            )
            self.transport.close()

    def _not_reading(self) -> None:
        self._send_timer = None
        log.info(
            "aborted a connection whose client read nothing of its answer for %gs "
            "(CACHED_TEI_PROXY_SEND_TIMEOUT); %d bytes dropped",
            self._send_timeout,
            self.transport.get_write_buffer_size(),
        )
        self.transport.abort()
