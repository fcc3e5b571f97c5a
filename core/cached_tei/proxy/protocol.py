"""Uvicorn's HTTP protocol (httptools) with deadlines for slow clients. Uvicorn times out idle
keep-alive connections, but not one that sends nothing, headers or a body that never end, or a
client that never reads its answer (whose bytes the proxy holds meanwhile).

The body's deadline lives here, at the connection, rather than around each ``receive`` in the
app: its timer is armed only when a read leaves a body incomplete, so the usual request (its
headers and body in one read) pays for none."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .limits import BODY_TIMED_OUT
from .shutdown import STOP_CLOCK, StopClock

log = logging.getLogger(__name__)


class SlowClientProtocol(HttpToolsProtocol):
    """Closes a connection whose next request's headers are not complete within
    ``header_timeout`` seconds of the connection (or of its previous response); answers 408
    and closes one whose request body is not complete within ``body_timeout`` seconds of its
    headers; aborts one whose client reads nothing of a waiting answer for ``send_timeout``
    seconds (dropping the bytes held for it)."""

    def __init__(
        self,
        *args: Any,
        header_timeout: float,
        body_timeout: float,
        send_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        # When the connection began to wait for a request's headers (None: not waiting).
        self._headers_since: float | None = None
        self._body_timeout = body_timeout
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_pending = False
        self._body_408 = _closing_answer(
            b"408 Request Timeout",
            "Failed to buffer the request body: not received within "
            f"{body_timeout:g} seconds (CACHED_TEI_PROXY_BODY_TIMEOUT)",
        )
        self._send_timeout = send_timeout
        self._send_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._headers_since = self.loop.time()
        self._header_timer = self.loop.call_later(self._header_timeout, self._check_headers)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Headers complete, body not (yet): from now on the body must come in time.
        if self._body_pending and self._body_timer is None:
            self._body_timer = self.loop.call_later(self._body_timeout, self._body_too_slow)

    def on_headers_complete(self) -> None:
        self._headers_since = None
        self._body_pending = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._body_complete()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Uvicorn arms its keep-alive timer when it waits for the next request (not when a
        # pipelined one is already under way): from then on its headers must come in time.
        if self.timeout_keep_alive_task is not None:
            self._headers_since = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._body_complete()
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

    def _check_headers(self) -> None:
        """The connection's one header timer (not one per request: waiting is only marked
        with ``_headers_since``): close if it has waited too long, else look again when it
        could have."""
        self._header_timer = None
        if self.transport.is_closing():
            return
        since = self._headers_since
        left = (
            self._header_timeout
            if since is None
            else since + self._header_timeout - self.loop.time()
        )
        if left > 0:
            self._header_timer = self.loop.call_later(left, self._check_headers)
            return
        log.info(
            "closed a connection whose request headers did not arrive within %gs "
            "(CACHED_TEI_PROXY_HEADER_TIMEOUT)",
            self._header_timeout,
        )
        self.transport.close()

    def _body_complete(self) -> None:
        self._body_pending = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_too_slow(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None:
            return
        log.info(
            "answered 408 to %s %s: its body did not arrive within %gs "
            "(CACHED_TEI_PROXY_BODY_TIMEOUT)",
            cycle.scope["method"],
            cycle.scope["path"],
            self._body_timeout,
        )
        if not cycle.response_started:
            cycle.scope[BODY_TIMED_OUT] = True  # type: ignore[literal-required]
            self.transport.write(self._body_408)
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


def _closing_answer(status: bytes, text: str) -> bytes:
    """A whole plain-text answer that closes its connection."""
    body = text.encode()
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\n"
        + b"content-type: text/plain; charset=utf-8\r\n"
        + b"content-length: %d\r\n" % len(body)
        + b"connection: close\r\n\r\n"
        + body
    )
