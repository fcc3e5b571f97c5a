"""Optional API keys: ``Authorization: Bearer <key>``, compared in constant time, like TEI."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/health", "/metrics"})


class APIKeyMiddleware:
    """Refuses requests without one of the keys with TEI's 401 and an empty body.

    The whole header is compared byte for byte (``Bearer`` included), against every key,
    so the time taken says nothing about which key or how much of it matched.
    """

    def __init__(self, app: ASGIApp, keys: Iterable[bytes], public: frozenset[str] = PUBLIC_PATHS):
        self.app = app
        self._expected = [b"Bearer " + key for key in keys]
        self._public = public

    def _allowed(self, header: bytes) -> bool:
        allowed = False
        for expected in self._expected:
            allowed |= hmac.compare_digest(header, expected)
        return allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._public:
            await self.app(scope, receive, send)
            return
        header = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        if not self._allowed(header):
            log.debug("refused %s %s: missing or wrong API key", scope["method"], scope["path"])
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)
