"""What all adapters share: one declaration of the settings, effective values in the repr,
bare strings refused by every batch method, async methods that never block, cache control; the
sparse and rerank adapters read their own TEI URL."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, TextNode
from pydantic import BaseModel, SecretStr, ValidationError

from cached_tei import (
    CachedEmbedder,
    CachedReranker,
    CachedSparseEmbedder,
    CachedTEISettings,
    InputError,
)
from cached_tei.adapter import CachedTEIAdapter, check_fields, setting
from cached_tei.face import Face
from langchain_cached_tei import CachedTEIEmbeddings as LangChainEmbeddings
from langchain_cached_tei import CachedTEIRerank as LangChainRerank
from langchain_cached_tei import CachedTEISparseEmbeddings as LangChainSparse
from llama_index_cached_tei import CachedTEIEmbeddings as LlamaIndexEmbeddings
from llama_index_cached_tei import CachedTEIRerank as LlamaIndexRerank
from llama_index_cached_tei import CachedTEISparseEmbedding as LlamaIndexSparse
from tests.adapters.conftest import (
    ADAPTER_TEI_CONFIG,
    SPLADE_CONFIG,
    expected,
    expected_ranks,
    expected_sparse_vector,
)
from tests.conftest import sent_texts
from tests.tei_emulator import EmulatorServer

ADAPTERS = [
    pytest.param(LangChainEmbeddings, id="langchain"),
    pytest.param(LlamaIndexEmbeddings, id="llama_index"),
]
Adapter = type[LangChainEmbeddings] | type[LlamaIndexEmbeddings]
# Every adapter, the sparse and rerank ones included: each is configured the same way.
FACES = [
    *ADAPTERS,
    pytest.param(LangChainSparse, id="langchain-sparse"),
    pytest.param(LangChainRerank, id="langchain-rerank"),
    pytest.param(LlamaIndexSparse, id="llama_index-sparse"),
    pytest.param(LlamaIndexRerank, id="llama_index-rerank"),
]


def embed_batch(adapter: Any, texts: Any) -> list[list[float]]:
    if isinstance(adapter, LangChainEmbeddings):
        return adapter.embed_documents(texts)
    return adapter.get_text_embedding_batch(texts)


async def aembed_batch(adapter: Any, texts: Any) -> list[list[float]]:
    if isinstance(adapter, LangChainEmbeddings):
        return await adapter.aembed_documents(texts)
    return await adapter.aget_text_embedding_batch(texts)


# --- one declaration of the settings ----------------------------------------------------------
@pytest.mark.parametrize("cls", FACES)
def test_every_setting_is_a_field_of_its_type(cls: Adapter) -> None:
    assert set(CachedTEISettings.model_fields) <= set(cls.model_fields)
    check_fields(cls)
    assert cls.model_fields["truncation_direction"].annotation == (
        CachedTEISettings.model_fields["truncation_direction"].annotation | None
    )
    assert cls.model_fields["api_key"].exclude and cls.model_fields["qdrant_api_key"].exclude


def test_a_drifting_field_fails_at_import() -> None:
    with pytest.raises(TypeError, match=r"Drifted\.truncation_direction.*setting"):

        class Drifted(CachedTEIAdapter):
            truncation_direction: str | None = setting("truncation_direction")  # type: ignore[assignment]

    with pytest.raises(TypeError, match=r"Unexcluded\.api_key"):

        class Unexcluded(CachedTEIAdapter):
            api_key: SecretStr | None = None

    class Partial(BaseModel):
        tei_url: str | None = setting("tei_url")

    with pytest.raises(TypeError, match="Partial lacks the setting 'api_key'"):
        check_fields(Partial)


@pytest.mark.parametrize("cls", FACES)
def test_fields_are_the_effective_settings(
    cls: Adapter, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("CACHED_TEI_URL", "http://from-env:8080")
    monkeypatch.setenv("CACHED_TEI_API_KEY", "env-secret")
    adapter = cls(qdrant_path=tmp_path, normalize=False, truncation_direction="left")
    for name in CachedTEISettings.model_fields:
        value = getattr(adapter.settings, name)
        assert getattr(adapter, name) == (str(value) if name == "qdrant_path" else value), name
    assert adapter.tei_url == "http://from-env:8080" and adapter.truncation_direction == "Left"
    assert adapter.api_key is not None and adapter.api_key.get_secret_value() == "env-secret"
    with pytest.raises(ValidationError, match="frozen"):
        adapter.normalize = True  # would not reach the engine: refused


@pytest.mark.parametrize("cls", FACES)
def test_repr_shows_effective_values_and_hides_secrets(
    cls: Adapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHED_TEI_URL", "http://from-env:8080")
    monkeypatch.setenv("CACHED_TEI_QDRANT_API_KEY", "qdrant-secret")
    text = repr(cls(api_key="tei-secret", dimensions=64))
    for shown in (
        "tei_url='http://from-env:8080'",
        "normalize=True",
        "dimensions=64",
        "truncation_direction='Right'",
        "lru_bytes=67108864",
        "read_cache=True",
        f"qdrant_path='{CachedTEISettings().qdrant_path}'",
    ):
        assert shown in text
    assert "secret" not in text and "api_key=SecretStr('**********')" in text
    assert "=None, normalize=None" not in text


@pytest.mark.parametrize("cls", FACES)
@pytest.mark.parametrize(
    ("given", "closest"), [("tei_urll", "tei_url"), ("normalise", "normalize")]
)
def test_a_misspelled_argument_names_the_closest_setting(
    cls: Adapter, given: str, closest: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        cls(**{given: False})
    with pytest.raises(ValidationError) as engine_refused:
        CachedEmbedder(**{given: False})
    message = f"{given!r} is not a setting; did you mean {closest!r}?"
    assert [e["msg"] for e in refused.value.errors()] == [message]
    assert [e["msg"] for e in engine_refused.value.errors()] == [message]


@pytest.mark.parametrize(
    ("cls", "given", "closest"),
    [
        (LlamaIndexEmbeddings, "base_ur", "base_url"),
        (LlamaIndexRerank, "auth_tokn", "auth_token"),
        (LlamaIndexSparse, "truncate_txt", "truncate_text"),
        (LangChainRerank, "topn", "top_n"),
    ],
)
def test_a_misspelled_framework_name_names_the_closest_one(
    cls: Any, given: str, closest: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        cls(**{given: "x"})
    assert [e["msg"] for e in refused.value.errors()] == [
        f"{given!r} is not a setting; did you mean {closest!r}?"
    ]


@pytest.mark.parametrize("cls", FACES)
def test_keys_are_in_no_serialisation(cls: Adapter, tmp_path: Any) -> None:
    face = cls(api_key="tei-secret", qdrant_api_key="qdrant-secret", qdrant_path=tmp_path)
    texts = [repr(face), str(face), face.model_dump_json(), str(face.model_dump())]
    if hasattr(face, "to_dict"):  # LlamaIndex's BaseComponent
        texts += [str(face.to_dict()), face.to_json()]
    assert not [text for text in texts if "secret" in text]


@pytest.mark.parametrize("cls", FACES)
def test_a_key_from_the_environment_is_not_pickled(
    cls: Adapter, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("CACHED_TEI_API_KEY", "env-secret")
    monkeypatch.setenv("CACHED_TEI_QDRANT_API_KEY", "env-qdrant-secret")
    pickled = pickle.dumps(cls(qdrant_path=tmp_path))
    assert b"env-secret" not in pickled and b"env-qdrant-secret" not in pickled
    monkeypatch.setenv("CACHED_TEI_API_KEY", "where-unpickled")
    copy = pickle.loads(pickled)
    assert copy.settings.api_key == SecretStr("where-unpickled")
    assert copy.client.settings.api_key == SecretStr("where-unpickled")
    assert b"where-unpickled" not in pickle.dumps(copy)


@pytest.mark.parametrize("cls", FACES)
def test_a_key_given_as_an_argument_is_pickled(
    cls: Adapter, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    pickled = pickle.dumps(cls(qdrant_path=tmp_path, api_key="given-secret"))
    assert b"given-secret" in pickled
    monkeypatch.setenv("CACHED_TEI_API_KEY", "env-secret")
    copy = pickle.loads(pickled)
    assert copy.settings.api_key == SecretStr("given-secret")
    assert b"given-secret" in pickle.dumps(copy)


# --- the sparse and rerank adapters: their own TEI ----------------------------------------------
KIND_FACES = [
    pytest.param(LangChainSparse, "sparse_url", id="langchain-sparse"),
    pytest.param(LangChainRerank, "rerank_url", id="langchain-rerank"),
    pytest.param(LlamaIndexSparse, "sparse_url", id="llama_index-sparse"),
    pytest.param(LlamaIndexRerank, "rerank_url", id="llama_index-rerank"),
]


def use(face: Any) -> Any:
    """One call of a sparse or rerank adapter, through its framework's method."""
    if isinstance(face, LangChainSparse):
        return face.embed_documents(["text"])
    if isinstance(face, LlamaIndexSparse):
        return face.get_text_embedding_batch(["text"])
    if isinstance(face, LangChainRerank):
        return face.compress_documents([Document(page_content="text")], "query")
    return face.postprocess_nodes([NodeWithScore(node=TextNode(text="text"))], query_str="query")


@pytest.mark.parametrize(("cls", "field"), KIND_FACES)
def test_no_arguments_take_the_kinds_url_from_the_environment(
    cls: Any, field: str, monkeypatch: pytest.MonkeyPatch, qdrant_path: Any
) -> None:
    variable = f"CACHED_TEI_{field.upper()}"
    monkeypatch.setenv(variable, "http://from-env:8081")
    face = cls()
    assert getattr(face, field) == getattr(face.client.settings, field) == "http://from-env:8081"
    assert f"{field}='http://from-env:8081'" in repr(face)
    monkeypatch.delenv(variable)
    unset = cls(qdrant_path=qdrant_path)
    assert getattr(unset, field) is None
    with pytest.raises(InputError, match=f"{variable} is not set: set it"):
        use(unset)
    unset.close()


# --- a bare string is one text, never a list of characters --------------------------------------
@pytest.mark.parametrize("cls", ADAPTERS)
async def test_a_bare_string_to_a_batch_method_is_an_input_error(
    cls: Adapter, make_adapter: Callable[..., Any], emulator: EmulatorServer
) -> None:
    adapter = make_adapter(cls)
    emulator.reset_log()
    with pytest.raises(InputError, match="single string"):
        embed_batch(adapter, "hello")
    with pytest.raises(InputError, match="single string"):
        await aembed_batch(adapter, "hello")
    assert emulator.requests == []


async def test_llama_index_checks_the_whole_batch_before_embedding(
    make_adapter: Callable[..., Any], emulator: EmulatorServer
) -> None:
    """An empty text in the second chunk of 32 is named by its index in the call, and
    nothing is sent to TEI first."""
    adapter = make_adapter(LlamaIndexEmbeddings)
    texts = [f"text {i}" for i in range(40)] + [""]
    emulator.reset_log()
    with pytest.raises(InputError, match="index 40 is empty"):
        adapter.get_text_embedding_batch(texts)
    with pytest.raises(InputError, match="index 40 is empty"):
        await adapter.aget_text_embedding_batch(texts)
    assert emulator.requests == []


# --- async methods never block the caller's loop ------------------------------------------------
BLOCKING = ("embed", "embed_documents", "embed_query", "info", "flush", "close")


@pytest.mark.parametrize("cls", ADAPTERS)
async def test_async_methods_make_no_blocking_call(
    cls: Adapter,
    make_adapter: Callable[..., Any],
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A blocking engine call (``info()`` included) would hold the caller's event loop while
    the engine's loop works: every one of them fails this test."""
    adapter = make_adapter(cls, query_instruction="query: ")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    with monkeypatch.context() as patch:
        for name in BLOCKING:

            def refuse(*args: Any, _name: str = name, **kwargs: Any) -> Any:
                raise AssertionError(f"blocking CachedEmbedder.{_name}() called from async code")

            patch.setattr(CachedEmbedder, name, refuse)
        running = asyncio.create_task(ticker())
        try:
            if isinstance(adapter, LangChainEmbeddings):
                query = await adapter.aembed_query("q")
                docs = await adapter.aembed_documents(["d", "e"])
            else:
                assert adapter.model_name == "unknown"
                query = await adapter.aget_query_embedding("q")
                docs = [await adapter.aget_text_embedding("d")]
                docs += await adapter.aget_text_embedding_batch(["e"])
                assert adapter.model_name == ADAPTER_TEI_CONFIG.model_id
        finally:
            running.cancel()
    np.testing.assert_array_equal(np.float32(query), expected("query: q"))
    np.testing.assert_array_equal(np.float32(docs), np.stack([expected("d"), expected("e")]))
    assert ticks > 0


@pytest.mark.parametrize(("cls", "field"), KIND_FACES)
async def test_sparse_and_rerank_async_methods_make_no_blocking_call(
    cls: Any, field: str, make_face: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    face = make_face(cls)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    with monkeypatch.context() as patch:
        for plain, name in [
            *((plain, name) for plain in (Face, CachedSparseEmbedder) for name in BLOCKING),
            (CachedReranker, "rerank"),
        ]:
            if hasattr(plain, name):

                def refuse(*args: Any, _name: str = name, **kwargs: Any) -> Any:
                    raise AssertionError(f"blocking {_name}() called from async code")

                patch.setattr(plain, name, refuse)
        running = asyncio.create_task(ticker())
        try:
            if isinstance(face, LangChainSparse):
                got = [await face.aembed_query("q"), *await face.aembed_documents(["d"])]
                got = [(v.indices, v.values) for v in got]
            elif isinstance(face, LlamaIndexSparse):
                got = [await face.aget_query_embedding("q"), await face.aget_text_embedding("d")]
                got = [(list(w), list(w.values())) for w in got]
                assert face.model_name == SPLADE_CONFIG.model_id
            elif isinstance(face, LangChainRerank):
                docs = [Document(page_content=t) for t in ("q", "d")]
                got = [
                    d.metadata["relevance_score"] for d in await face.acompress_documents(docs, "x")
                ]
            else:
                nodes = [NodeWithScore(node=TextNode(text=t)) for t in ("q", "d")]
                got = [n.score for n in await face.apostprocess_nodes(nodes, query_str="x")]
        finally:
            running.cancel()
    if field == "sparse_url":
        assert got == [(v.indices, v.values) for v in map(expected_sparse_vector, ("q", "d"))]
    else:
        assert got == [r.score for r in expected_ranks("x", ["q", "d"])]
    assert ticks > 0


# --- per-instance cache control -----------------------------------------------------------------
@pytest.mark.parametrize("cls", ADAPTERS)
def test_write_cache_false_keeps_nothing(
    cls: Adapter, make_adapter: Callable[..., Any], emulator: EmulatorServer
) -> None:
    no_store = make_adapter(cls, write_cache=False)
    emulator.reset_log()
    first = embed_batch(no_store, ["not kept"])
    again = embed_batch(no_store, ["not kept"])
    assert first == again
    np.testing.assert_array_equal(np.float32(first[0]), expected("not kept"))
    assert sent_texts(emulator) == ["not kept", "not kept"]
    no_store.flush()
    emulator.reset_log()
    embed_batch(make_adapter(cls), ["not kept"])  # nothing was written for another face either
    assert sent_texts(emulator) == ["not kept"]


@pytest.mark.parametrize("cls", ADAPTERS)
def test_read_cache_false_recomputes_a_cached_text(
    cls: Adapter, make_adapter: Callable[..., Any], emulator: EmulatorServer
) -> None:
    cached = make_adapter(cls)
    embed_batch(cached, ["cached"])
    cached.flush()
    no_cache = make_adapter(cls, read_cache=False)
    emulator.reset_log()
    (vector,) = embed_batch(no_cache, ["cached"])
    np.testing.assert_array_equal(np.float32(vector), expected("cached"))
    assert sent_texts(emulator) == ["cached"]
    emulator.reset_log()
    assert embed_batch(cached, ["cached"]) == [vector]  # the refreshed entry serves the others
    assert emulator.requests == []
