"""The LangChain sparse and rerank faces: exact values against the emulators' oracles, each text
or pair computed once, and end to end in a hybrid QdrantVectorStore and a
ContextualCompressionRetriever."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_qdrant import QdrantVectorStore, RetrievalMode, SparseEmbeddings, SparseVector

from cached_tei import InputError
from langchain_cached_tei import CachedTEIEmbeddings, CachedTEIRerank, CachedTEISparseEmbeddings
from tests.adapters.conftest import expected_ranks, expected_sparse_vector
from tests.conftest import sent_texts
from tests.tei_emulator import EmulatorServer

TEXTS = [
    f"passage {i}: the {topic} of rivers" for i, topic in enumerate("source mouth delta".split())
]
QUERY = "where does a river end?"
DENSE_PROBE = "dummy_text"  # what langchain-qdrant embeds to learn the dense size


def _langchain(text: str) -> SparseVector:
    vector = expected_sparse_vector(text)
    return SparseVector(indices=vector.indices, values=vector.values)


# --- sparse embeddings ---------------------------------------------------------------------------
def test_sparse_vectors_are_teis(make_face: Callable[..., Any], splade: EmulatorServer) -> None:
    sparse = make_face(CachedTEISparseEmbeddings)
    assert isinstance(sparse, SparseEmbeddings)
    vectors = sparse.embed_documents(TEXTS)
    assert vectors == [_langchain(text) for text in TEXTS]
    assert all(isinstance(v, SparseVector) and v.indices == sorted(v.indices) for v in vectors)
    assert sparse.embed_query(TEXTS[1]) == vectors[1]  # TEI encodes queries as documents
    assert splade.sparse_texts_computed == len(TEXTS)


async def test_sparse_async_is_native_and_shares_the_cache(
    make_face: Callable[..., Any], splade: EmulatorServer
) -> None:
    sparse = make_face(CachedTEISparseEmbeddings)
    assert CachedTEISparseEmbeddings.aembed_documents is not SparseEmbeddings.aembed_documents
    assert CachedTEISparseEmbeddings.aembed_query is not SparseEmbeddings.aembed_query
    vectors = await sparse.aembed_documents(TEXTS)
    assert vectors == [_langchain(text) for text in TEXTS]
    assert await sparse.aembed_query("a new query") == _langchain("a new query")
    assert sparse.embed_documents(TEXTS) == vectors
    assert splade.sparse_texts_computed == len(TEXTS) + 1


async def test_a_bare_string_to_embed_documents_is_an_input_error(
    make_face: Callable[..., Any], splade: EmulatorServer
) -> None:
    sparse = make_face(CachedTEISparseEmbeddings)
    with pytest.raises(InputError, match="single string"):
        sparse.embed_documents("hello")
    with pytest.raises(InputError, match="single string"):
        await sparse.aembed_documents("hello")
    assert splade.requests == []


def test_hybrid_qdrant_vector_store(
    make_face: Callable[..., Any], emulator: EmulatorServer, splade: EmulatorServer
) -> None:
    """langchain-qdrant stores our sparse vectors as they are, and a second store over the same
    documents (and the same query) computes nothing again."""
    dense = make_face(CachedTEIEmbeddings)
    sparse = make_face(CachedTEISparseEmbeddings)
    docs = [Document(page_content=text, metadata={"n": i}) for i, text in enumerate(TEXTS)]

    def store() -> QdrantVectorStore:
        return QdrantVectorStore.from_documents(
            docs,
            embedding=dense,
            sparse_embedding=sparse,
            location=":memory:",
            collection_name="hybrid",
            retrieval_mode=RetrievalMode.HYBRID,
        )

    first = store()
    found = first.similarity_search(QUERY, k=3)
    assert sorted(doc.metadata["n"] for doc in found) == [0, 1, 2]
    points, _ = first.client.scroll("hybrid", with_vectors=True, limit=10)
    stored = {p.payload["page_content"]: p.vector[first.sparse_vector_name] for p in points}
    for text in TEXTS:
        want = _langchain(text)
        assert (stored[text].indices, stored[text].values) == (want.indices, want.values)
    assert sorted(sent_texts(splade)) == sorted([*TEXTS, QUERY])
    assert sorted(sent_texts(emulator)) == sorted([*TEXTS, QUERY, DENSE_PROBE])

    again = store().similarity_search(QUERY, k=3)
    assert [doc.page_content for doc in again] == [doc.page_content for doc in found]
    assert splade.sparse_texts_computed == len(TEXTS) + 1
    assert emulator.embed_texts_computed == len(TEXTS) + 2


# --- rerank -------------------------------------------------------------------------------------
def test_rerank_orders_by_teis_scores(
    make_face: Callable[..., Any], reranker: EmulatorServer
) -> None:
    rerank = make_face(CachedTEIRerank, top_n=None)
    assert isinstance(rerank, BaseDocumentCompressor)
    docs = [Document(page_content=text, metadata={"n": i}) for i, text in enumerate(TEXTS)]
    ranked = rerank.compress_documents(docs, QUERY)
    want = expected_ranks(QUERY, TEXTS)
    assert [doc.page_content for doc in ranked] == [TEXTS[r.index] for r in want]
    assert [doc.metadata for doc in ranked] == [
        {"n": r.index, "relevance_score": r.score} for r in want
    ]
    assert all(doc.metadata == {"n": i} for i, doc in enumerate(docs))  # copies, not the inputs
    assert reranker.rerank_pairs_computed == len(TEXTS)


async def test_rerank_top_n_raw_scores_and_async(
    make_face: Callable[..., Any], reranker: EmulatorServer
) -> None:
    texts = [f"text {i} about {QUERY}" for i in range(6)]
    docs = [Document(page_content=text) for text in texts]
    rerank = make_face(CachedTEIRerank)  # top_n=3, LangChain's rerankers' default
    want = expected_ranks(QUERY, texts)[:3]
    ranked = await rerank.acompress_documents(docs, QUERY)
    assert [(d.page_content, d.metadata["relevance_score"]) for d in ranked] == [
        (texts[r.index], r.score) for r in want
    ]
    assert rerank.compress_documents(docs, QUERY) == ranked
    assert reranker.rerank_pairs_computed == len(texts)  # in batches of 4: 2 requests
    assert sorted(len(r.texts) for r in reranker.requests) == [2, 4]

    raw = make_face(CachedTEIRerank, top_n=2, raw_scores=True).compress_documents(docs, QUERY)
    assert [d.metadata["relevance_score"] for d in raw] == [
        r.score for r in expected_ranks(QUERY, texts, raw_scores=True)[:2]
    ]
    assert await rerank.acompress_documents([], QUERY) == []
    assert rerank.compress_documents([], QUERY) == []
    assert reranker.rerank_pairs_computed == 2 * len(texts)


def test_contextual_compression_retriever(
    make_face: Callable[..., Any], emulator: EmulatorServer, reranker: EmulatorServer
) -> None:
    """Hybrid retrieval then reranking: the best two of the retrieved documents by the
    reranker's scores; the same question again reaches no TEI."""
    dense = make_face(CachedTEIEmbeddings)
    sparse = make_face(CachedTEISparseEmbeddings)
    store = QdrantVectorStore.from_texts(
        TEXTS,
        embedding=dense,
        sparse_embedding=sparse,
        location=":memory:",
        retrieval_mode=RetrievalMode.HYBRID,
    )
    retriever = ContextualCompressionRetriever(
        base_compressor=make_face(CachedTEIRerank, top_n=2),
        base_retriever=store.as_retriever(search_kwargs={"k": 3}),
    )
    found = retriever.invoke(QUERY)
    want = expected_ranks(QUERY, TEXTS)[:2]
    assert [(d.page_content, d.metadata["relevance_score"]) for d in found] == [
        (TEXTS[r.index], r.score) for r in want
    ]
    counts = (emulator.embed_texts_computed, reranker.rerank_pairs_computed)
    assert counts == (len(TEXTS) + 2, len(TEXTS))
    assert retriever.invoke(QUERY) == found
    assert (emulator.embed_texts_computed, reranker.rerank_pairs_computed) == counts


async def test_contextual_compression_retriever_async(
    make_face: Callable[..., Any], reranker: EmulatorServer
) -> None:
    dense = make_face(CachedTEIEmbeddings)
    sparse = make_face(CachedTEISparseEmbeddings)
    store = await QdrantVectorStore.afrom_texts(
        TEXTS,
        embedding=dense,
        sparse_embedding=sparse,
        location=":memory:",
        retrieval_mode=RetrievalMode.HYBRID,
    )
    retriever = ContextualCompressionRetriever(
        base_compressor=make_face(CachedTEIRerank, top_n=1),
        base_retriever=store.as_retriever(search_kwargs={"k": 3}),
    )
    (best,) = await retriever.ainvoke(QUERY)
    (want,) = expected_ranks(QUERY, TEXTS)[:1]
    assert (best.page_content, best.metadata["relevance_score"]) == (TEXTS[want.index], want.score)
    assert reranker.rerank_pairs_computed == len(TEXTS)
