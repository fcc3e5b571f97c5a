"""What is read back is what was written: a stored entry whose bytes changed (on disk, or on
the server) is a miss, recomputed, rewritten, counted and logged once per collection; entries
written before checksums were kept are served as they are."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cached_tei import CachedEmbedder, point_id
from tests.conftest import sent_texts
from tests.faults.fake_qdrant import FakeQdrant
from tests.tei_emulator import EmulatorConfig, EmulatorServer, expected_vector

TEXTS = [f"integrity text {i}" for i in range(60)]


@pytest.fixture
def qdrant() -> Iterator[FakeQdrant]:
    with FakeQdrant() as q:
        yield q
        assert q.violations == []


def expected(config: EmulatorConfig, texts: list[str]) -> np.ndarray:
    return np.stack([expected_vector(config, text) for text in texts]).astype(np.float32)


def corrupt_vector_storage(qdrant_path: Path, vectors: int, dimension: int) -> None:
    """Random bytes over the first ``vectors`` vectors of the stopped store's vector file."""
    [chunk] = qdrant_path.rglob("vector_storage/vectors/chunk_0.mmap")
    with open(chunk, "r+b") as handle:
        handle.write(os.urandom(vectors * dimension * 4))


def test_random_bytes_over_the_embedded_vector_file_are_recomputed_and_rewritten(
    make_embedder, tei: EmulatorServer, tei_config: EmulatorConfig, qdrant_path: Path
) -> None:
    with make_embedder() as first:
        first.embed(TEXTS)
    corrupt_vector_storage(qdrant_path, 10, tei_config.dim)
    tei.reset_log()

    with make_embedder(lru_bytes=0) as second:
        result = second.embed(TEXTS)
        assert second.stats.corrupt == 10
    assert np.array_equal(result.vectors, expected(tei_config, TEXTS))
    assert (result.hits, result.misses) == (50, 10)
    assert len(set(sent_texts(tei))) == 10

    tei.reset_log()
    with make_embedder(lru_bytes=0) as third:  # the recomputed entries were rewritten
        again = third.embed(TEXTS)
        assert third.stats.corrupt == 0
    assert (again.hits, again.misses) == (60, 0)
    assert np.array_equal(again.vectors, expected(tei_config, TEXTS))
    assert sent_texts(tei) == []


def test_one_flipped_byte_is_one_miss(
    make_embedder, tei: EmulatorServer, tei_config: EmulatorConfig, qdrant_path: Path
) -> None:
    with make_embedder() as first:
        first.embed(TEXTS)
    [chunk] = qdrant_path.rglob("vector_storage/vectors/chunk_0.mmap")
    with open(chunk, "r+b") as handle:
        handle.seek(4 * tei_config.dim * 7 + 5)  # a byte inside the eighth vector
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x01]))
    tei.reset_log()
    with make_embedder(lru_bytes=0) as second:
        result = second.embed(TEXTS)
        assert second.stats.corrupt == 1
    assert np.array_equal(result.vectors, expected(tei_config, TEXTS))
    assert len(sent_texts(tei)) == 1


def test_a_vector_or_checksum_changed_on_the_server_is_a_miss(
    tei: EmulatorServer, tei_config: EmulatorConfig, qdrant: FakeQdrant
) -> None:
    settings = {"tei_url": tei.url, "qdrant_url": qdrant.url, "lru_bytes": 0}
    with CachedEmbedder(**settings) as first:
        first.embed(TEXTS)
    changed = expected_vector(tei_config, TEXTS[3]).astype(np.float32)
    changed[0] += np.float32(0.5)
    qdrant.overwrite(point_id(TEXTS[3]), vector=changed.tolist())
    payload = next(p for p in qdrant.payloads() if "crc32" in p)
    qdrant.overwrite(point_id(TEXTS[8]), payload={**payload, "crc32": 12345})
    tei.reset_log()

    with CachedEmbedder(**settings) as second:
        result = second.embed(TEXTS)
        assert second.stats.corrupt == 2
    assert np.array_equal(result.vectors, expected(tei_config, TEXTS))
    assert sorted(sent_texts(tei)) == [TEXTS[3], TEXTS[8]]


def test_entries_without_a_checksum_are_served(
    tei: EmulatorServer, tei_config: EmulatorConfig, qdrant: FakeQdrant
) -> None:
    """Entries written before checksums were kept have none: they are served as they are."""
    settings = {"tei_url": tei.url, "qdrant_url": qdrant.url, "lru_bytes": 0}
    with CachedEmbedder(**settings) as first:
        first.embed(TEXTS)
    created = qdrant.payloads()[0]["created"]
    for text in TEXTS:
        qdrant.overwrite(point_id(text), payload={"created": created})
    assert all(set(p) == {"created"} for p in qdrant.payloads())
    tei.reset_log()

    with CachedEmbedder(**settings) as second:
        result = second.embed(TEXTS)
        assert second.stats.corrupt == 0
    assert (result.hits, result.misses) == (60, 0)
    assert np.array_equal(result.vectors, expected(tei_config, TEXTS))
    assert sent_texts(tei) == []


def test_corruption_is_logged_once_per_collection(
    tei: EmulatorServer,
    tei_config: EmulatorConfig,
    qdrant: FakeQdrant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = {"tei_url": tei.url, "qdrant_url": qdrant.url, "lru_bytes": 0}
    with CachedEmbedder(**settings) as first:
        first.embed(TEXTS)
    payload = next(p for p in qdrant.payloads() if "crc32" in p)
    for text in TEXTS[:4]:
        qdrant.overwrite(point_id(text), payload={**payload, "crc32": 1})

    with caplog.at_level(logging.ERROR, logger="cached_tei"), CachedEmbedder(**settings) as second:
        second.embed(TEXTS[:2])
        second.embed(TEXTS[2:4])
        assert second.stats.corrupt == 4
    [record] = [r for r in caplog.records if "checksum" in r.getMessage()]
    assert "cached-tei cache clear" in record.getMessage()
