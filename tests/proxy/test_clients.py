"""Real TEI and OpenAI clients against the proxy on loopback; second calls come from the cache."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tei_emulator import expected_vector

from .support import FAST, texts_sent

KEY = "client-key"


@pytest.fixture
def keyed_proxy(emu, make_proxy):
    """Clients send their API key as a Bearer token: the proxy checks it."""
    return make_proxy(emu.url, proxy={"api_keys": KEY})


def expected(texts: list[str], **options) -> np.ndarray:
    return np.stack([expected_vector(FAST, t, **options) for t in texts])


def test_huggingface_hub_inference_client(keyed_proxy, emu):
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=keyed_proxy.url, api_key=KEY)
    texts = ["hf one", "hf two"]
    first = client.feature_extraction(texts)
    assert first.dtype == np.float32 and np.array_equal(first, expected(texts))
    single = client.feature_extraction("hf three", normalize=False, truncation_direction="left")
    assert np.array_equal(single, expected(["hf three"], normalize=False))
    assert emu.requests[-1].truncation_direction == "Left"
    sent = len(texts_sent(emu))

    assert np.array_equal(client.feature_extraction(texts), first)
    assert len(texts_sent(emu)) == sent  # served from the cache


def test_llama_index_text_embeddings_inference(keyed_proxy, emu):
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    model = TextEmbeddingsInference(
        base_url=keyed_proxy.url,
        model_name=FAST.model_id,
        auth_token=KEY,
        embed_batch_size=50,
    )
    texts = [f"llama {i}" for i in range(2 * FAST.max_client_batch_size + 3)]  # split by the proxy
    vectors = np.asarray(model.get_text_embedding_batch(texts), dtype=np.float32)
    assert np.array_equal(vectors, expected(texts, truncate=True))
    query = np.asarray(model.get_query_embedding("llama query"), dtype=np.float32)
    assert np.array_equal(query, expected_vector(FAST, "llama query", truncate=True))
    sent = len(texts_sent(emu))
    assert sent == len(texts) + 1

    again = np.asarray(model.get_text_embedding_batch(texts), dtype=np.float32)
    assert np.array_equal(again, vectors)
    assert len(texts_sent(emu)) == sent


async def test_llama_index_async(keyed_proxy, emu):
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    model = TextEmbeddingsInference(base_url=keyed_proxy.url, model_name="m", auth_token=KEY)
    vectors = await model.aget_text_embedding_batch(["async llama a", "async llama b"])
    assert np.array_equal(
        np.asarray(vectors, np.float32), expected(["async llama a", "async llama b"], truncate=True)
    )


def test_openai_client_float_and_base64(keyed_proxy, emu):
    import openai

    client = openai.OpenAI(base_url=keyed_proxy.url + "/v1", api_key=KEY, max_retries=0)
    texts = ["openai one", "openai two"]
    default = client.embeddings.create(input=texts, model="any")  # the client asks for base64
    assert emu.requests[-1].texts == texts
    as_float = client.embeddings.create(input=texts, model="any", encoding_format="float")
    for response in (default, as_float):
        got = np.asarray([d.embedding for d in response.data], dtype=np.float32)
        assert np.array_equal(got, expected(texts))
        assert response.usage.prompt_tokens == 4
    assert len(texts_sent(emu)) == 2

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=keyed_proxy.url + "/v1", api_key="wrong", max_retries=0
        ).embeddings.create(input=texts, model="any")
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(input=[], model="any")
    assert refused.value.status_code == 400


def test_langchain_openai_embeddings(keyed_proxy, emu):
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        base_url=keyed_proxy.url + "/v1",
        api_key=KEY,
        model="any",
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    texts = ["langchain one", "langchain two", "langchain three"]
    documents = np.asarray(embeddings.embed_documents(texts), dtype=np.float32)
    assert np.array_equal(documents, expected(texts))
    query = np.asarray(embeddings.embed_query("langchain one"), dtype=np.float32)
    assert np.array_equal(query, documents[0])
    assert texts_sent(emu) == texts  # the query was a hit

    again = np.asarray(embeddings.embed_documents(texts), dtype=np.float32)
    assert np.array_equal(again, documents)
    assert texts_sent(emu) == texts
