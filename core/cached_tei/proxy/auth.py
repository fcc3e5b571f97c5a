"""Optional API keys: ``Authorization: Bearer <key>``, compared in constant time, like TEI.

With several keys, each key is a tenant with its own cache namespace (unless the operator
shares the cache): the middleware puts the caller's tenant id in the ASGI scope under
:data:`TENANT`, and the routes embed into that namespace.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

TENANT = "cached_tei.tenant"
"""The ASGI scope key holding the caller's tenant id (absent: the shared namespace)."""


def tenant_id(key: bytes) -> str:
    """The name of a key's cache namespace: 64 bits of a domain-separated SHA-256 of the key.

    One-way, so the id (stored with the collection, shown by ``/info`` to the key's holder)
    does not reveal the key; stable across restarts, workers and hosts without another
    secret to keep in step (an HMAC secret that changed would silently empty every cache).
    Keys are bearer secrets and must be random: a guessable key is guessable from its id.
    """
    return hashlib.sha256(b"cached-tei tenant\x00" + key).hexdigest()[:16]


def bearer_matches(header: bytes, keys: list[bytes]) -> bool:
    """Whether ``header`` is ``Bearer <one of keys>``: compared with every key, in constant
    time."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(header, b"Bearer " + key)
    return matched


class APIKeyMiddleware:
    """Refuses requests without one of the keys with TEI's 401 and an empty body.

    The whole header is compared byte for byte (``Bearer`` included), against every key,
    so the time taken says nothing about which key or how much of it matched.
    """

    def __init__(
        self, app: ASGIApp, tenants: Mapping[bytes, str | None], public: frozenset[str]
    ) -> None:
        """``tenants`` maps each key to its tenant id (None: the shared namespace)."""
        self.app = app
        self._expected = [(b"Bearer " + key, tenant) for key, tenant in tenants.items()]
        self._public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._public:
            await self.app(scope, receive, send)
            return
        header = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        allowed = False
        for expected, tenant in self._expected:
            if hmac.compare_digest(header, expected):
                allowed = True
                if tenant is not None:
                    scope[TENANT] = tenant
        if not allowed:
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
