"""Each request's log context: a new id per request, the trace id of a valid traceparent."""

from __future__ import annotations

import asyncio

import pytest

from cached_tei.logs import RequestContext, request_context
from cached_tei.proxy.context import RequestContextMiddleware, trace_id

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE}-00f067aa0ba902b7-01", TRACE),
        (f"00-{TRACE}-00f067aa0ba902b7-01-extra", TRACE),
        (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", None),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
        (f"00-{TRACE[:-1]}-00f067aa0ba902b7-01", None),
        (f"00-{TRACE[:-1]}g-00f067aa0ba902b7-01", None),
        ("garbage", None),
        ("", None),
    ],
)
def test_trace_id(header: str, expected: str | None) -> None:
    assert trace_id(header.encode("latin-1")) == expected


def test_every_request_gets_its_own_context_and_leaves_none_behind() -> None:
    seen: list[RequestContext | None] = []

    async def app(scope, receive, send) -> None:
        seen.append(request_context.get())

    middleware = RequestContextMiddleware(app)
    headers = [(b"traceparent", f"00-{TRACE}-00f067aa0ba902b7-01".encode())]

    async def main() -> None:
        await middleware({"type": "http", "headers": headers}, None, None)
        await middleware({"type": "http", "headers": [(b"x-request-id", b"forged")]}, None, None)
        assert request_context.get() is None

    asyncio.run(main())
    first, second = seen
    assert first is not None and second is not None
    assert first.trace_id == TRACE and second.trace_id is None
    assert first.request_id != second.request_id and "forged" not in second.request_id
    assert len(first.request_id) == 32
