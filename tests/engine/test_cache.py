"""The cache: exact vectors, order, partial hits, duplicates, namespaces, restarts, TTL."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from cached_tei import CachedEmbedder, EmbedOptions, StoreConfigurationError
from tests.conftest import sent_texts
from tests.tei_emulator import EmulatorConfig, EmulatorServer, expected_vector


def as_f32(vectors: list[list[float]]) -> np.ndarray:
    return np.asarray(vectors, dtype=np.float32)


def test_vectors_are_exactly_teis_in_input_order(make_embedder, tei_config) -> None:
    texts = [f"document {i}" for i in range(50)]
    vectors = make_embedder().embed_documents(texts)
    expected = np.stack([expected_vector(tei_config, t) for t in texts])
    assert np.array_equal(as_f32(vectors), expected)


def test_a_hit_is_bit_identical_to_the_miss(make_embedder, tei: EmulatorServer) -> None:
    texts = ["alpha beta", "gamma delta"]
    first = make_embedder()
    miss = first.embed_documents(texts)
    first.close()
    second = make_embedder(lru_bytes=0)
    hit = second.embed_documents(texts)
    assert second.stats.hits == 2 and second.stats.misses == 0
    assert as_f32(hit).tobytes() == as_f32(miss).tobytes()
    assert hit == miss


def test_partial_hits_send_only_the_misses(make_embedder, tei: EmulatorServer, tei_config) -> None:
    embedder = make_embedder()
    embedder.embed_documents(["one", "two"])
    tei.reset_log()
    texts = ["zero", "one", "two", "three"]
    result = embedder.embed(texts)
    assert sent_texts(tei) == ["zero", "three"]
    assert (result.hits, result.misses) == (2, 2)
    expected = np.stack([expected_vector(tei_config, t) for t in texts])
    assert np.array_equal(result.vectors, expected)


def test_duplicates_are_sent_once_and_returned_everywhere(make_embedder, tei, tei_config) -> None:
    texts = ["same", "other", "same", "same", "other"]
    vectors = as_f32(make_embedder().embed_documents(texts))
    assert sorted(sent_texts(tei)) == ["other", "same"]
    for text, vector in zip(texts, vectors, strict=True):
        assert np.array_equal(vector, expected_vector(tei_config, text))


def test_a_new_process_with_the_same_store_makes_no_tei_call(
    make_embedder, tei: EmulatorServer, qdrant_path: Path
) -> None:
    texts = [f"persisted text {i}" for i in range(40)]
    embedder = make_embedder()
    original = embedder.embed_documents(texts)
    embedder.close()
    tei.reset_log()
    script = textwrap.dedent(
        f"""
        import json, sys
        from cached_tei import CachedEmbedder
        with CachedEmbedder(tei_url={tei.url!r}, qdrant_path={str(qdrant_path)!r}) as e:
            vectors = e.embed_documents({texts!r})
            print(json.dumps({{"vectors": vectors, "misses": e.stats.misses}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    reply = json.loads(out.stdout)
    assert tei.requests == []
    assert reply["misses"] == 0
    assert reply["vectors"] == original


def test_another_model_never_gets_the_old_vectors(qdrant_path: Path) -> None:
    texts = ["shared text", "another"]
    old = EmulatorConfig(model_id="org/model-a", step_ms=1)
    new = EmulatorConfig(model_id="org/model-b", step_ms=1)
    with EmulatorServer(old) as tei_a:
        with CachedEmbedder(tei_url=tei_a.url, qdrant_path=qdrant_path) as embedder:
            embedder.embed_documents(texts)
    with EmulatorServer(new) as tei_b:
        with CachedEmbedder(tei_url=tei_b.url, qdrant_path=qdrant_path) as embedder:
            vectors = as_f32(embedder.embed_documents(texts))
            assert embedder.stats.misses == 2
        assert sent_texts(tei_b) == texts
    assert np.array_equal(vectors[0], expected_vector(new, texts[0]))


def test_a_new_revision_is_a_new_namespace(qdrant_path: Path) -> None:
    with EmulatorServer(EmulatorConfig(model_sha="rev-1", step_ms=1)) as tei:
        with CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path) as embedder:
            embedder.embed_documents(["text"])
    with EmulatorServer(EmulatorConfig(model_sha="rev-2", step_ms=1)) as tei:
        with CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path) as embedder:
            embedder.embed_documents(["text"])
        assert sent_texts(tei) == ["text"]


@pytest.mark.parametrize(
    "options",
    [
        {"normalize": False},
        {"dimensions": 64},
        {"truncate": False},
        {"truncation_direction": "Left"},
        {"document_prompt_name": "passage"},
    ],
)
def test_each_option_that_changes_the_vector_has_its_own_entries(
    qdrant_path: Path, options: dict
) -> None:
    config = EmulatorConfig(prompts={"passage": "passage: "}, step_ms=1)
    with EmulatorServer(config) as tei:
        with CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path) as embedder:
            embedder.embed_documents(["the text"])
        tei.reset_log()
        with CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path, **options) as embedder:
            vector = np.asarray(embedder.embed_documents(["the text"])[0], dtype=np.float32)
        assert sent_texts(tei) == ["the text"]
        request = tei.requests[0]
        expected = expected_vector(
            config,
            "the text",
            normalize=options.get("normalize", True),
            dimensions=options.get("dimensions"),
            prompt_name=options.get("document_prompt_name"),
        )
        assert np.array_equal(vector, expected)
        if "truncation_direction" in options:
            assert request.truncation_direction == "Left"


def test_queries_and_documents_share_entries_only_for_the_same_text(
    make_embedder, tei: EmulatorServer, tei_config
) -> None:
    plain = make_embedder()
    document = plain.embed_documents(["what is qdrant"])[0]
    assert plain.embed_query("what is qdrant") == document
    assert sent_texts(tei) == ["what is qdrant"]
    plain.close()
    instructed = make_embedder(query_instruction="query: ", document_instruction="passage: ")
    query = instructed.embed_query("what is qdrant")
    assert query != document
    assert np.array_equal(
        np.asarray(query, dtype=np.float32), expected_vector(tei_config, "query: what is qdrant")
    )
    assert sent_texts(tei)[-1] == "query: what is qdrant"


def test_expired_entries_are_misses_and_prune_removes_them(
    make_embedder, tei: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedder = make_embedder(ttl=60, lru_bytes=0)
    embedder.embed_documents(["old", "older"])
    embedder.flush()
    tei.reset_log()
    assert embedder.embed(["old"]).hits == 1
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)
    assert embedder.embed(["old"]).misses == 1
    assert sent_texts(tei) == ["old"]
    embedder.flush()
    loop, engine = embedder._engine()
    assert loop.run(engine.prune()) == 1  # "older" expired; "old" was just rewritten


def _indexed_fields(qdrant_path: Path) -> set[str]:
    import qdrant_edge

    (shard,) = qdrant_path.glob("cached_tei_*/shard")
    opened = qdrant_edge.EdgeShard.load(str(shard))
    try:
        return set(opened.info().payload_schema)
    finally:
        opened.close()


def test_creation_times_are_indexed_only_once_pruning_needs_them(
    make_embedder, tei: EmulatorServer, qdrant_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every open rebuilds the index in memory: a store without a TTL does without it until
    its first prune, which then removes what it must all the same."""
    embedder = make_embedder(lru_bytes=0)
    embedder.embed_documents(["kept", "expired"])
    embedder.close()
    assert _indexed_fields(qdrant_path) == set()
    later = time.time() + 120
    with_ttl = make_embedder(ttl=60, lru_bytes=0)
    monkeypatch.setattr(time, "time", lambda: later)
    with_ttl.embed_documents(["kept"])  # expired, so computed and written again
    with_ttl.flush()
    loop, engine = with_ttl._engine()
    assert loop.run(engine.prune()) == 1
    with_ttl.close()
    assert _indexed_fields(qdrant_path) == {"created"}


def test_a_collection_made_with_a_ttl_is_indexed_at_once(make_embedder, qdrant_path) -> None:
    embedder = make_embedder(ttl=60, lru_bytes=0)
    embedder.embed_documents(["x"])
    embedder.close()
    assert _indexed_fields(qdrant_path) == {"created"}


def test_a_collection_of_another_namespace_is_refused(make_embedder, tei, qdrant_path) -> None:
    embedder = make_embedder(lru_bytes=0)
    embedder.embed_documents(["x"])
    loop, engine = embedder._engine()
    namespace = loop.run(engine.namespace(EmbedOptions()))
    embedder.close()
    description = qdrant_path / namespace.collection("cached_tei") / "namespace.json"
    stored = json.loads(description.read_text())
    stored["namespace"]["model_id"] = "someone/else"
    description.write_text(json.dumps(stored))
    with pytest.raises(StoreConfigurationError, match="holds vectors of .*someone/else"):
        make_embedder().embed_documents(["y"])


def test_the_server_store_path_works_in_memory(tei, tei_config) -> None:
    texts = ["server path", "in memory"]
    with CachedEmbedder(tei_url=tei.url, qdrant_url=":memory:", lru_bytes=0) as embedder:
        first = embedder.embed_documents(texts)
        embedder.flush()
        second = embedder.embed(texts)
    assert (second.hits, second.misses) == (2, 0)
    assert np.array_equal(as_f32(first), second.vectors)
    assert sent_texts(tei) == texts


def test_embedders_of_one_process_share_the_embedded_store(make_embedder, tei) -> None:
    first = make_embedder()
    first.embed_documents(["x"])
    second = make_embedder(document_instruction="passage: ")
    third = make_embedder()
    assert second.embed(["x", "y"]).misses == 2  # another namespace of text: "passage: x"
    assert third.embed(["x"]).hits == 1  # the first embedder's vector, same engine
    first.close()
    assert second.embed(["y"]).hits == 1  # still open for the others
    assert sent_texts(tei) == ["x", "passage: x", "passage: y"]
