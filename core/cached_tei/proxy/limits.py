"""The request body's size limit: TEI's plain-text 413 for bodies over ``max_body_bytes``.
(Its time limit, ``body_timeout``, is the connection's: :mod:`cached_tei.proxy.protocol`.)"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOO_LARGE = b"Failed to buffer the request body: length limit exceeded"

BODY_TIMED_OUT = "cached_tei.body_timed_out"
"""The ASGI scope key the connection sets on a request whose body did not arrive within
``body_timeout`` (it answers 408 and closes): the app then sees a disconnect, to count as 408,
not as the client's 499."""


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Rejects a body by its ``Content-Length`` at once, or a chunked one as soon as it passes
    the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                # The HTTP server delivers exactly Content-Length bytes: no need to count them.
                if int(value) > self._max:
                    await _reject(send)
                else:
                    await self.app(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _reject(send)


async def _reject(send: Send) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(TOO_LARGE)).encode()),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": TOO_LARGE})
