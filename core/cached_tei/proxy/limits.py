"""The request body's limits: TEI's plain-text 413 for bodies over ``max_body_bytes``, and a
408 for bodies that do not arrive within ``body_timeout``."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOO_LARGE = b"Failed to buffer the request body: length limit exceeded"


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
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


class BodyTimeoutMiddleware:
    """Answers 408 and closes the connection when a request's body is not complete within
    ``seconds`` of its headers, so that a half-sent request holds no connection and no task
    for long; an honest slow client only needs ``max_body_bytes / seconds`` bytes per second."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self._seconds = seconds
        self._message = (
            "Failed to buffer the request body: not received within "
            f"{seconds:g} seconds (CACHED_TEI_PROXY_BODY_TIMEOUT)"
        ).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._seconds
        complete = False
        started = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:  # later receives wait for a disconnect: no deadline
                return await receive()
            try:
                message = await _before(deadline, receive())
            except asyncio.TimeoutError:
                raise _TooSlow from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, tracking_send)
        except _TooSlow:
            if not started:
                await _reject(send, 408, self._message, close=True)


async def _before(deadline: float, receiving: Awaitable[Message]) -> Message:
    """``await receiving``, or ``asyncio.TimeoutError`` at the loop time ``deadline``."""
    if sys.version_info >= (3, 11):  # a timer, not a task per receive
        async with asyncio.timeout_at(deadline):
            return await receiving
    remaining = max(0.0, deadline - asyncio.get_running_loop().time())
    return await asyncio.wait_for(receiving, remaining)


async def _reject(
    send: Send, status: int = 413, text: bytes = TOO_LARGE, close: bool = False
) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(text)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})
