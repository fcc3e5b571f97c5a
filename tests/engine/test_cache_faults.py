"""The cache can fail; embedding cannot fail because of it. Writes are never lost on close."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import numpy as np

from cached_tei import CachedEmbedder, EmbedOptions, point_id
from tests.conftest import sent_texts
from tests.tei_emulator import expected_vector


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_qdrant_down_still_returns_correct_vectors(tei, tei_config) -> None:
    qdrant = f"http://127.0.0.1:{_closed_port()}"
    with CachedEmbedder(
        tei_url=tei.url, qdrant_url=qdrant, qdrant_timeout=0.5, breaker_threshold=2
    ) as embedder:
        for round_ in range(4):
            texts = [f"round {round_} text {i}" for i in range(3)]
            vectors = np.asarray(embedder.embed_documents(texts), dtype=np.float32)
            assert np.array_equal(
                vectors, np.stack([expected_vector(tei_config, t) for t in texts])
            )
        embedder.flush()
        stats = embedder.stats
        assert embedder._lease.engine.breaker.state == "open"
    assert stats.cache_errors >= 2
    assert stats.cache_skipped > 0  # once open, the breaker skips Qdrant instead of waiting
    assert stats.misses == 12


def test_the_breaker_closes_when_qdrant_returns(make_embedder, tei) -> None:
    embedder = make_embedder(breaker_threshold=1, breaker_cooldown=0.01)
    loop, engine = embedder._engine()
    engine.breaker.record_failure()
    assert engine.breaker.state in ("open", "half-open")
    time.sleep(0.02)
    embedder.embed_documents(["back again"])
    embedder.flush()
    assert engine.breaker.state == "closed"
    assert embedder.stats.writes == 1


def test_close_loses_no_pending_write(make_embedder, tei) -> None:
    texts = [f"pending {i}" for i in range(300)]
    embedder = make_embedder(write_batch_size=16)
    embedder.embed_documents(texts)
    embedder.close()
    tei.reset_log()
    reopened = make_embedder(lru_bytes=0)
    reopened.embed_documents(texts)
    assert sent_texts(tei) == []
    assert reopened.stats.hits == 300


def test_write_through_persists_before_returning(make_embedder, tei) -> None:
    embedder = make_embedder(write_through=True)
    embedder.embed_documents(["durable"])
    assert embedder.stats.writes == 1 and embedder.stats.pending_writes == 0


def test_the_lru_never_exceeds_its_bytes(make_embedder, tei) -> None:
    embedder = make_embedder(lru_bytes=20_000)
    embedder.embed_documents([f"lru {i}" for i in range(100)])
    memory = embedder._lease.engine._memory
    assert 0 < memory.currsize <= 20_000
    entry_bytes = memory.getsizeof(next(iter(memory.values())))
    assert len(memory) == 20_000 // entry_bytes


def test_texts_are_not_stored_unless_asked(make_embedder, tei) -> None:
    for store_text, text, expected_payload in (
        (False, "private words", {"created", "crc32"}),
        (True, "shareable words", {"created", "crc32", "text"}),
    ):
        embedder = make_embedder(store_text=store_text)
        embedder.embed_documents([text])
        embedder.flush()
        loop, engine = embedder._engine()
        namespace = loop.run(engine.namespace(EmbedOptions()))
        name = namespace.collection(engine.settings.collection_prefix)
        shard, _ = engine.store._use().shards[name]
        [point] = shard.retrieve(point_ids=[point_id(text)], with_payload=True, with_vector=False)
        assert set(point.payload) == expected_payload
        assert point.payload.get("text", text) == text
        embedder.close()
    assert sent_texts(tei) == ["private words", "shareable words"]


def test_interpreter_exit_drains_pending_writes(tei, qdrant_path) -> None:
    texts = [f"written at exit {i}" for i in range(200)]
    script = (
        "from cached_tei import CachedEmbedder\n"
        f"embedder = CachedEmbedder(tei_url={tei.url!r}, qdrant_path={str(qdrant_path)!r})\n"
        f"embedder.embed_documents({texts!r})\n"
        "# no close(): the exit hook must drain the write-behind queue\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    tei.reset_log()
    with CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path) as embedder:
        embedder.embed_documents(texts)
        assert embedder.stats.hits == 200
    assert sent_texts(tei) == []


def test_a_refused_write_is_counted_and_the_queue_keeps_draining(
    make_embedder, tei, qdrant_path
) -> None:
    embedder = make_embedder()
    embedder.embed_documents(["first"])
    loop, engine = embedder._engine()
    name = loop.run(engine.namespace(EmbedOptions())).collection("cached_tei")
    embedder.close()
    description = qdrant_path / name / "namespace.json"
    described = json.loads(description.read_text())
    description.write_text(json.dumps({**described, "dimension": 8}))  # as if the model changed

    reopened = make_embedder()
    loop, engine = reopened._engine()
    # As if the collection changed after this engine learned its namespace's dimension.
    engine._dimensions[loop.run(engine.namespace(EmbedOptions()))] = 384
    assert len(reopened.embed_documents(["second", "third"])) == 2
    reopened.flush()  # returns: the refused write does not stop the writer
    assert reopened.stats.write_errors == 2 and reopened.stats.writes == 0
