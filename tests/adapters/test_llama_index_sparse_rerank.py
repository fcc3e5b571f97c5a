"""The LlamaIndex sparse and rerank faces: exact values against the emulators' oracles, each
text or pair computed once, a drop-in for TextEmbeddingInference, and end to end in a hybrid
QdrantVectorStore under a query engine with the reranker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.embeddings.base_sparse import BaseSparseEmbedding
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.postprocessor.tei_rerank import TextEmbeddingInference
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import AsyncQdrantClient, QdrantClient

from cached_tei import InputError
from llama_index_cached_tei import CachedTEIEmbeddings, CachedTEIRerank, CachedTEISparseEmbedding
from tests.adapters.conftest import expected_ranks, expected_sparse_vector
from tests.conftest import sent_texts
from tests.tei_emulator import EmulatorServer

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

TEXTS = [f"note {i}: {fact}" for i, fact in enumerate(["rivers flow", "seas are salty", "lakes"])]
QUERY = "what is salty?"


def _weights(text: str) -> dict[int, float]:
    vector = expected_sparse_vector(text)
    return dict(zip(vector.indices, vector.values, strict=True))


def _nodes(texts: list[str]) -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=text, id_=f"n{i}"), score=i / 10)
        for i, text in enumerate(texts)
    ]


class _Recorder(BaseEventHandler):
    events: list[BaseEvent] = []

    @classmethod
    def class_name(cls) -> str:
        return "Recorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    handler = _Recorder(events=[])
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    yield handler
    dispatcher.event_handlers.remove(handler)


# --- sparse embeddings ---------------------------------------------------------------------------
def test_sparse_embeddings_are_teis(make_face: Callable[..., Any], splade: EmulatorServer) -> None:
    sparse = make_face(CachedTEISparseEmbedding)
    assert isinstance(sparse, BaseSparseEmbedding) and sparse.model_name == "unknown"
    weights = sparse.get_text_embedding_batch(TEXTS)
    assert weights == [_weights(text) for text in TEXTS]
    assert [list(w) for w in weights] == [expected_sparse_vector(t).indices for t in TEXTS]
    assert sparse.model_name == "emulator/splade-v3"  # read from /info
    assert sparse.get_text_embedding(TEXTS[0]) == weights[0]
    assert sparse.get_query_embedding(TEXTS[2]) == weights[2]  # TEI encodes queries alike
    assert splade.sparse_texts_computed == len(TEXTS)


async def test_sparse_async(make_face: Callable[..., Any], splade: EmulatorServer) -> None:
    sparse = make_face(CachedTEISparseEmbedding, embed_batch_size=2)
    weights = await sparse.aget_text_embedding_batch(TEXTS)
    assert weights == [_weights(text) for text in TEXTS]
    assert await sparse.aget_query_embedding(QUERY) == _weights(QUERY)
    assert await sparse.aget_text_embedding(TEXTS[1]) == weights[1]
    assert sparse.model_name == "emulator/splade-v3"
    assert sparse_texts_once(splade) == sorted([*TEXTS, QUERY])
    with pytest.raises(InputError, match="single string"):
        await sparse.aget_text_embedding_batch("hello")
    with pytest.raises(InputError, match="single string"):
        sparse.get_text_embedding_batch("hello")


def test_sparse_fns_return_what_qdrant_vector_store_takes(
    make_face: Callable[..., Any], splade: EmulatorServer
) -> None:
    """A batch of texts in, (indices per text, values per text) out, as
    llama-index-vector-stores-qdrant's SparseEncoderCallable."""
    sparse = make_face(CachedTEISparseEmbedding)
    want = [expected_sparse_vector(text) for text in TEXTS]
    assert sparse.sparse_doc_fn(TEXTS) == ([v.indices for v in want], [v.values for v in want])
    assert sparse.sparse_query_fn([TEXTS[0]]) == ([want[0].indices], [want[0].values])
    assert sparse_texts_once(splade) == sorted(TEXTS)
    with pytest.raises(InputError, match="single string"):
        sparse.sparse_query_fn("hello")  # type: ignore[arg-type]


def sparse_texts_once(splade: EmulatorServer) -> list[str]:
    texts = sent_texts(splade)
    assert len(texts) == len(set(texts)), texts
    return sorted(texts)


# --- rerank -------------------------------------------------------------------------------------
def test_rerank_orders_by_teis_scores(
    make_face: Callable[..., Any], reranker: EmulatorServer, recorder: _Recorder
) -> None:
    rerank = make_face(CachedTEIRerank, top_n=2, keep_retrieval_score=True)
    assert isinstance(rerank, BaseNodePostprocessor) and rerank.top_n == 2
    nodes = _nodes(TEXTS)
    ranked = rerank.postprocess_nodes(nodes, query_str=QUERY)
    want = expected_ranks(QUERY, TEXTS)[:2]
    assert [(n.node.node_id, n.score) for n in ranked] == [(f"n{r.index}", r.score) for r in want]
    assert [n.node.metadata for n in ranked] == [{"retrieval_score": r.index / 10} for r in want]
    assert reranker.rerank_pairs_computed == len(TEXTS)
    starts = [e for e in recorder.events if isinstance(e, ReRankStartEvent)]
    ends = [e for e in recorder.events if isinstance(e, ReRankEndEvent)]
    assert [(e.query.query_str, e.top_n) for e in starts] == [(QUERY, 2)]
    assert [[n.node.node_id for n in e.nodes] for e in ends] == [[n.node.node_id for n in ranked]]

    assert rerank.postprocess_nodes([], query_str=QUERY) == []
    with pytest.raises(ValueError, match="query bundle"):
        rerank.postprocess_nodes(nodes)


async def test_rerank_async_full_mode_and_raw_scores(
    make_face: Callable[..., Any], reranker: EmulatorServer
) -> None:
    nodes = [
        NodeWithScore(node=TextNode(text=text, metadata={"topic": f"t{i}"}))
        for i, text in enumerate(TEXTS)
    ]
    full = make_face(CachedTEIRerank, mode="full", raw_scores=True)
    ranked = await full.apostprocess_nodes(nodes, query_str=QUERY)
    contents = [f"topic: t{i}\n\n{text}" for i, text in enumerate(TEXTS)]
    want = expected_ranks(QUERY, contents, raw_scores=True)
    assert [n.score for n in ranked] == [r.score for r in want]
    assert [n.node.metadata["topic"] for n in ranked] == [f"t{r.index}" for r in want]
    assert sorted(sent_texts(reranker)) == sorted(contents)


def test_a_drop_in_for_text_embedding_inference(
    reranker: EmulatorServer, qdrant_path: Path
) -> None:
    """TextEmbeddingInference's arguments, and the same nodes and scores as it gives."""
    arguments = {
        "top_n": 2,
        "base_url": reranker.url,
        "text_instruction": None,
        "query_instruction": None,
        "timeout": 30.0,
        "truncate_text": True,
        "auth_token": "token",
        "model_name": "bge-reranker",
    }
    theirs = TextEmbeddingInference(**arguments).postprocess_nodes(_nodes(TEXTS), query_str=QUERY)
    reranker.reset_log()
    with closing(CachedTEIRerank(**arguments, qdrant_path=qdrant_path)) as ours:
        assert ours.settings.rerank_url == reranker.url and ours.settings.truncate is True
        assert ours.api_key is not None and ours.api_key.get_secret_value() == "token"
        mine = ours.postprocess_nodes(_nodes(TEXTS), query_str=QUERY)
    # The same float32 scores: TEI's JSON carries float32s, which its client reads as the
    # shortest decimal while the cache gives each float32 exactly.
    assert [(n.node.node_id, np.float32(n.score)) for n in mine] == [
        (n.node.node_id, np.float32(n.score)) for n in theirs
    ]
    assert reranker.rerank_pairs_computed == len(TEXTS)


# --- end to end ---------------------------------------------------------------------------------
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_hybrid_query_engine_with_the_reranker(
    make_face: Callable[..., Any],
    emulator: EmulatorServer,
    splade: EmulatorServer,
    reranker: EmulatorServer,
    use_async: bool,
) -> None:
    """A hybrid QdrantVectorStore fed by our dense and sparse faces, queried by a query engine
    whose postprocessor is our reranker: the sources are the retrieved nodes in the reranker's
    order and scores; a second index and query over the same texts reach no TEI."""
    dense = make_face(CachedTEIEmbeddings)
    sparse = make_face(CachedTEISparseEmbedding)
    rerank = make_face(CachedTEIRerank, top_n=2)
    documents = [Document(text=text) for text in TEXTS]

    async def ask() -> list[NodeWithScore]:
        client = {"aclient": AsyncQdrantClient(":memory:")} if use_async else {}
        store = QdrantVectorStore(
            collection_name="hybrid",
            client=None if use_async else QdrantClient(":memory:"),
            enable_hybrid=True,
            sparse_doc_fn=sparse.sparse_doc_fn,
            sparse_query_fn=sparse.sparse_query_fn,
            **client,
        )
        pipeline = IngestionPipeline(transformations=[dense], vector_store=store)
        engine = VectorStoreIndex.from_vector_store(store, embed_model=dense).as_query_engine(
            llm=MockLLM(),
            vector_store_query_mode="hybrid",
            similarity_top_k=3,
            sparse_top_k=3,
            node_postprocessors=[rerank],
        )
        if use_async:
            await pipeline.arun(documents=documents)
            return (await engine.aquery(QUERY)).source_nodes
        pipeline.run(documents=documents)
        return engine.query(QUERY).source_nodes

    sources = await ask()
    want = expected_ranks(QUERY, TEXTS)[:2]
    assert [(n.node.get_content(), n.score) for n in sources] == [
        (TEXTS[r.index], r.score) for r in want
    ]
    assert sparse_texts_once(splade) == sorted([*TEXTS, QUERY])
    assert sorted(sent_texts(emulator)) == sorted([*TEXTS, QUERY])
    assert reranker.rerank_pairs_computed == len(TEXTS)

    assert [(n.node.get_content(), n.score) for n in await ask()] == [
        (n.node.get_content(), n.score) for n in sources
    ]
    assert splade.sparse_texts_computed == len(TEXTS) + 1
    assert emulator.embed_texts_computed == len(TEXTS) + 1
    assert reranker.rerank_pairs_computed == len(TEXTS)
