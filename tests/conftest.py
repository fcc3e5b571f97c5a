"""Fixtures shared by every suite: a TEI emulator on loopback and an isolated cache folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cached_tei import CachedEmbedder
from tests.support.env import isolate_environment
from tests.tei_emulator import EmulatorConfig, EmulatorServer

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's CACHED_TEI_* variables or writes to ~/.cache."""
    isolate_environment(monkeypatch, tmp_path / "xdg-cache")


@pytest.fixture
def tei_config() -> EmulatorConfig:
    return EmulatorConfig(step_ms=2.0, per_text_ms=0.05)


@pytest.fixture
def tei(tei_config: EmulatorConfig) -> Iterator[EmulatorServer]:
    with EmulatorServer(tei_config) as server:
        yield server


@pytest.fixture
def qdrant_path(tmp_path: Path) -> Path:
    return tmp_path / "qdrant"


@pytest.fixture
def make_embedder(
    tei: EmulatorServer, qdrant_path: Path
) -> Iterator[Callable[..., CachedEmbedder]]:
    """Builds embedders on the emulator and the test's own store; closes them afterwards."""
    made: list[CachedEmbedder] = []

    def make(**overrides: object) -> CachedEmbedder:
        settings: dict[str, object] = {"tei_url": tei.url, "qdrant_path": qdrant_path}
        settings.update(overrides)
        embedder = CachedEmbedder(**settings)
        made.append(embedder)
        return embedder

    yield make
    for embedder in made:
        embedder.close()


def sent_texts(server: EmulatorServer) -> list[str]:
    """Every text the emulator was asked to embed, in arrival order."""
    return [text for request in server.requests for text in request.texts]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans recorded in memory (OpenTelemetry's SDK, the ``otel`` extra) for the test."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from cached_tei import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)
