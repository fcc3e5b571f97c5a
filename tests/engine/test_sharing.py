"""One process, many faces: embedders share the store, the engine and its single flight, on
any thread or event loop; closing one leaves the others working; cache controls per call."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from cached_tei import CachedEmbedder, EmbedOptions, Engine, InputError
from cached_tei.settings import CachedTEISettings
from cached_tei.stores.embedded import EmbeddedStore
from tests.conftest import sent_texts
from tests.tei_emulator import EmulatorConfig, EmulatorServer, expected_vector


def _check(config: EmulatorConfig, texts: list[str], vectors: np.ndarray) -> None:
    assert vectors.shape[0] == len(texts)
    for text, vector in zip(texts, vectors, strict=True):
        assert np.array_equal(vector, expected_vector(config, text))


def test_faces_on_threads_and_event_loops_share_one_engine(tei: EmulatorServer) -> None:
    """Three embedders on the default folder, used at once from plain threads and from
    threads running their own event loops: each distinct text reaches TEI once."""
    faces = [CachedEmbedder(tei_url=tei.url) for _ in range(3)]
    texts = [f"text {i}" for i in range(40)]
    errors: list[BaseException] = []

    def use(number: int) -> None:
        face = faces[number % 3]
        window = texts[number * 4 : number * 4 + 16]
        try:
            if number % 2:
                result = asyncio.run(face.aembed(window))
            else:
                result = face.embed(window)
            _check(tei.config, window, result.vectors)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=use, args=(number,)) for number in range(7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    sent = sent_texts(tei)
    assert sorted(sent) == sorted(set(texts[: 6 * 4 + 16]))  # each distinct text once
    for face in faces:
        face.close()


def test_recreating_an_embedder_while_the_old_one_lives_just_works(tei: EmulatorServer) -> None:
    """The notebook pattern: a cell that builds an embedder runs again."""
    old = CachedEmbedder(tei_url=tei.url)
    old.embed_documents(["cell output"])
    new = CachedEmbedder(tei_url=tei.url)
    result = new.embed(["cell output"])
    assert (result.hits, result.misses) == (1, 0)
    assert sent_texts(tei) == ["cell output"]
    old.close()
    assert new.embed(["cell output", "more"]).misses == 1
    new.close()


def test_an_embedder_of_another_setup_shares_the_folder(tei: EmulatorServer) -> None:
    first = CachedEmbedder(tei_url=tei.url)
    first.embed_documents(["shared"])
    first.flush()
    other = CachedEmbedder(tei_url=tei.url, lru_bytes=0, max_concurrency=2)
    assert other.embed(["shared"]).hits == 1
    other.close()
    assert first.embed(["shared", "again"]).misses == 1
    first.close()
    assert sent_texts(tei) == ["shared", "again"]


def test_stats_keep_their_final_values_after_close(tei: EmulatorServer, qdrant_path: Path) -> None:
    with CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path) as embedder:
        embedder.embed(["a", "b"])
        embedder.embed(["a"])
    stats = embedder.stats
    assert (stats.hits, stats.misses, stats.tei_texts, stats.writes) == (1, 2, 2, 2)


@pytest.mark.parametrize("kind", ["Query", "doc", None, "documents"])
def test_kind_is_query_or_document(tei: EmulatorServer, qdrant_path: Path, kind: object) -> None:
    with CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path) as embedder:
        with pytest.raises(InputError, match="'query' or 'document'"):
            embedder.embed(["x"], kind=kind)  # type: ignore[arg-type]
    assert sent_texts(tei) == []


async def test_aclose_lets_the_callers_loop_run_while_it_drains(
    tei: EmulatorServer, qdrant_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's close waits for a coroutine of the caller's loop: it can only finish if
    aclose() does not block that loop."""
    caller_ran = threading.Event()
    original = EmbeddedStore.aclose

    async def close_after_the_caller_ran(self: EmbeddedStore) -> None:
        caller_ran.wait(timeout=10)
        await original(self)

    monkeypatch.setattr(EmbeddedStore, "aclose", close_after_the_caller_ran)
    embedder = CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path)
    await embedder.aembed(["x"])

    async def mark() -> None:
        await asyncio.sleep(0.01)
        caller_ran.set()

    marker = asyncio.create_task(mark())
    await embedder.aclose()
    await marker
    assert caller_ran.is_set()
    assert embedder.stats.writes == 1


async def test_a_cancelled_call_never_strands_another_waiting_for_its_texts(
    qdrant_path: Path,
) -> None:
    config = EmulatorConfig(step_ms=300.0, per_text_ms=0.05)
    with EmulatorServer(config) as tei:
        engine = Engine(CachedTEISettings(tei_url=tei.url, qdrant_path=qdrant_path))
        await engine.info()
        first = asyncio.create_task(engine.embed(["slow"], EmbedOptions()))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(engine.embed(["slow"], EmbedOptions()))
        await asyncio.sleep(0.05)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        result = await second
        _check(config, ["slow"], result.vectors)
        assert sent_texts(tei) == ["slow"]
        await engine.aclose()


def test_no_cache_recomputes_and_refreshes(tei: EmulatorServer, qdrant_path: Path) -> None:
    with CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path) as embedder:
        embedder.embed(["x"])
        fresh = embedder.embed(["x"], read_cache=False)
        assert (fresh.hits, fresh.misses) == (0, 1)
        _check(tei.config, ["x"], fresh.vectors)
        assert embedder.embed(["x"]).hits == 1
    assert sent_texts(tei) == ["x", "x"]


def test_no_store_keeps_nothing(tei: EmulatorServer, qdrant_path: Path) -> None:
    with CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path, write_cache=False) as embedder:
        _check(tei.config, ["private"], embedder.embed(["private"]).vectors)
        assert embedder.embed(["private"]).misses == 1  # not in memory
        embedder.flush()
    with CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path, lru_bytes=0) as reader:
        assert reader.embed(["private"]).misses == 1  # nor in the store
        assert reader.embed(["private"], write_cache=False).hits == 1  # reading stays allowed
    assert sent_texts(tei) == ["private"] * 3
