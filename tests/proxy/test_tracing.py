"""Traces through the proxy: the caller's trace continues into the proxy, the engine and TEI."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from .support import post

TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER = "b7ad6b7169203331"


def the(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [span for span in spans.get_finished_spans() if span.name == name]
    return span


def parent_id(span: ReadableSpan) -> int:
    assert span.parent is not None
    return span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def test_a_request_continues_the_callers_trace_down_to_tei(emu, make_proxy, spans) -> None:
    proxy = make_proxy(emu.url)
    response = post(
        f"{proxy.url}/embed",
        {"inputs": ["alpha", "beta"]},
        headers={"traceparent": f"00-{TRACE}-{CALLER}-01"},
    )
    assert response.status_code == 200
    proxy.stop()  # drains the write-behind queue

    server = the(spans, "POST /embed")
    assert server.kind is SpanKind.SERVER
    assert server.parent is not None and server.parent.is_remote
    assert parent_id(server) == int(CALLER, 16)
    assert server.attributes == {
        "http.request.method": "POST",
        "http.route": "/embed",
        "http.response.status_code": 200,
    }
    call = the(spans, "cached_tei.embed")
    assert parent_id(call) == span_id(server)
    assert call.attributes == {"cached_tei.texts": 2, "cached_tei.hits": 0, "cached_tei.misses": 2}
    lookup = the(spans, "cached_tei.cache.lookup")
    request = the(spans, "TEI POST /embed")
    assert parent_id(lookup) == parent_id(request) == span_id(call)
    assert request.attributes == {"cached_tei.texts": 2, "http.response.status_code": 200}
    in_trace = [
        span for span in spans.get_finished_spans() if span.name != "cached_tei.cache.write"
    ]
    assert {span.context.trace_id for span in in_trace if span.context} == {int(TRACE, 16)}

    [received] = [r for r in emu.requests if r.route == "/embed"]
    assert received.traceparent is not None
    assert received.traceparent.split("-")[1:3] == [TRACE, f"{span_id(request):016x}"]
    # The write-behind batch (of any requests' vectors) is a trace of its own.
    assert the(spans, "cached_tei.cache.write").parent is None


def test_a_request_without_traceparent_starts_a_trace(emu, make_proxy, spans) -> None:
    proxy = make_proxy(emu.url)
    assert post(f"{proxy.url}/nowhere", {"inputs": ["alpha"]}).status_code == 404
    proxy.stop()  # the span ends just after the answer is sent
    server = the(spans, "POST other")
    assert server.parent is None
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 404
