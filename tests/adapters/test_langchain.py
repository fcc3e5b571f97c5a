"""The LangChain face: exact vectors, prompts, the cache, and RAG building blocks."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore
from pydantic import ValidationError

from cached_tei import InputError
from langchain_cached_tei import CachedTEIEmbeddings
from tests.adapters.conftest import expected, run_python
from tests.conftest import sent_texts
from tests.tei_emulator import EmulatorServer

CORPUS = [
    f"Passage {i}: the {w} of cached embeddings."
    for i, w in enumerate(
        "speed cost size shape colour weight depth height width range scope price value "
        "order rhythm grain tone pitch heat light sound voice taste smell touch form".split()
    )
]


@pytest.fixture
def make(make_adapter: Callable[..., Any]) -> Callable[..., CachedTEIEmbeddings]:
    return lambda **fields: make_adapter(CachedTEIEmbeddings, **fields)


def _rows(vectors: list[list[float]]) -> np.ndarray:
    return np.asarray(vectors, dtype=np.float32)


# --- configuration ---------------------------------------------------------------------------
def test_fields_reach_the_engine_settings(tmp_path: Path) -> None:
    embeddings = CachedTEIEmbeddings(
        tei_url="http://tei:80/",
        api_key="k1",
        timeout=3,
        batch_size=8,
        normalize=False,
        truncate=True,
        truncation_direction="left",
        dimensions=128,
        query_instruction="query: ",
        qdrant_path=tmp_path,
        qdrant_api_key="k2",
        ttl=60,
        lru_bytes=0,
        write_through=True,
    )
    s = embeddings.settings
    assert (s.tei_url, s.timeout, s.batch_size, s.normalize, s.truncate) == (
        "http://tei:80",
        3,
        8,
        False,
        True,
    )
    assert (s.truncation_direction, s.dimensions, s.query_instruction) == ("Left", 128, "query: ")
    assert (s.qdrant_path, s.ttl, s.lru_bytes, s.write_through) == (tmp_path, 60, 0, True)
    assert s.api_key.get_secret_value() == "k1" and s.qdrant_api_key.get_secret_value() == "k2"
    assert "k1" not in repr(embeddings) and "k2" not in repr(embeddings)


def test_unset_fields_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHED_TEI_URL", "http://from-env:8080")
    monkeypatch.setenv("CACHED_TEI_DIMENSIONS", "64")
    monkeypatch.setenv("CACHED_TEI_DOCUMENT_INSTRUCTION", "passage: ")
    s = CachedTEIEmbeddings(dimensions=32).settings
    assert (s.tei_url, s.dimensions, s.document_instruction) == (
        "http://from-env:8080",
        32,
        "passage: ",
    )


def test_zero_arguments_and_bad_options() -> None:
    assert CachedTEIEmbeddings().settings.tei_url == "http://localhost:8080"
    with pytest.raises(ValidationError):
        CachedTEIEmbeddings(model="x")  # extra="forbid"
    with pytest.raises(ValidationError, match="tei_url"):
        CachedTEIEmbeddings(tei_url="localhost:8080")
    with pytest.raises(ValidationError):
        CachedTEIEmbeddings(max_concurrency=0)


def test_async_methods_are_native() -> None:
    assert CachedTEIEmbeddings.aembed_documents is not Embeddings.aembed_documents
    assert CachedTEIEmbeddings.aembed_query is not Embeddings.aembed_query


# --- vectors ---------------------------------------------------------------------------------
def test_exact_vectors(make: Callable[..., CachedTEIEmbeddings]) -> None:
    embeddings = make()
    docs = embeddings.embed_documents(["alpha", "beta"])
    assert all(isinstance(x, float) for x in docs[0])
    np.testing.assert_array_equal(_rows(docs), np.stack([expected("alpha"), expected("beta")]))
    np.testing.assert_array_equal(_rows([embeddings.embed_query("alpha")])[0], expected("alpha"))


async def test_exact_vectors_async(make: Callable[..., CachedTEIEmbeddings]) -> None:
    embeddings = make(dimensions=64, normalize=False)
    docs = await embeddings.aembed_documents(["alpha", "beta"])
    query = await embeddings.aembed_query("gamma")
    opts = {"dimensions": 64, "normalize": False}
    np.testing.assert_array_equal(
        _rows(docs), np.stack([expected("alpha", **opts), expected("beta", **opts)])
    )
    np.testing.assert_array_equal(np.float32(query), expected("gamma", **opts))


def test_prompt_names(make: Callable[..., CachedTEIEmbeddings], emulator: EmulatorServer) -> None:
    embeddings = make(query_prompt_name="query", document_prompt_name="passage")
    emulator.reset_log()
    query = embeddings.embed_query("what is TEI?")
    (doc,) = embeddings.embed_documents(["what is TEI?"])
    np.testing.assert_array_equal(np.float32(query), expected("what is TEI?", prompt_name="query"))
    np.testing.assert_array_equal(np.float32(doc), expected("what is TEI?", prompt_name="passage"))
    assert query != doc
    assert [r.prompt_name for r in emulator.requests] == ["query", "passage"]
    # Both kinds are cached, each under its own prompt.
    emulator.reset_log()
    assert embeddings.embed_query("what is TEI?") == query
    assert embeddings.embed_documents(["what is TEI?"]) == [doc]
    assert emulator.requests == []


def test_instructions(make: Callable[..., CachedTEIEmbeddings], emulator: EmulatorServer) -> None:
    embeddings = make(query_instruction="query: ", document_instruction="passage: ")
    emulator.reset_log()
    query = embeddings.embed_query("tea")
    (doc,) = embeddings.embed_documents(["tea"])
    np.testing.assert_array_equal(np.float32(query), expected("query: tea"))
    np.testing.assert_array_equal(np.float32(doc), expected("passage: tea"))
    assert sent_texts(emulator) == ["query: tea", "passage: tea"]


def test_query_equals_document_only_when_tei_sees_the_same_text(
    make: Callable[..., CachedTEIEmbeddings], emulator: EmulatorServer
) -> None:
    embeddings = make(query_instruction="query: ")
    emulator.reset_log()
    query = embeddings.embed_query("tea")
    (same_text,) = embeddings.embed_documents(["query: tea"])  # TEI sees "query: tea" again
    (plain,) = embeddings.embed_documents(["tea"])
    assert query == same_text and query != plain
    assert sent_texts(emulator) == ["query: tea", "tea"]  # the shared entry was a hit


def test_more_than_32_texts_with_duplicates(
    make: Callable[..., CachedTEIEmbeddings], emulator: EmulatorServer
) -> None:
    texts = [f"text {i % 45}" for i in range(120)]
    embeddings = make()
    emulator.reset_log()
    vectors = embeddings.embed_documents(texts)
    assert len(vectors) == len(texts)
    np.testing.assert_array_equal(_rows(vectors), np.stack([expected(t) for t in texts]))
    assert sorted(sent_texts(emulator)) == sorted(set(texts))
    assert all(len(r.texts) <= 32 for r in emulator.requests)
    emulator.reset_log()
    assert embeddings.embed_documents(texts[::-1]) == vectors[::-1]
    assert emulator.requests == []


@pytest.mark.parametrize(
    ("texts", "match"),
    [
        (["ok", ""], "index 1 is empty"),
        (["ok", 3], "index 1 is int"),
        ("one string", "single string"),
    ],
)
def test_bad_documents(
    make: Callable[..., CachedTEIEmbeddings], emulator: EmulatorServer, texts: Any, match: str
) -> None:
    embeddings = make()
    emulator.reset_log()
    with pytest.raises(InputError, match=match):
        embeddings.embed_documents(texts)
    assert emulator.requests == []


async def test_bad_queries(
    make: Callable[..., CachedTEIEmbeddings], emulator: EmulatorServer
) -> None:
    embeddings = make()
    emulator.reset_log()
    for bad in ("", None, ["a"]):
        with pytest.raises(ValueError):
            embeddings.embed_query(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await embeddings.aembed_query(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index 2"):
        await embeddings.aembed_documents(["a", "b", ""])
    assert emulator.requests == []
    assert embeddings.embed_documents([]) == []


def test_pickle_round_trip(
    make: Callable[..., CachedTEIEmbeddings], emulator: EmulatorServer
) -> None:
    embeddings = make(api_key=None, query_instruction="query: ")
    query = embeddings.embed_query("pickled")
    embeddings.close()  # the embedded folder takes one client at a time
    copy = pickle.loads(pickle.dumps(embeddings))
    try:
        assert copy.settings == embeddings.settings
        emulator.reset_log()
        assert copy.embed_query("pickled") == query
        assert emulator.requests == []
    finally:
        copy.close()


# --- vector stores ---------------------------------------------------------------------------
def test_in_memory_vector_store_retriever(make: Callable[..., CachedTEIEmbeddings]) -> None:
    docs = [Document(page_content=text, metadata={"i": i}) for i, text in enumerate(CORPUS)]
    store = InMemoryVectorStore.from_documents(docs, make())
    retriever = store.as_retriever(search_kwargs={"k": 1})
    for i in (0, 7, len(CORPUS) - 1):
        (found,) = retriever.invoke(CORPUS[i])
        assert found.metadata["i"] == i


def test_langchain_qdrant_alongside_the_embedded_cache(
    make: Callable[..., CachedTEIEmbeddings], tmp_path: Path
) -> None:
    from langchain_qdrant import QdrantVectorStore

    embeddings = make()
    docs = [Document(page_content=text, metadata={"i": i}) for i, text in enumerate(CORPUS)]
    in_memory = QdrantVectorStore.from_documents(
        docs, embeddings, location=":memory:", collection_name="a"
    )
    on_disk = QdrantVectorStore.from_documents(
        docs, embeddings, path=str(tmp_path / "langchain-qdrant"), collection_name="b"
    )
    for store in (in_memory, on_disk):
        (found,) = store.similarity_search(CORPUS[3], k=1)
        assert found.metadata["i"] == 3
    on_disk.client.close()


def test_reindexing_from_a_fresh_process_makes_no_tei_calls(
    make: Callable[..., CachedTEIEmbeddings],
    emulator: EmulatorServer,
    qdrant_path: Path,
    tmp_path: Path,
) -> None:
    embeddings = make(document_instruction="passage: ")
    docs = [Document(page_content=text) for text in CORPUS]
    store = InMemoryVectorStore.from_documents(docs, embeddings)
    first = [
        store.store[key]["vector"]
        for key in sorted(store.store, key=lambda k: store.store[k]["text"])
    ]
    embeddings.close()

    emulator.reset_log()
    out = tmp_path / "vectors.json"
    run_python(
        f"""
import json
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_cached_tei import CachedTEIEmbeddings
corpus = {CORPUS!r}
embeddings = CachedTEIEmbeddings(tei_url={emulator.url!r}, qdrant_path={str(qdrant_path)!r},
                                 document_instruction="passage: ")
store = InMemoryVectorStore.from_documents([Document(page_content=t) for t in corpus], embeddings)
rows = [store.store[k]["vector"] for k in sorted(store.store, key=lambda k: store.store[k]["text"])]
json.dump({{"vectors": rows, "hits": embeddings.stats.hits, "misses": embeddings.stats.misses}},
          open({str(out)!r}, "w"))
embeddings.close()
"""
    )
    result = json.loads(out.read_text())
    assert emulator.requests == []
    assert (result["hits"], result["misses"]) == (len(CORPUS), 0)
    assert result["vectors"] == first
