"""Each request's log context: a new id per request, the trace id of a valid traceparent."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

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


def test_request_ids_differ_across_forked_workers() -> None:
    """Ids are a per-process random prefix and a counter: a forked child draws its own."""
    code = textwrap.dedent(
        """
        import os
        from cached_tei.proxy.context import new_request_id
        parent = new_request_id()
        read, write = os.pipe()
        if os.fork() == 0:
            os.write(write, new_request_id().encode())
            os._exit(0)
        os.wait()
        print(parent, os.read(read, 64).decode(), new_request_id())
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    parent, child, later = done.stdout.split()
    assert len({parent, child, later}) == 3 and all(len(i) == 32 for i in (parent, child, later))
    assert child[:16] != parent[:16] and later[:16] == parent[:16]
