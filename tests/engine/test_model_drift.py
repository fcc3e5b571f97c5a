"""The model behind TEI's URL changes while an engine runs (issue 18): another model, revision or
dimension moves to its own namespace at once, and no answer mixes two models."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

from cached_tei import CachedEmbedder
from tests.tei_emulator import EmulatorConfig, EmulatorServer, expected_vector

A = EmulatorConfig(model_id="emulator/a", step_ms=1.0, per_text_ms=0.01)
B = replace(A, model_id="emulator/b", dim=768)


def switch(server: EmulatorServer, config: EmulatorConfig) -> EmulatorServer:
    """Restart TEI behind the same URL with another model."""
    server.stop()
    return EmulatorServer(config, port=server.port).start()


def model_of(vectors: list[list[float]], texts: list[str], *configs: EmulatorConfig) -> str:
    """The one model whose vectors these all are (fails on a mixed or wrong answer)."""
    for config in configs:
        if all(
            len(v) == config.dim
            and np.array_equal(np.asarray(v, np.float32), expected_vector(config, t))
            for v, t in zip(vectors, texts, strict=True)
        ):
            return config.model_id
    raise AssertionError(f"vectors of no single model among {[c.model_id for c in configs]}")


@pytest.fixture
def tei() -> EmulatorServer:
    server = EmulatorServer(A).start()
    yield server
    server.stop()


def test_a_new_dimension_under_the_same_model_moves_to_a_namespace_of_its_own(
    tei, qdrant_path, caplog
) -> None:
    wider = replace(A, dim=768)  # same id and revision: /info does not change
    with CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path) as embedder:
        assert model_of(embedder.embed_documents(["cached"]), ["cached"], A) == A.model_id
        tei = switch(tei, wider)
        try:
            with caplog.at_level(logging.WARNING, logger="cached_tei"):
                vectors = embedder.embed_documents(["cached", "new"])
            assert len(vectors[0]) == 768
            model_of(vectors, ["cached", "new"], wider)
            model_of(embedder.embed_documents(["cached"]), ["cached"], wider)  # not stale
            assert "emulator/a (384 dimensions) to emulator/a (768 dimensions)" in caplog.text
        finally:
            tei.stop()


def test_another_model_and_dimension_moves_to_its_namespace_at_once(tei, qdrant_path) -> None:
    with CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path) as embedder:
        embedder.embed_documents(["cached"])
        tei = switch(tei, B)
        try:
            model_of(embedder.embed_documents(["cached", "new"]), ["cached", "new"], B)
            assert embedder.info().model_id == B.model_id
            model_of(embedder.embed_documents(["cached"]), ["cached"], B)
        finally:
            tei.stop()


def test_a_model_of_the_same_dimension_is_seen_at_the_next_info_refresh(tei, qdrant_path) -> None:
    same_size = replace(A, model_id="emulator/a-v2")
    with CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path, info_refresh=0.05) as embedder:
        model_of(embedder.embed_documents(["cached"]), ["cached"], A)
        tei = switch(tei, same_size)
        try:
            time.sleep(0.05)  # one refresh interval: the next call reads /info again
            model_of(embedder.embed_documents(["cached"]), ["cached"], same_size)
            assert embedder.info().model_id == "emulator/a-v2"
        finally:
            tei.stop()


def test_calls_running_while_the_model_changes_never_mix_two_models(tei, qdrant_path) -> None:
    cached = [f"cached {i}" for i in range(8)]
    switched = threading.Event()
    with CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path) as embedder:
        embedder.embed_documents(cached)

        def calls(worker: int) -> list[tuple[str, bool]]:
            seen = []
            for i in range(15):
                after = switched.is_set()
                texts = [cached[(worker + i) % 8], f"new {worker} {i}"]
                seen.append((model_of(embedder.embed_documents(texts), texts, A, B), after))
            return seen

        with ThreadPoolExecutor(max_workers=4) as pool:
            running = [pool.submit(calls, worker) for worker in range(4)]
            time.sleep(0.05)
            tei = switch(tei, B)
            switched.set()
            try:
                outcomes = [outcome for future in running for outcome in future.result()]
                # Every call started after the switch has a new text: it sees the new model.
                assert all(model == B.model_id for model, after in outcomes if after)
                model_of(embedder.embed_documents(cached), cached, B)
            finally:
                tei.stop()
