"""The list faces (``embed_documents``, ``embed_query``, and so LangChain and LlamaIndex): on
warm reads they return the store's own lists, exactly TEI's float32 values widened to Python
floats, in input order, with the checksum still verified."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cached_tei import CachedEmbedder, EmbedOptions, Namespace, point_id
from cached_tei.stores.embedded import EmbeddedStore
from tests.conftest import sent_texts
from tests.engine.test_integrity import corrupt_vector_storage
from tests.faults.fake_qdrant import FakeQdrant
from tests.tei_emulator import EmulatorConfig, EmulatorServer, expected_vector

TEXTS = [f"list face text {i}" for i in range(300)]


def oracle(config: EmulatorConfig, texts: list[str]) -> list[list[float]]:
    return [expected_vector(config, text).astype(np.float32).tolist() for text in texts]


@pytest.fixture
def qdrant() -> Iterator[FakeQdrant]:
    with FakeQdrant() as q:
        yield q
        assert q.violations == []


def test_warm_lists_from_the_embedded_store_are_the_oracle_s(
    make_embedder, tei: EmulatorServer, tei_config: EmulatorConfig
) -> None:
    with make_embedder() as first:
        first.embed(TEXTS)
    tei.reset_log()
    texts = [*reversed(TEXTS), TEXTS[5], TEXTS[5]]
    with make_embedder(lru_bytes=0) as second:
        vectors = second.embed_documents(texts)
        query = second.embed_query(TEXTS[7])
        assert (second.stats.hits, second.stats.misses) == (301, 0)
    assert sent_texts(tei) == []
    assert vectors == oracle(tei_config, texts)
    assert query == oracle(tei_config, [TEXTS[7]])[0]
    assert all(type(value) is float for value in vectors[0])
    assert vectors[-1] is not vectors[-2]  # a repeated text gets a list of its own


def test_warm_lists_from_the_server_store_are_the_oracle_s(
    tei: EmulatorServer, tei_config: EmulatorConfig, qdrant: FakeQdrant
) -> None:
    settings = {"tei_url": tei.url, "qdrant_url": qdrant.url, "lru_bytes": 0}
    with CachedEmbedder(**settings) as first:
        first.embed(TEXTS)
    tei.reset_log()
    with CachedEmbedder(**settings) as second:
        vectors = second.embed_documents(TEXTS)
        assert (second.stats.hits, second.stats.misses) == (300, 0)
    assert sent_texts(tei) == []
    assert vectors == oracle(tei_config, TEXTS)


def test_one_list_call_mixes_memory_store_and_tei_in_input_order(
    make_embedder, tei: EmulatorServer, tei_config: EmulatorConfig
) -> None:
    stored, remembered, new = TEXTS[:100], TEXTS[100:150], TEXTS[150:200]
    with make_embedder() as first:
        first.embed(stored)
    tei.reset_log()
    with make_embedder() as second:
        second.embed(remembered)  # into this engine's memory (and the store)
        texts = [text for trio in zip(new, stored[::2], remembered, strict=True) for text in trio]
        vectors = second.embed_documents(texts)
    assert sorted(sent_texts(tei)) == sorted(remembered + new)
    assert vectors == oracle(tei_config, texts)


def test_a_corrupt_entry_is_recomputed_on_the_list_path(
    make_embedder, tei: EmulatorServer, tei_config: EmulatorConfig, qdrant_path: Path
) -> None:
    with make_embedder() as first:
        first.embed(TEXTS)
    corrupt_vector_storage(qdrant_path, 10, tei_config.dim)
    tei.reset_log()
    with make_embedder(lru_bytes=0) as second:
        vectors = second.embed_documents(TEXTS)
        assert second.stats.corrupt == 10
    assert vectors == oracle(tei_config, TEXTS)
    assert len(set(sent_texts(tei))) == 10


async def test_the_embedded_store_hands_over_its_lists_with_the_same_values(
    make_embedder, tei_config: EmulatorConfig, qdrant_path: Path
) -> None:
    with make_embedder() as first:
        first.embed(TEXTS)
        settings = first.settings
        namespace = Namespace.of(first.info(), EmbedOptions.from_settings(settings, "document"))
    store = EmbeddedStore(settings)
    ids = [point_id(text) for text in TEXTS]
    try:
        rows = await store.lookup(namespace, ids, lists=True)
        plain = await store.lookup(namespace, ids)  # an ndarray face asks for no lists
    finally:
        await store.aclose()
    assert rows.lists is not None
    assert rows.lists == rows.vectors.tolist()
    assert plain.lists is None and np.array_equal(plain.vectors, rows.vectors)
    by_id = dict(zip(ids, oracle(tei_config, TEXTS), strict=True))
    assert [by_id[i] for i in rows.ids] == rows.lists
