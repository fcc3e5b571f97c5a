"""Talking to TEI: batch limits, retries, deadlines, and errors that say what to do."""

from __future__ import annotations

import json
import logging
import socket
import time

import numpy as np
import pytest

from cached_tei import CachedEmbedder, TEIError
from tests.conftest import sent_texts
from tests.tei_emulator import EmulatorConfig, EmulatorServer, Fault, expected_vector


def test_batches_never_exceed_teis_client_batch_size(make_embedder, tei, tei_config) -> None:
    texts = [f"text {i}" for i in range(100)]
    vectors = make_embedder().embed_documents(texts)
    # Batches go out concurrently: TEI may receive them in any order.
    assert sorted(len(r.texts) for r in tei.requests) == [4, 32, 32, 32]
    assert all(r.status == 200 for r in tei.requests)
    assert np.array_equal(
        np.asarray(vectors, dtype=np.float32),
        np.stack([expected_vector(tei_config, t) for t in texts]),
    )


def test_a_smaller_batch_size_setting_is_honoured(make_embedder, tei) -> None:
    make_embedder(batch_size=8).embed_documents([f"t{i}" for i in range(20)])
    assert sorted(len(r.texts) for r in tei.requests) == [4, 8, 8]


def test_bodies_over_the_payload_limit_are_split() -> None:
    config = EmulatorConfig(payload_limit=2_000_000, max_client_batch_size=512, step_ms=1)
    texts = [f"{i} " + "word " * 30_000 for i in range(20)]  # ~150 KB each, 3 MB in all
    with (
        EmulatorServer(config) as tei,
        CachedEmbedder(
            tei_url=tei.url, qdrant_url="http://127.0.0.1:9", qdrant_timeout=0.2
        ) as embedder,
    ):
        vectors = embedder.embed_documents(texts)
    assert len(vectors) == 20
    assert len(tei.requests) >= 2
    for request in tei.requests:
        body = json.dumps({"inputs": request.texts}, ensure_ascii=False).encode()
        assert len(body) < 2_000_000
        assert request.status == 200
    assert sorted(sent_texts(tei)) == sorted(texts)


def test_an_over_long_input_says_to_enable_truncation(qdrant_path) -> None:
    config = EmulatorConfig(auto_truncate=False, max_input_length=8, step_ms=1)
    long_text = "one two three four five six seven eight nine ten"
    with EmulatorServer(config) as tei:
        with CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path) as embedder:
            with pytest.raises(TEIError) as caught:
                embedder.embed_documents(["short", long_text])
        error = caught.value
        assert error.status == 422 and error.error_type == "Validation"
        assert error.message == (
            "Input validation error: `inputs` must have less than 8 tokens. Given: 10"
        )
        assert "truncate=True" in str(error) and "CACHED_TEI_TRUNCATE" in str(error)
        assert len(tei.requests) == 1  # validation errors are not retried
        with CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path, truncate=True) as embedder:
            vector = embedder.embed([long_text]).vectors[0]
    assert np.array_equal(vector, expected_vector(config, long_text, truncate=True))


def test_a_429_storm_is_ridden_out(make_embedder, tei, tei_config, caplog) -> None:
    tei.inject(Fault(kind="status", status=429, count=5))
    embedder = make_embedder()
    with caplog.at_level(logging.DEBUG, logger="cached_tei"):
        vectors = embedder.embed_documents(["survives the storm"])
    assert np.array_equal(
        np.asarray(vectors[0], dtype=np.float32), expected_vector(tei_config, "survives the storm")
    )
    assert embedder.stats.retries == 5
    assert [r.status for r in tei.requests] == [429] * 5 + [200]
    # Retries are counted, and logged at debug level only: a CLI run stays quiet.
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert [r.levelno for r in retries] == [logging.DEBUG] * 5


@pytest.mark.parametrize("fault", [Fault(kind="status", status=503), Fault(kind="drop")])
def test_restarts_and_dropped_connections_are_retried(make_embedder, tei, fault) -> None:
    tei.inject(fault)
    embedder = make_embedder()
    assert len(embedder.embed_documents(["retry me"])) == 1
    assert embedder.stats.retries == 1


def test_a_backend_error_is_not_retried_and_no_partial_list_is_returned(make_embedder, tei) -> None:
    embedder = make_embedder(max_concurrency=1)
    texts = [f"t{i}" for i in range(64)]
    tei.inject(Fault(kind="status", status=424))
    with pytest.raises(TEIError) as caught:
        embedder.embed_documents(texts)
    assert caught.value.error_type == "Backend" and caught.value.status == 424
    assert "GPU memory" in str(caught.value)
    # The other batch was computed and cached: nothing is lost, and a retry sends only the rest.
    tei.reset_log()
    assert len(embedder.embed_documents(texts)) == 64
    assert len(sent_texts(tei)) == 32


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_tei_down_ends_in_a_clear_error_within_the_deadline(qdrant_path, caplog) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with CachedEmbedder(tei_url=url, qdrant_path=qdrant_path, retry_deadline=1.5) as embedder:
        started = time.monotonic()
        with pytest.raises(TEIError) as caught, caplog.at_level(logging.DEBUG, "cached_tei"):
            embedder.embed_documents(["anyone there?"])
        elapsed = time.monotonic() - started
        retries = embedder.stats.retries
    error = caught.value
    assert retries >= 1 and f"Gave up after {retries + 1} attempts" in str(error)
    assert [
        r for r in caplog.records if r.name == "cached_tei.tei" and r.levelno > logging.DEBUG
    ] == []
    assert error.status is None and error.error_type == "Unavailable"
    assert url in str(error) and "CACHED_TEI_URL" in str(error) and "Gave up after" in str(error)
    assert elapsed < 6


def test_an_overload_that_never_clears_ends_in_teis_error(make_embedder, tei) -> None:
    tei.inject(Fault(kind="status", status=429, count=1000))
    embedder = make_embedder(retry_deadline=1.0)
    with pytest.raises(TEIError) as caught:
        embedder.embed_documents(["never"])
    assert caught.value.status == 429 and caught.value.error_type == "Overloaded"
    assert caught.value.message == "Model is overloaded"
    assert 1 < len(tei.requests) < 1000


def test_the_api_key_is_sent_and_never_shown(qdrant_path) -> None:
    config = EmulatorConfig(api_key="s3cret-key", step_ms=1)
    with EmulatorServer(config) as tei:
        with CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path, api_key="s3cret-key") as e:
            assert len(e.embed_documents(["authorised"])) == 1
            assert "s3cret-key" not in repr(e) and "s3cret-key" not in repr(e.settings)
        with CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path, api_key="wrong") as e:
            with pytest.raises(TEIError) as caught:
                e.embed_documents(["refused"])
    assert caught.value.status == 401 and "CACHED_TEI_API_KEY" in str(caught.value)
    assert "wrong" not in str(caught.value)
