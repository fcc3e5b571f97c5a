"""Expiry that deletes: with a TTL, expired entries leave the store without a prune command,
and on a shared server one process at a time does it."""

from __future__ import annotations

import time
from pathlib import Path

from cached_tei import CachedEmbedder
from tests.conftest import sent_texts
from tests.faults.fake_qdrant import FakeQdrant
from tests.tei_emulator import EmulatorServer


def _wait_for(condition: object, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)


def test_expired_entries_leave_the_embedded_store_by_themselves(
    tei: EmulatorServer, qdrant_path: Path
) -> None:
    with CachedEmbedder(
        tei_url=tei.url, qdrant_path=qdrant_path, ttl=1, prune_interval=0.2
    ) as embedder:
        embedder.embed(["a", "b"])
        embedder.flush()
        _wait_for(lambda: embedder.stats.expired == 2)
        assert embedder.stats.expired == 2
        loop, engine = embedder._engine()
        [collection] = loop.run(engine.store.collections())
        assert collection.count == 0
        assert embedder.embed(["a"]).misses == 1
    assert sent_texts(tei) == ["a", "b", "a"]


def test_one_process_at_a_time_prunes_a_shared_server(tei: EmulatorServer) -> None:
    with FakeQdrant() as qdrant:
        common = {"tei_url": tei.url, "qdrant_url": qdrant.url, "ttl": 1, "prune_interval": 0.2}
        with CachedEmbedder(**common) as first, CachedEmbedder(**common, lru_bytes=0) as second:
            first.embed(["x", "y", "z"])
            first.flush()
            second.embed(["x"])  # starts the second engine's expiry too
            _wait_for(lambda: first.stats.expired + second.stats.expired >= 3)
            # only the engine holding the lease deleted anything
            assert sorted([first.stats.expired, second.stats.expired]) == [0, 3]
            loop, engine = first._engine()
            [collection] = loop.run(engine.store.collections())
            assert collection.count == 0
