"""The LlamaIndex face: exact vectors, batching, events, serialisation, ingestion and retrieval."""

from __future__ import annotations

import json
import multiprocessing
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.embedding import EmbeddingEndEvent, EmbeddingStartEvent
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import MetadataMode
from llama_index.vector_stores.qdrant import QdrantVectorStore
from pydantic import ValidationError
from qdrant_client import AsyncQdrantClient, QdrantClient

import cached_tei
from cached_tei import InputError
from llama_index_cached_tei import CachedTEIEmbeddings
from tests.adapters.conftest import ADAPTER_TEI_CONFIG, expected
from tests.conftest import sent_texts
from tests.tei_emulator import EmulatorServer

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

TOPICS = "rivers mountains deserts forests oceans glaciers volcanoes islands canyons lakes".split()
DOCUMENTS = [
    Document(
        text=" ".join(
            f"Fact {j} about {topic}: {topic} number {i} is remarkable." for j in range(40)
        ),
        id_=f"doc-{topic}",
    )
    for i, topic in enumerate(TOPICS)
]


@pytest.fixture
def make(make_adapter: Callable[..., Any]) -> Callable[..., CachedTEIEmbeddings]:
    return lambda **fields: make_adapter(CachedTEIEmbeddings, **fields)


def _rows(vectors: list[list[float]]) -> np.ndarray:
    return np.asarray(vectors, dtype=np.float32)


def _pipeline(embed_model: CachedTEIEmbeddings, store: QdrantVectorStore) -> IngestionPipeline:
    splitter = SentenceSplitter(chunk_size=128, chunk_overlap=0)
    return IngestionPipeline(
        transformations=[splitter, embed_model], vector_store=store, disable_cache=True
    )


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


# --- configuration and serialisation ----------------------------------------------------------
def test_defaults_and_text_embeddings_inference_names(tmp_path: Any) -> None:
    embed_model = CachedTEIEmbeddings()
    assert embed_model.embed_batch_size == 32 and embed_model.class_name() == "CachedTEIEmbeddings"
    assert embed_model.settings.tei_url == "http://localhost:8080"
    swapped = CachedTEIEmbeddings(
        model_name="BAAI/bge-small-en-v1.5",
        base_url="http://tei:8080",
        text_instruction="passage: ",
        query_instruction="query: ",
        truncate_text=True,
        auth_token="token",
        timeout=30.0,
        embed_batch_size=10,
        qdrant_path=tmp_path,
    )
    s = swapped.settings
    assert (s.tei_url, s.document_instruction, s.query_instruction) == (
        "http://tei:8080",
        "passage: ",
        "query: ",
    )
    assert (s.truncate, s.timeout, s.api_key.get_secret_value()) == (True, 30.0, "token")
    assert swapped.model_name == "BAAI/bge-small-en-v1.5"
    with pytest.raises(ValidationError):
        CachedTEIEmbeddings(tei_ur="http://typo:8080")
    with pytest.raises(ValidationError, match="tei_url"):
        CachedTEIEmbeddings(tei_url="tei:8080")


def test_to_dict_from_dict_without_secrets(tmp_path: Any) -> None:
    embed_model = CachedTEIEmbeddings(
        tei_url="http://tei:8080",
        api_key="tei-secret",
        qdrant_api_key="qdrant-secret",
        qdrant_path=tmp_path,
        query_prompt_name="query",
        dimensions=128,
    )
    data = embed_model.to_dict()
    text = embed_model.to_json()
    assert "secret" not in text and "secret" not in repr(data) and "secret" not in repr(embed_model)
    assert data["class_name"] == "CachedTEIEmbeddings"
    assert json.loads(text) == data
    restored = CachedTEIEmbeddings.from_dict(data)
    assert restored.settings == embed_model.settings.model_copy(
        update={"api_key": None, "qdrant_api_key": None}
    )
    assert CachedTEIEmbeddings.from_json(text).to_dict() == data


def test_pickle_round_trip(
    make: Callable[..., CachedTEIEmbeddings], emulator: EmulatorServer
) -> None:
    embed_model = make(api_key="tei-secret", document_prompt_name="passage")
    vectors = embed_model.get_text_embedding_batch(["one", "two"])
    embed_model.close()  # the embedded folder takes one client at a time
    copy = pickle.loads(pickle.dumps(embed_model))
    try:
        assert copy.settings == embed_model.settings and copy.model_name == embed_model.model_name
        emulator.reset_log()
        assert copy.get_text_embedding_batch(["one", "two"]) == vectors
        assert emulator.requests == []
    finally:
        copy.close()


def test_model_name_comes_from_tei(make: Callable[..., CachedTEIEmbeddings]) -> None:
    embed_model = make()
    assert embed_model.model_name == "unknown"  # no network at construction
    embed_model.get_query_embedding("hello")
    assert embed_model.model_name == ADAPTER_TEI_CONFIG.model_id
    assert make(model_name="mine", qdrant_path=None).model_name == "mine"


# --- vectors ---------------------------------------------------------------------------------
def test_exact_vectors_and_prompts(make: Callable[..., CachedTEIEmbeddings]) -> None:
    embed_model = make(query_prompt_name="query", document_instruction="passage: ")
    np.testing.assert_array_equal(
        np.float32(embed_model.get_query_embedding("q")), expected("q", prompt_name="query")
    )
    np.testing.assert_array_equal(
        np.float32(embed_model.get_text_embedding("d")), expected("passage: d")
    )
    np.testing.assert_array_equal(
        _rows(embed_model.get_text_embedding_batch(["d", "e"])),
        np.stack([expected("passage: d"), expected("passage: e")]),
    )


async def test_async_matches_sync(
    make: Callable[..., CachedTEIEmbeddings], emulator: EmulatorServer
) -> None:
    embed_model = make(query_instruction="query: ", embed_batch_size=16)
    texts = [f"async text {i % 50}" for i in range(90)]
    emulator.reset_log()
    vectors = await embed_model.aget_text_embedding_batch(texts, show_progress=True)
    np.testing.assert_array_equal(_rows(vectors), np.stack([expected(t) for t in texts]))
    assert sorted(sent_texts(emulator)) == sorted(set(texts))
    np.testing.assert_array_equal(
        np.float32(await embed_model.aget_query_embedding("q")), expected("query: q")
    )
    np.testing.assert_array_equal(
        np.float32(await embed_model.aget_text_embedding("d")), expected("d")
    )
    emulator.reset_log()
    assert embed_model.get_text_embedding_batch(texts) == vectors
    assert emulator.requests == []


def test_one_engine_call_per_batch(
    make: Callable[..., CachedTEIEmbeddings], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = cached_tei.CachedEmbedder.embed_documents

    def spy(self: cached_tei.CachedEmbedder, texts: list[str]) -> list[list[float]]:
        calls.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(cached_tei.CachedEmbedder, "embed_documents", spy)
    embed_model = make()
    vectors = embed_model.get_text_embedding_batch([f"batch {i}" for i in range(70)])
    assert len(vectors) == 70 and calls == [32, 32, 6]


def test_show_progress(
    make: Callable[..., CachedTEIEmbeddings], capsys: pytest.CaptureFixture[str]
) -> None:
    vectors = make().get_text_embedding_batch(
        [f"progress {i}" for i in range(40)], show_progress=True
    )
    assert len(vectors) == 40
    assert "Generating embeddings" in capsys.readouterr().err


def test_events_fire_on_cache_hits(
    make: Callable[..., CachedTEIEmbeddings], emulator: EmulatorServer, recorder: _Recorder
) -> None:
    embed_model = make()
    texts = [f"event {i}" for i in range(40)]
    embed_model.get_text_embedding_batch(texts)
    recorder.events.clear()
    emulator.reset_log()
    vectors = embed_model.get_text_embedding_batch(texts)
    embed_model.get_query_embedding("event 0")
    assert emulator.requests == []
    starts = [e for e in recorder.events if isinstance(e, EmbeddingStartEvent)]
    ends = [e for e in recorder.events if isinstance(e, EmbeddingEndEvent)]
    assert len(starts) == len(ends) == 3  # two batches of texts, one query
    assert [c for e in ends[:2] for c in e.chunks] == texts
    assert [v for e in ends[:2] for v in e.embeddings] == vectors
    assert starts[0].model_dict["model_name"] == ADAPTER_TEI_CONFIG.model_id


@pytest.mark.parametrize(
    ("texts", "match"), [(["ok", ""], "index 1 is empty"), (["ok", 7], "index 1 is int")]
)
async def test_bad_input(
    make: Callable[..., CachedTEIEmbeddings], emulator: EmulatorServer, texts: list[Any], match: str
) -> None:
    embed_model = make()
    emulator.reset_log()
    with pytest.raises(InputError, match=match):
        embed_model.get_text_embedding_batch(texts)
    with pytest.raises(InputError, match=match):
        await embed_model.aget_text_embedding_batch(texts)
    for bad in ("", None):
        with pytest.raises(ValueError):
            embed_model.get_query_embedding(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            embed_model.get_text_embedding(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await embed_model.aget_query_embedding(bad)  # type: ignore[arg-type]
    assert emulator.requests == []


# --- ingestion and retrieval ------------------------------------------------------------------
def test_ingestion_pipeline_cache_and_retrieval(
    make: Callable[..., CachedTEIEmbeddings], emulator: EmulatorServer
) -> None:
    emulator.reset_log()
    first_model = make()
    store = QdrantVectorStore(collection_name="docs", client=QdrantClient(location=":memory:"))
    nodes = _pipeline(first_model, store).run(documents=DOCUMENTS)
    assert len(nodes) > 32
    assert len(sent_texts(emulator)) == len(
        {n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes}
    )
    for node in nodes:
        np.testing.assert_array_equal(
            np.float32(node.embedding), expected(node.get_content(metadata_mode=MetadataMode.EMBED))
        )
    first_model.close()

    # A second pipeline over the same documents, another embedder on the same cache folder.
    emulator.reset_log()
    second_model = make()
    second_store = QdrantVectorStore(
        collection_name="docs", client=QdrantClient(location=":memory:")
    )
    again = _pipeline(second_model, second_store).run(documents=DOCUMENTS)
    assert emulator.requests == []
    assert [n.embedding for n in again] == [n.embedding for n in nodes]

    retriever = VectorStoreIndex.from_vector_store(
        second_store, embed_model=second_model
    ).as_retriever(similarity_top_k=1)
    for target in (again[0], again[len(again) // 2], again[-1]):
        (hit,) = retriever.retrieve(target.get_content(metadata_mode=MetadataMode.EMBED))
        assert hit.node.node_id == target.node_id


async def test_async_ingestion_pipeline_cache_and_retrieval(
    make: Callable[..., CachedTEIEmbeddings], emulator: EmulatorServer
) -> None:
    emulator.reset_log()
    first_model = make()
    store = QdrantVectorStore(
        collection_name="docs", aclient=AsyncQdrantClient(location=":memory:")
    )
    nodes = await _pipeline(first_model, store).arun(documents=DOCUMENTS)
    assert len(nodes) > 32 and emulator.requests
    await first_model.aclose()

    emulator.reset_log()
    second_model = make()
    second_store = QdrantVectorStore(
        collection_name="docs", aclient=AsyncQdrantClient(location=":memory:")
    )
    again = await _pipeline(second_model, second_store).arun(documents=DOCUMENTS)
    assert emulator.requests == []
    assert [n.embedding for n in again] == [n.embedding for n in nodes]

    index = VectorStoreIndex.from_vector_store(second_store, embed_model=second_model)
    retriever = index.as_retriever(similarity_top_k=1)
    target = again[5]  # node ids are new on each run
    (hit,) = await retriever.aretrieve(target.get_content(metadata_mode=MetadataMode.EMBED))
    assert hit.node.node_id == target.node_id


def test_is_a_base_embedding() -> None:
    assert issubclass(CachedTEIEmbeddings, BaseEmbedding)
    for name in (
        "_get_text_embeddings",
        "_aget_text_embeddings",
        "_aget_query_embedding",
        "_aget_text_embedding",
    ):
        assert getattr(CachedTEIEmbeddings, name) is not getattr(BaseEmbedding, name)


def _embed_in_worker(embed_model: CachedTEIEmbeddings, nodes: list[Any]) -> list[Any]:
    """What IngestionPipeline's workers do: run the unpickled transformation on a batch."""
    try:
        return embed_model(nodes)
    finally:
        embed_model.close()


def test_pickled_into_a_spawned_worker(
    make: Callable[..., CachedTEIEmbeddings], emulator: EmulatorServer
) -> None:
    """``IngestionPipeline.run(num_workers=...)`` pickles transformations into spawned processes.

    One worker only: several processes cannot share one embedded cache folder (use a Qdrant
    server, ``qdrant_url``, for ``num_workers > 1``).
    """
    nodes = SentenceSplitter(chunk_size=128, chunk_overlap=0).get_nodes_from_documents(
        DOCUMENTS[:3]
    )
    contents = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
    embed_model = make()
    embed_model.get_text_embedding(contents[0])
    embed_model.close()  # the worker opens the embedded folder itself
    emulator.reset_log()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        embedded = pool.apply(_embed_in_worker, (embed_model, nodes))
    assert sent_texts(emulator) == sorted(set(contents[1:]), key=contents.index)
    for node, text in zip(embedded, contents, strict=True):
        np.testing.assert_array_equal(np.float32(node.embedding), expected(text))
