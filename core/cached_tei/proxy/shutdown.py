"""A request cut off by the end of a graceful shutdown gets a TEI-shaped 503, not uvicorn's
plain-text 500.

Uvicorn cancels the requests still running once ``--graceful-timeout`` has passed after
SIGTERM; nothing else cancels a request's task, so a cancellation here means "stopping"."""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError, error_response

log = logging.getLogger(__name__)

STOPPING = (
    "the proxy is shutting down and this request did not finish within its graceful "
    "timeout (CACHED_TEI_PROXY_GRACEFUL_TIMEOUT); send it again"
)


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
