"""The stop's bound: when it began, and a TEI-shaped 503 (not uvicorn's plain-text 500) for a
request cut off at its end.

Uvicorn cancels the requests still running once ``--graceful-timeout`` has passed after
SIGTERM; nothing else cancels a request's task, so a cancellation here means "stopping"."""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError, error_response

log = logging.getLogger(__name__)

STOPPING = (
    "the proxy is shutting down and this request did not finish within its graceful "
    "timeout (CACHED_TEI_PROXY_GRACEFUL_TIMEOUT); send it again"
)


STOP_CLOCK = "cached_tei.stop_clock"
"""The lifespan state key of the app's :class:`StopClock` (seen by the server's connections)."""


class StopClock:
    """When the server began to stop: its connections are told to shut down (by
    :class:`cached_tei.proxy.protocol.SlowClientProtocol`) as soon as it does."""

    def __init__(self) -> None:
        self._since: float | None = None

    def start(self) -> None:
        if self._since is None:
            self._since = time.monotonic()

    def left(self, budget: float) -> float:
        """What remains of ``budget`` seconds counted from the start of the stop (all of it
        when no connection was open to tell)."""
        if self._since is None:
            return budget
        return max(0.0, budget - (time.monotonic() - self._since))


class ShutdownMiddleware:
    """Answers a request cancelled before its response started with 503 ``Unhealthy`` (the
    OpenAI shape on ``/v1/embeddings``)."""

    def __init__(self, app: ASGIApp, openai_path: str) -> None:
        self.app = app
        self._openai_path = openai_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if started:
                raise
            log.warning(
                "%s %s cut off by the shutdown: answered 503", scope["method"], scope["path"]
            )
            response = error_response(
                APIError("Unhealthy", STOPPING), openai=scope["path"] == self._openai_path
            )
            await response(scope, receive, send)
