"""Each request's id and trace id, for the log lines written while serving it."""

from __future__ import annotations

import itertools
import os
import secrets
import string

from starlette.types import ASGIApp, Receive, Scope, Send

from ..logs import RequestContext, request_context

_HEX = frozenset(string.hexdigits.lower())


class _RequestIds:
    """Request ids: 64 random bits drawn once per process (again in a forked child) and a
    counter, as 32 hex digits; unique across workers, and far cheaper per request than
    ``uuid4`` (which reads the system's random source each time)."""

    def __init__(self) -> None:
        self._start()
        os.register_at_fork(after_in_child=self._start)

    def _start(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count()

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_request_ids = _RequestIds()


def new_request_id() -> str:
    """A request id no other request of any process has had (32 hex digits)."""
    return _request_ids.new()


def trace_id(traceparent: bytes) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``), or None."""
    parts = traceparent.decode("latin-1").split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or not _HEX.issuperset(parts[1]):
        return None
    return None if parts[1] == "0" * 32 else parts[1]


class RequestContextMiddleware:
    """Sets :data:`cached_tei.logs.request_context` for every HTTP request: a new id (never
    the client's, so that log lines cannot be forged), and the incoming trace id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                trace = trace_id(value)
                break
        token = request_context.set(RequestContext(new_request_id(), trace))
        try:
            await self.app(scope, receive, send)
        finally:
            request_context.reset(token)
