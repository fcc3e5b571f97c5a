"""One engine, many callers: single flight, threads, other event loops, running loops."""

from __future__ import annotations

import asyncio
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from cached_tei import CachedEmbedder, CachedReranker, CachedSparseEmbedder
from tests.conftest import sent_texts
from tests.tei_emulator import expected_vector


async def test_200_concurrent_calls_for_one_new_text_compute_it_once(
    make_embedder, tei, tei_config
) -> None:
    embedder = make_embedder()
    results = await asyncio.gather(
        *(embedder.aembed_query("the same new text") for _ in range(200))
    )
    assert sent_texts(tei) == ["the same new text"]
    expected = expected_vector(tei_config, "the same new text").tolist()
    assert all(result == expected for result in results)
    stats = embedder.stats
    assert stats.tei_texts == 1 and stats.hits + stats.misses == 200
    assert stats.misses == stats.coalesced + 1  # late callers hit memory instead


def test_threads_share_one_computation(make_embedder, tei) -> None:
    embedder = make_embedder()
    texts = [f"shared {i}" for i in range(40)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: embedder.embed_documents(texts), range(16)))
    assert all(result == results[0] for result in results)
    assert sorted(sent_texts(tei)) == sorted(texts)


def test_callers_on_different_event_loops(make_embedder, tei) -> None:
    embedder = make_embedder()
    outcomes: list[list[float]] = []

    def on_own_loop(text: str) -> None:
        outcomes.append(asyncio.run(embedder.aembed_query(text)))

    threads = [threading.Thread(target=on_own_loop, args=(f"loop {i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 4
    assert len(sent_texts(tei)) == 4


async def test_the_sync_api_works_inside_a_running_loop(make_embedder, tei_config) -> None:
    # As in Jupyter: blocking calls from a coroutine must not deadlock or need nest_asyncio.
    vector = make_embedder().embed_query("inside a running loop")
    assert np.array_equal(
        np.asarray(vector, dtype=np.float32), expected_vector(tei_config, "inside a running loop")
    )


async def test_a_cancelled_caller_does_not_strand_the_others(make_embedder, tei) -> None:
    tei.inject(
        __import__("tests.tei_emulator", fromlist=["Fault"]).Fault(kind="delay", seconds=0.3)
    )
    embedder = make_embedder()
    first = asyncio.create_task(embedder.aembed_query("slow text"))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(embedder.aembed_query("slow text"))
    await asyncio.sleep(0.05)
    first.cancel()
    assert len(await asyncio.wait_for(second, 5)) == 384
    assert sent_texts(tei) == ["slow text"]


def test_an_embedder_pickles_and_works_in_the_copy(make_embedder, tei, qdrant_path) -> None:
    embedder = make_embedder()
    vector = embedder.embed_query("before pickling")
    embedder.close()
    copy = pickle.loads(pickle.dumps(embedder))
    try:
        assert isinstance(copy, CachedEmbedder)
        assert copy.settings == embedder.settings
        assert copy.embed_query("before pickling") == vector
        assert copy.stats.hits == 1
    finally:
        copy.close()


async def test_concurrent_first_calls_remember_teis_info_once(tei) -> None:
    async with CachedEmbedder(tei_url=tei.url, qdrant_url=":memory:") as embedder:
        await asyncio.gather(*(embedder.aembed_query(f"first {i}") for i in range(20)))
        await embedder.aflush()
        assert embedder.stats.cache_errors == 0
        assert embedder.stats.writes == 20


@pytest.mark.parametrize("cls", [CachedEmbedder, CachedSparseEmbedder, CachedReranker])
def test_a_key_from_the_environment_is_not_pickled_with_a_plain_face(
    cls: type, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As with the adapters: the copy reads its own environment; a key given as an argument
    travels with the object."""
    monkeypatch.setenv("CACHED_TEI_API_KEY", "env-secret")
    monkeypatch.setenv("CACHED_TEI_QDRANT_API_KEY", "env-qdrant-secret")
    from_environment = cls(qdrant_path=tmp_path)
    given = cls(qdrant_path=tmp_path, api_key="given-secret")
    pickled, pickled_given = pickle.dumps(from_environment), pickle.dumps(given)
    assert b"env-secret" not in pickled and b"env-qdrant-secret" not in pickled
    assert b"given-secret" in pickled_given
    monkeypatch.setenv("CACHED_TEI_API_KEY", "where-unpickled")
    copy, copy_given = pickle.loads(pickled), pickle.loads(pickled_given)
    assert copy.settings.api_key == SecretStr("where-unpickled")
    assert copy.settings.qdrant_api_key == SecretStr("env-qdrant-secret")
    assert copy.settings.qdrant_path == from_environment.settings.qdrant_path
    assert b"where-unpickled" not in pickle.dumps(copy)
    assert copy_given.settings.api_key == SecretStr("given-secret")
