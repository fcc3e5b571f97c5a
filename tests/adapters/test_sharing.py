"""One cache, shared (issue 10): every face in a process on the default folder shares one store,
its hits and its in-flight work, whatever their threads and event loops; processes share a
Qdrant server; a second process on a held embedded folder fails up front. The sparse and rerank
faces (issue 22) share theirs the same way."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import pytest
from langchain_core.documents import Document as LangChainDocument
from llama_index.core import Document
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, TextNode

from cached_tei import (
    CachedEmbedder,
    CachedReranker,
    CachedSparseEmbedder,
    CachedTEISettings,
    TEIError,
)
from cached_tei.errors import StoreLockedError
from langchain_cached_tei import CachedTEIEmbeddings as LangChainEmbeddings
from langchain_cached_tei import CachedTEIRerank as LangChainRerank
from langchain_cached_tei import CachedTEISparseEmbeddings as LangChainSparse
from llama_index_cached_tei import CachedTEIEmbeddings as LlamaIndexEmbeddings
from llama_index_cached_tei import CachedTEIRerank as LlamaIndexRerank
from llama_index_cached_tei import CachedTEISparseEmbedding as LlamaIndexSparse
from tests.adapters.conftest import expected, expected_ranks, expected_sparse_vector
from tests.conftest import sent_texts
from tests.faults.fake_qdrant import FakeQdrant
from tests.tei_emulator import EmulatorServer, Fault

pytestmark = pytest.mark.timeout(180)

Face = TypeVar("Face")


@pytest.fixture
def new(emulator: EmulatorServer) -> Iterator[Callable[..., Any]]:
    """``new(cls, **fields)``: a face on the emulator and the DEFAULT folder (the test's own
    XDG_CACHE_HOME); every face made is closed afterwards."""
    made: list[Any] = []

    def make(cls: Callable[..., Face], **fields: Any) -> Face:
        face = cls(tei_url=emulator.url, **fields)
        made.append(face)
        return face

    yield make
    for face in made:
        face.close()


def _rows(vectors: Any) -> np.ndarray:
    return np.asarray(vectors, dtype=np.float32)


def _oracle(texts: list[str], **options: Any) -> np.ndarray:
    return np.stack([expected(text, **options) for text in texts])


def test_three_faces_on_the_default_folder_share_hits(
    new: Callable[..., Any], emulator: EmulatorServer
) -> None:
    langchain = new(LangChainEmbeddings)
    llama_index = new(LlamaIndexEmbeddings)
    embedder = new(CachedEmbedder)
    default = CachedTEISettings().qdrant_path
    assert langchain.settings.qdrant_path == llama_index.settings.qdrant_path == default
    assert embedder.settings.qdrant_path == default
    emulator.reset_log()

    first = langchain.embed_documents(["alpha", "beta"])
    second = llama_index.get_text_embedding_batch(["beta", "gamma"])
    third = embedder.embed_documents(["alpha", "gamma", "delta"])
    query = llama_index.get_query_embedding("alpha")  # no instruction: TEI sees "alpha" again
    assert sent_texts(emulator) == ["alpha", "beta", "gamma", "delta"]
    np.testing.assert_array_equal(_rows(first), _oracle(["alpha", "beta"]))
    np.testing.assert_array_equal(_rows(second), _oracle(["beta", "gamma"]))
    np.testing.assert_array_equal(_rows(third), _oracle(["alpha", "gamma", "delta"]))
    assert query == first[0]

    # Other options are another namespace: computed again, with those options.
    emulator.reset_log()
    raw = new(LlamaIndexEmbeddings, normalize=False).get_text_embedding("alpha")
    np.testing.assert_array_equal(np.float32(raw), expected("alpha", normalize=False))
    assert [(r.texts, r.normalize) for r in emulator.requests] == [(["alpha"], False)]


def test_sparse_texts_and_rerank_pairs_are_computed_once_across_faces(
    make_face: Callable[..., Any], splade: EmulatorServer, reranker: EmulatorServer
) -> None:
    """The sparse and rerank faces of both frameworks and the plain ones share one cache: each
    text, and each (query, text) pair, reaches TEI once, whichever face asks first."""
    langchain, llama_index = make_face(LangChainSparse), make_face(LlamaIndexSparse)
    plain = make_face(CachedSparseEmbedder)
    first = langchain.embed_documents(["alpha", "beta"])
    second = llama_index.get_text_embedding_batch(["beta", "gamma"])
    third = plain.embed_documents(["alpha", "gamma", "delta"])
    fourth = llama_index.sparse_query_fn(["delta"])
    assert sent_texts(splade) == ["alpha", "beta", "gamma", "delta"]
    oracle = {text: expected_sparse_vector(text) for text in ("alpha", "beta", "gamma", "delta")}
    assert [(v.indices, v.values) for v in first] == [
        (oracle[t].indices, oracle[t].values) for t in ("alpha", "beta")
    ]
    assert [(list(w), list(w.values())) for w in second] == [
        (oracle[t].indices, oracle[t].values) for t in ("beta", "gamma")
    ]
    assert third == [oracle[t] for t in ("alpha", "gamma", "delta")]
    assert fourth == ([oracle["delta"].indices], [oracle["delta"].values])

    query = "which greek letter?"
    scores = {r.index: r.score for r in expected_ranks(query, ["alpha", "beta", "gamma", "delta"])}
    by_text = {t: scores[i] for i, t in enumerate(["alpha", "beta", "gamma", "delta"])}
    docs = [LangChainDocument(page_content=t) for t in ("alpha", "beta")]
    ranked = make_face(LangChainRerank, top_n=None).compress_documents(docs, query)
    nodes = [NodeWithScore(node=TextNode(text=t)) for t in ("beta", "gamma")]
    reranked = make_face(LlamaIndexRerank).postprocess_nodes(nodes, query_str=query)
    ranks = make_face(CachedReranker).rerank(query, ["alpha", "gamma", "delta"])
    assert sorted(sent_texts(reranker)) == ["alpha", "beta", "delta", "gamma"]
    assert reranker.rerank_pairs_computed == 4
    assert {d.page_content: d.metadata["relevance_score"] for d in ranked} == {
        t: by_text[t] for t in ("alpha", "beta")
    }
    assert {n.node.get_content(): n.score for n in reranked} == {
        t: by_text[t] for t in ("beta", "gamma")
    }
    assert {("alpha", "gamma", "delta")[r.index]: r.score for r in ranks} == {
        t: by_text[t] for t in ("alpha", "gamma", "delta")
    }


def test_recreating_a_face_while_the_old_one_lives(
    new: Callable[..., Any], emulator: EmulatorServer
) -> None:
    """The notebook pattern: a cell that builds a face runs again while the old object is
    still referenced (by a vector store, ``Settings.embed_model``...)."""
    old_langchain = new(LangChainEmbeddings)
    old_llama_index = new(LlamaIndexEmbeddings)
    old_embedder = new(CachedEmbedder)
    vector = old_langchain.embed_documents(["cell"])[0]
    emulator.reset_log()
    for _ in range(3):
        assert new(LangChainEmbeddings).embed_documents(["cell"]) == [vector]
        assert new(LlamaIndexEmbeddings).get_text_embedding("cell") == vector
        assert new(CachedEmbedder).embed_query("cell") == vector
    assert emulator.requests == []
    # One that differs only in its instruction works too, and computes its own text.
    (prefixed,) = new(CachedEmbedder, document_instruction="passage: ").embed_documents(["cell"])
    np.testing.assert_array_equal(np.float32(prefixed), expected("passage: cell"))
    # The old objects still work.
    assert old_llama_index.get_text_embedding_batch(["cell", "other"])[0] == vector
    assert old_embedder.embed_documents(["other"]) == [old_langchain.embed_query("other")]
    assert sent_texts(emulator) == ["passage: cell", "other"]


def test_closing_one_face_leaves_the_others_working(
    new: Callable[..., Any], emulator: EmulatorServer
) -> None:
    langchain = new(LangChainEmbeddings)
    llama_index = new(LlamaIndexEmbeddings)
    embedder = new(CachedEmbedder)
    emulator.reset_log()
    written = langchain.embed_documents(["before close"])
    langchain.close()
    assert llama_index.get_text_embedding_batch(["before close"]) == written
    assert embedder.embed_documents(["before close", "after close"])[0] == written[0]
    asyncio.run(llama_index.aclose())
    after = asyncio.run(embedder.aembed_documents(["after close", "later"]))
    embedder.close()
    # A closed face starts afresh on its next call, on the same cache.
    assert langchain.embed_documents(["after close", "later"]) == after
    assert llama_index.get_text_embedding("later") == after[1]
    assert sent_texts(emulator) == ["before close", "after close", "later"]
    np.testing.assert_array_equal(_rows(after), _oracle(["after close", "later"]))


def test_faces_on_threads_and_event_loops_at_once(
    new: Callable[..., Any], emulator: EmulatorServer
) -> None:
    """Five callers start together, each on its own thread, three of them on their own event
    loops, asking for overlapping texts: every answer exact, each text computed once."""
    texts = [f"concurrent {i}" for i in range(80)]
    langchain = new(LangChainEmbeddings)
    llama_index = new(LlamaIndexEmbeddings, embed_batch_size=16)
    embedder = new(CachedEmbedder)
    callers: list[Callable[[], Any]] = [
        lambda: langchain.embed_documents(texts),
        lambda: asyncio.run(langchain.aembed_documents(texts[::-1]))[::-1],
        lambda: llama_index.get_text_embedding_batch(texts[20:] + texts[:20]),
        lambda: asyncio.run(llama_index.aget_text_embedding_batch(texts)),
        lambda: asyncio.run(embedder.aembed_documents(texts)),
    ]
    start = threading.Barrier(len(callers))

    def call(caller: Callable[[], Any]) -> Any:
        start.wait(30)
        return caller()

    emulator.reset_log()
    with cf.ThreadPoolExecutor(len(callers)) as pool:
        results = list(pool.map(call, callers))
    want = _oracle(texts)
    for index, result in enumerate(results):
        rows = _rows(result)
        if index == 2:
            rows = np.concatenate([rows[60:], rows[:60]])
        np.testing.assert_array_equal(rows, want)
    assert sorted(sent_texts(emulator)) == sorted(texts)
    assert emulator.embed_texts_computed == len(texts)


# --- several processes: IngestionPipeline(num_workers=2) -------------------------------------
# One node per document (a splitter in a spawned worker would load its tokenizer from the
# network, which the tests do not have).
DOCUMENTS = [
    Document(text=f"Fact {j} about {topic}: it matters.", id_=f"{topic}-{j}")
    for topic in "rivers mountains deserts forests oceans glaciers".split()
    for j in range(12)
]
CONTENTS = [document.text for document in DOCUMENTS]


def _pipeline(embed_model: LlamaIndexEmbeddings) -> IngestionPipeline:
    return IngestionPipeline(transformations=[embed_model], disable_cache=True)


def _content(node: BaseNode) -> str:
    return node.get_content(metadata_mode=MetadataMode.EMBED)


def test_ingestion_workers_share_a_qdrant_server(
    new: Callable[..., Any], emulator: EmulatorServer
) -> None:
    """Two worker processes over the Qdrant stand-in: what this process cached is not
    computed again, each other distinct text is computed once, every vector is exact; a
    second run computes nothing."""
    with FakeQdrant() as qdrant:
        embed_model = new(LlamaIndexEmbeddings, qdrant_url=qdrant.url)
        cached_here = CONTENTS[::3]
        embed_model.get_text_embedding_batch(cached_here)
        embed_model.flush()

        emulator.reset_log()
        nodes = _pipeline(embed_model).run(documents=DOCUMENTS, num_workers=2)
        assert sorted(_content(node) for node in nodes) == sorted(CONTENTS)
        assert sorted(sent_texts(emulator)) == sorted(set(CONTENTS) - set(cached_here))
        for node in nodes:
            np.testing.assert_array_equal(np.float32(node.embedding), expected(_content(node)))

        emulator.reset_log()
        again = _pipeline(embed_model).run(documents=DOCUMENTS, num_workers=2)
        assert emulator.requests == []
        assert sorted(n.embedding for n in again) == sorted(n.embedding for n in nodes)


@pytest.mark.timeout(90)  # an error a worker cannot send back hangs multiprocessing's pool
def test_ingestion_workers_report_tei_errors(
    new: Callable[..., Any], emulator: EmulatorServer
) -> None:
    """A TEI error in a worker reaches the caller as the same TEIError."""
    with FakeQdrant() as qdrant:
        embed_model = new(LlamaIndexEmbeddings, qdrant_url=qdrant.url)
        emulator.inject(Fault(kind="status", status=422, count=100))
        try:
            with pytest.raises(TEIError, match="injected fault") as caught:
                _pipeline(embed_model).run(documents=DOCUMENTS, num_workers=2)
        finally:
            emulator.clear_faults()
    assert (caught.value.status, caught.value.error_type) == (422, "Validation")


@pytest.mark.timeout(90)
def test_ingestion_workers_on_a_held_embedded_folder_fail_up_front(
    new: Callable[..., Any], emulator: EmulatorServer
) -> None:
    """This process holds the default embedded folder; the workers cannot open it. They fail
    at their first call with the holder's PID and the ways out, before any TEI request."""
    embed_model = new(LlamaIndexEmbeddings)
    embed_model.get_text_embedding("held here")
    emulator.reset_log()
    with pytest.raises(StoreLockedError, match=rf"PID {os.getpid()}") as caught:
        _pipeline(embed_model).run(documents=DOCUMENTS, num_workers=2)
    ways_out = ("CACHED_TEI_QDRANT_URL=http", "CACHED_TEI_QDRANT_PATH", "run `cached-tei serve`")
    assert all(way in str(caught.value) for way in ways_out), str(caught.value)
    assert emulator.requests == []
    assert embed_model.get_text_embedding("held here")  # this process keeps working
