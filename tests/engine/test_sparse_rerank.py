"""Sparse embeddings and reranking through the plain faces: exact values, each text or pair
computed once, cold and warm, TTL, the breaker, and each URL checked against /info."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from cached_tei import (
    CachedReranker,
    CachedSparseEmbedder,
    InputError,
    Rank,
    SparseVector,
    TEIError,
)
from tests.tei_emulator import EmulatorConfig, EmulatorServer, expected_score, expected_sparse

SPLADE = EmulatorConfig(
    model_id="emulator/splade-v3", model_type="splade", step_ms=2.0, per_text_ms=0.05
)
RERANKER = EmulatorConfig(
    model_id="emulator/bge-reranker-base",
    model_type="reranker",
    max_client_batch_size=4,
    step_ms=2.0,
    per_text_ms=0.05,
)
DOCS = [f"document number {i} about topic {i % 3}" for i in range(10)]


@pytest.fixture
def splade() -> Iterator[EmulatorServer]:
    with EmulatorServer(SPLADE) as server:
        yield server


@pytest.fixture
def reranker() -> Iterator[EmulatorServer]:
    with EmulatorServer(RERANKER) as server:
        yield server


@pytest.fixture
def make_sparse(
    splade: EmulatorServer, qdrant_path: Path
) -> Iterator[Callable[..., CachedSparseEmbedder]]:
    made: list[CachedSparseEmbedder] = []

    def make(**overrides: object) -> CachedSparseEmbedder:
        face = CachedSparseEmbedder(
            **{"sparse_url": splade.url, "qdrant_path": qdrant_path, **overrides}
        )
        made.append(face)
        return face

    yield make
    for face in made:
        face.close()


@pytest.fixture
def make_reranker(
    reranker: EmulatorServer, qdrant_path: Path
) -> Iterator[Callable[..., CachedReranker]]:
    made: list[CachedReranker] = []

    def make(**overrides: object) -> CachedReranker:
        face = CachedReranker(
            **{"rerank_url": reranker.url, "qdrant_path": qdrant_path, **overrides}
        )
        made.append(face)
        return face

    yield make
    for face in made:
        face.close()


def oracle_sparse(text: str) -> SparseVector:
    indices, values = expected_sparse(SPLADE, text)
    return SparseVector(indices, values.tolist())


def oracle_ranks(query: str, texts: list[str], raw_scores: bool = False) -> list[Rank]:
    scores = [expected_score(RERANKER, query, t, raw_scores=raw_scores) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: scores[i])[::-1]  # TEI: sort, reverse
    return [Rank(i, float(scores[i])) for i in order]


def test_sparse_vectors_are_bit_exact_cold_and_warm(
    make_sparse: Callable[..., CachedSparseEmbedder], splade: EmulatorServer
) -> None:
    expected = [oracle_sparse(text) for text in DOCS]
    with make_sparse() as cold:
        assert cold.embed_documents(DOCS) == expected
        assert cold.embed_query(DOCS[3]) == expected[3]
    assert splade.sparse_texts_computed == len(DOCS)
    with make_sparse(lru_bytes=0) as warm:  # from the store, not memory
        vectors = warm.embed_documents(DOCS)
        assert warm.stats.hits == len(DOCS)
    assert vectors == expected
    for vector, want in zip(vectors, expected, strict=True):
        assert np.array_equal(np.asarray(vector.values, dtype=np.float32), want.values)
        assert vector.indices == sorted(vector.indices)
    assert splade.sparse_texts_computed == len(DOCS)


def test_sparse_texts_are_computed_once_across_concurrent_calls(
    make_sparse: Callable[..., CachedSparseEmbedder], splade: EmulatorServer
) -> None:
    face = make_sparse()

    async def main() -> list[list[SparseVector]]:
        return list(await asyncio.gather(*(face.aembed_documents(DOCS) for _ in range(5))))

    results = asyncio.run(main())
    assert all(result == results[0] for result in results)
    assert splade.sparse_texts_computed == len(DOCS)
    assert [text for r in splade.requests for text in r.texts] == DOCS


def test_rerank_scores_order_and_top_n_as_tei_gives_them(
    make_reranker: Callable[..., CachedReranker], reranker: EmulatorServer
) -> None:
    query = "which document is about topic 1"
    with make_reranker() as face:
        assert face.rerank(query, DOCS) == oracle_ranks(query, DOCS)
        top = face.rerank(query, DOCS, top_n=3, return_text=True)
    want = oracle_ranks(query, DOCS)[:3]
    assert top == [Rank(r.index, r.score, DOCS[r.index]) for r in want]
    # Ten pairs, in batches of at most four (max_client_batch_size), computed once.
    assert reranker.rerank_pairs_computed == len(DOCS)
    assert sorted(len(r.texts) for r in reranker.requests) == [2, 4, 4]


def test_rerank_keys_each_pair_and_sends_only_missing_pairs(
    make_reranker: Callable[..., CachedReranker], reranker: EmulatorServer
) -> None:
    face = make_reranker()
    face.rerank("query a", DOCS[:5])
    reranker.reset_log()
    ranks = face.rerank("query a", DOCS[3:8])
    assert [r.texts for r in reranker.requests] == [DOCS[5:8]]
    assert ranks == [Rank(r.index, r.score) for r in oracle_ranks("query a", DOCS[3:8])]
    reranker.reset_log()
    face.rerank("query b", DOCS[:2])  # another query: other pairs
    assert [r.texts for r in reranker.requests] == [DOCS[:2]]


def test_raw_scores_are_cached_apart(
    make_reranker: Callable[..., CachedReranker], reranker: EmulatorServer
) -> None:
    face = make_reranker()
    plain = face.rerank("q", DOCS[:3])
    raw = face.rerank("q", DOCS[:3], raw_scores=True)
    assert raw == oracle_ranks("q", DOCS[:3], raw_scores=True)
    assert plain == oracle_ranks("q", DOCS[:3])
    assert face.rerank("q", DOCS[:3], raw_scores=True) == raw
    assert reranker.rerank_pairs_computed == 6


def test_rerank_async_and_empty(make_reranker: Callable[..., CachedReranker]) -> None:
    face = make_reranker()
    assert asyncio.run(face.arerank("q", DOCS[:4])) == oracle_ranks("q", DOCS[:4])
    assert face.rerank("q", []) == []
    assert face.rerank("q", ["a", ""]) == oracle_ranks("q", ["a", ""])  # TEI reads the pair
    with pytest.raises(InputError, match="index 1"):
        face.rerank("q", ["a", None])  # type: ignore[list-item]
    with pytest.raises(InputError, match="top_n"):
        face.rerank("q", ["a"], top_n=-1)


def test_a_url_of_the_wrong_kind_is_a_clear_error(
    tei: EmulatorServer, splade: EmulatorServer, qdrant_path: Path
) -> None:
    with CachedReranker(rerank_url=tei.url, qdrant_path=qdrant_path) as face:
        with pytest.raises(TEIError, match="CACHED_TEI_RERANK_URL") as caught:
            face.rerank("q", ["a"])
    assert "a dense embedding model" in str(caught.value)
    with CachedSparseEmbedder(sparse_url=tei.url, qdrant_path=qdrant_path) as face:
        with pytest.raises(TEIError, match="CACHED_TEI_SPARSE_URL"):
            face.embed_query("a")
    assert tei.requests == []  # refused before any text was sent


def test_a_reranker_behind_the_dense_url_is_a_clear_error(
    reranker: EmulatorServer, qdrant_path: Path
) -> None:
    from cached_tei import CachedEmbedder

    with CachedEmbedder(tei_url=reranker.url, qdrant_path=qdrant_path) as face:
        with pytest.raises(TEIError, match="CACHED_TEI_URL .* a reranker, which has no /embed"):
            face.embed_query("a")
    assert reranker.requests == []


def test_an_unset_url_names_its_variable(qdrant_path: Path) -> None:
    with pytest.raises(InputError, match="CACHED_TEI_SPARSE_URL"):
        CachedSparseEmbedder(qdrant_path=qdrant_path).embed_query("a")
    with pytest.raises(InputError, match="CACHED_TEI_RERANK_URL"):
        CachedReranker(qdrant_path=qdrant_path).rerank("q", ["a"])


def test_expired_entries_are_recomputed(
    make_sparse: Callable[..., CachedSparseEmbedder],
    splade: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time as clock

    with make_sparse(ttl=60, lru_bytes=0) as face:
        face.embed_documents(DOCS[:3])
        face.flush()
        later = clock.time() + 120
        monkeypatch.setattr("cached_tei.engine.time.time", lambda: later)
        assert face.embed_documents(DOCS[:3]) == [oracle_sparse(t) for t in DOCS[:3]]
    assert splade.sparse_texts_computed == 6


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_dead_qdrant_costs_neither_kind_its_answers(
    splade: EmulatorServer, reranker: EmulatorServer
) -> None:
    qdrant = f"http://127.0.0.1:{_closed_port()}"
    dead = {"qdrant_url": qdrant, "qdrant_timeout": 0.5, "breaker_threshold": 2}
    with (
        CachedSparseEmbedder(sparse_url=splade.url, **dead) as sparse,
        CachedReranker(rerank_url=reranker.url, **dead) as ranker,
    ):
        for round_ in range(4):
            texts = [f"round {round_} text {i}" for i in range(3)]
            assert sparse.embed_documents(texts) == [oracle_sparse(t) for t in texts]
            assert ranker.rerank("q", texts) == oracle_ranks("q", texts)
        sparse.flush()
        ranker.flush()
        for face in (sparse, ranker):
            assert face._lease.engine is not None
            assert face._lease.engine.breaker.state == "open"
            assert face.stats.cache_errors >= 2 and face.stats.cache_skipped > 0
            assert face.stats.misses == 12


def test_sparse_and_rerank_entries_live_in_collections_of_their_kind(
    make_sparse: Callable[..., CachedSparseEmbedder],
    make_reranker: Callable[..., CachedReranker],
    qdrant_path: Path,
) -> None:
    with make_sparse() as sparse, make_reranker() as ranker:
        sparse.embed_documents(DOCS[:2])
        ranker.rerank("q", DOCS[:3])
        ranker.rerank("q", DOCS[:3], raw_scores=True)
    described = [
        json.loads((folder / "namespace.json").read_text())
        for folder in qdrant_path.iterdir()
        if (folder / "namespace.json").exists()
    ]
    kinds = sorted(
        (d["namespace"]["kind"], d["namespace"].get("raw_scores"), d["dimension"])
        for d in described
    )
    assert kinds == [("rerank", False, 1), ("rerank", True, 1), ("sparse", None, 0)]


def test_pairs_are_computed_once_across_concurrent_calls_and_faces(
    make_reranker: Callable[..., CachedReranker], reranker: EmulatorServer
) -> None:
    first, second = make_reranker(), make_reranker(normalize=False)  # one engine, two faces

    async def main() -> list[list[Rank]]:
        calls = [face.arerank("q", DOCS) for face in (first, second) for _ in range(3)]
        return list(await asyncio.gather(*calls))

    results = asyncio.run(main())
    assert all(result == oracle_ranks("q", DOCS) for result in results)
    assert reranker.rerank_pairs_computed == len(DOCS)
