"""OpenTelemetry spans of the engine and the TEI client, and nothing of OpenTelemetry when off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from cached_tei import CachedTEISettings
from cached_tei.engine import Engine
from cached_tei.keys import EmbedOptions
from tests.tei_emulator import EmulatorServer, Fault, expected_vector

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["alpha", "beta", "gamma"]


def by_name(spans: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for span in spans.get_finished_spans():
        named.setdefault(span.name, []).append(span)
    return named


def child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    assert span.parent is not None and parent.context is not None
    return span.parent.span_id == parent.context.span_id


async def test_an_embed_call_has_children_for_tei_the_lookup_and_a_write_through(
    tei, tei_config, qdrant_path, spans
) -> None:
    engine = Engine(CachedTEISettings(tei_url=tei.url, qdrant_path=qdrant_path, write_through=True))
    try:
        result = await engine.embed(TEXTS, EmbedOptions())
    finally:
        await engine.aclose()
    assert np.array_equal(result.vectors, np.stack([expected_vector(tei_config, t) for t in TEXTS]))

    named = by_name(spans)
    [call] = named["cached_tei.embed"]
    assert call.parent is None
    assert call.attributes == {"cached_tei.texts": 3, "cached_tei.hits": 0, "cached_tei.misses": 3}
    [info] = named["TEI GET /info"]
    [lookup] = named["cached_tei.cache.lookup"]
    [request] = named["TEI POST /embed"]
    [write] = named["cached_tei.cache.write"]
    assert all(child_of(span, call) for span in (info, lookup, request, write))
    assert info.kind is request.kind is SpanKind.CLIENT
    assert info.attributes == {"http.response.status_code": 200}
    assert lookup.attributes == {
        "cached_tei.keys": 3,
        "cached_tei.outcome": "done",
        "cached_tei.hits": 0,
    }
    assert request.attributes == {"cached_tei.texts": 3, "http.response.status_code": 200}
    assert write.attributes == {"cached_tei.vectors": 3, "cached_tei.outcome": "done"}
    # TEI received the trace context of its request's span.
    [received] = [r for r in tei.requests if r.route == "/embed"]
    assert request.context is not None
    assert received.traceparent is not None
    assert received.traceparent.split("-")[1:3] == [
        f"{request.context.trace_id:032x}",
        f"{request.context.span_id:016x}",
    ]


async def test_write_behind_writes_start_traces_of_their_own(tei, qdrant_path, spans) -> None:
    engine = Engine(CachedTEISettings(tei_url=tei.url, qdrant_path=qdrant_path))
    try:
        await engine.embed(TEXTS, EmbedOptions())
        await engine.flush()
    finally:
        await engine.aclose()
    named = by_name(spans)
    [call] = named["cached_tei.embed"]
    [write] = named["cached_tei.cache.write"]
    assert write.parent is None
    assert write.context is not None and call.context is not None
    assert write.context.trace_id != call.context.trace_id
    assert write.attributes == {"cached_tei.vectors": 3, "cached_tei.outcome": "done"}


async def test_each_tei_attempt_is_a_span_with_its_status(tei, qdrant_path, spans) -> None:
    tei.inject(Fault(kind="status", status=503))
    engine = Engine(CachedTEISettings(tei_url=tei.url, qdrant_path=qdrant_path))
    try:
        await engine.embed(TEXTS, EmbedOptions())
        result = await engine.embed(TEXTS, EmbedOptions())  # from memory: no TEI, no lookup
    finally:
        await engine.aclose()
    assert (result.hits, result.misses) == (3, 0)
    named = by_name(spans)
    failed, succeeded = sorted(named["TEI POST /embed"], key=lambda span: span.start_time or 0)
    assert failed.attributes == {"cached_tei.texts": 3, "http.response.status_code": 503}
    assert failed.status.status_code is StatusCode.ERROR
    assert succeeded.attributes == {"cached_tei.texts": 3, "http.response.status_code": 200}
    first, second = sorted(named["cached_tei.embed"], key=lambda span: span.start_time or 0)
    assert child_of(failed, first) and child_of(succeeded, first)
    assert second.attributes == {
        "cached_tei.texts": 3,
        "cached_tei.hits": 3,
        "cached_tei.misses": 0,
    }
    assert len(named["cached_tei.cache.lookup"]) == 1
    # Counts and statuses only: no text (nor anything else of the caller's) in any attribute.
    values = [v for s in spans.get_finished_spans() for v in (s.attributes or {}).values()]
    assert all(isinstance(v, int) or v == "done" for v in values)


EMBED_ONCE = """
import asyncio, sys
import cached_tei.engine, cached_tei.tei
from cached_tei import CachedTEISettings
from cached_tei.keys import EmbedOptions

async def main():
    settings = CachedTEISettings(tei_url=sys.argv[1], qdrant_path=sys.argv[2])
    engine = cached_tei.engine.Engine(settings)
    try:
        result = await engine.embed(["alpha"], EmbedOptions())
    finally:
        await engine.aclose()
    assert result.misses == 1

asyncio.run(main())
print("imported:", sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""


def embed_in_a_subprocess(tei: EmulatorServer, tmp_path: Path, **env: str) -> str:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    clean["PYTHONPATH"] = os.pathsep.join([str(REPO / "core"), str(REPO)])
    done = subprocess.run(
        [sys.executable, "-c", EMBED_ONCE, tei.url, str(tmp_path / "qdrant")],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
    ],
    ids=["unconfigured", "sdk-disabled", "exporter-none"],
)
def test_off_nothing_from_opentelemetry_is_imported(tei, tmp_path, env) -> None:
    assert embed_in_a_subprocess(tei, tmp_path, **env).splitlines()[-1] == "imported: []"


def test_the_otel_variables_turn_tracing_on(tei, tmp_path) -> None:
    out = embed_in_a_subprocess(tei, tmp_path, OTEL_TRACES_EXPORTER="console")
    assert '"name": "cached_tei.embed"' in out
    assert '"name": "TEI POST /embed"' in out
