"""A server span for each request to the proxy while tracing is on (:mod:`cached_tei.tracing`)."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import tracing


class TracingMiddleware:
    """Continues the caller's trace (W3C ``traceparent``) in a server span named after the
    route (or ``other``), with the answer's HTTP status."""

    def __init__(self, app: ASGIApp, routes: Iterable[str]) -> None:
        tracing.configure()
        self.app = app
        self._routes = frozenset(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.enabled():
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in self._routes else "other"
        with tracing.server_span(scope["method"], route, scope["headers"]) as current:

            async def recording_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    current.set_attribute("http.response.status_code", message["status"])
                await send(message)

            await self.app(scope, receive, recording_send)
