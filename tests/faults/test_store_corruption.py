"""A damaged embedded store: the cache commands answer in one line, ``cache clear`` recovers,
and ``cache verify`` tells drift from corruption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as edge

from cached_tei import CachedEmbedder, point_id
from tests.proxy.support import run_cli
from tests.tei_emulator import EmulatorServer, expected_vector


def _fill(tei: EmulatorServer, store: Path, texts: list[str], **settings: object) -> Path:
    with CachedEmbedder(tei_url=tei.url, qdrant_path=store, **settings) as embedder:
        embedder.embed_documents(texts)
    [collection] = store.glob("cached_tei_*")
    return collection


def _damage(collection: Path, how: str) -> None:
    if how == "segment state garbled":
        [segment] = (collection / "shard" / "segments").iterdir()
        (segment / "segment.json").write_text("garbage")
    elif how == "description garbled":
        (collection / "namespace.json").write_bytes(b"\x00\xff")
    else:
        (collection / "namespace.json").unlink()


def _one_line_error(result, *words: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cached-tei: error: "), result.stderr
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize(
    "how", ["segment state garbled", "description garbled", "description deleted"]
)
def test_cache_commands_on_a_damaged_store_answer_in_one_line_and_clear_recovers(
    tei, tmp_path, how
) -> None:
    store = tmp_path / "qdrant"
    _damage(_fill(tei, store, [f"damaged {i}" for i in range(20)]), how)
    where = ("--qdrant-path", str(store))
    _one_line_error(run_cli("cache", "stats", *where), "cache clear")
    _one_line_error(run_cli("cache", "prune", "--ttl", "1", *where), "cache clear")

    cleared = run_cli("cache", "clear", "--yes", *where)
    assert cleared.returncode == 0, cleared.stderr
    assert "Traceback" not in cleared.stderr and not any(store.glob("cached_tei_*"))
    stats = run_cli("cache", "stats", "--json", *where)
    assert stats.returncode == 0 and json.loads(stats.stdout)["collections"] == []
    with CachedEmbedder(tei_url=tei.url, qdrant_path=store) as embedder:  # usable again
        assert np.array_equal(
            np.asarray(embedder.embed_documents(["again"]), dtype=np.float32),
            expected_vector(tei.config, "again")[None, :],
        )


def _rewrite(collection: Path, key: str, vector: np.ndarray, payload: dict[str, object]) -> None:
    shard = edge.EdgeShard.load(str(collection / "shard"))
    try:
        point = edge.Point(key, vector.astype(np.float32).tolist(), payload)
        shard.update(edge.UpdateOperation.upsert_points([point]))
    finally:
        shard.close()


def _verify(tei: EmulatorServer, store: Path):
    return run_cli(
        "cache", "verify", "--sample", "1000", "--qdrant-path", str(store), "--tei-url", tei.url
    )


def test_verify_tells_drift_from_corruption_with_stored_texts(tei, tmp_path) -> None:
    store = tmp_path / "qdrant"
    texts = [f"verified {i}" for i in range(30)]
    collection = _fill(tei, store, texts, store_text=True)
    result = _verify(tei, store)
    assert result.returncode == 0, result.stderr
    assert "30 sampled, 30 match TEI, 0 drifted, 0 corrupt" in result.stdout

    other = expected_vector(tei.config, "another text")  # a sound vector, not this text's
    _rewrite(collection, point_id(texts[0]), other, {"created": 1, "text": texts[0]})
    result = _verify(tei, store)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "29 match TEI, 1 drifted, 0 corrupt" in result.stdout
    assert f"drifted {point_id(texts[0])}" in result.stdout

    swapped = expected_vector(tei.config, texts[2])  # an id tracker mix-up: text 2 under 1's id
    _rewrite(collection, point_id(texts[1]), swapped, {"created": 1, "text": texts[2]})
    result = _verify(tei, store)
    assert result.returncode == 4, (result.stdout, result.stderr)
    assert "28 match TEI, 1 drifted, 1 corrupt" in result.stdout
    assert f"corrupt {point_id(texts[1])}: its id is not its text's key" in result.stdout


def test_verify_without_stored_texts_checks_what_it_can(tei, tmp_path) -> None:
    store = tmp_path / "qdrant"
    texts = [f"textless {i}" for i in range(10)]
    collection = _fill(tei, store, texts)
    result = _verify(tei, store)
    assert result.returncode == 0, result.stderr
    assert "10 sampled, 0 match TEI, 0 drifted, 0 corrupt, 10 without text" in result.stdout
    assert "store_text=True" in result.stdout

    garbled = np.frombuffer(np.random.default_rng(1).bytes(4 * tei.config.dim), dtype=np.float32)
    _rewrite(collection, point_id(texts[3]), garbled, {"created": 1})
    result = _verify(tei, store)
    assert result.returncode == 4, (result.stdout, result.stderr)
    assert "0 drifted, 1 corrupt, 9 without text" in result.stdout


def test_a_truncated_id_tracker_is_detected_and_counted_truthfully(tei, tmp_path) -> None:
    store = tmp_path / "qdrant"
    texts = [f"tracked {i}" for i in range(3000)]
    collection = _fill(tei, store, texts)
    [mappings] = (collection / "shard" / "segments").glob("*/mutable_id_tracker.mappings")
    mappings.write_bytes(mappings.read_bytes()[: mappings.stat().st_size // 3])

    stats = run_cli("cache", "stats", "--json", "--qdrant-path", str(store))
    assert stats.returncode == 0, stats.stderr
    [described] = json.loads(stats.stdout)["collections"]
    kept = described["count"]
    assert 0 < kept < 3000 and described["lost"] == 3000 - kept
    assert "id tracker lost them" in stats.stderr

    with CachedEmbedder(tei_url=tei.url, qdrant_path=store, lru_bytes=0) as embedder:
        vectors = embedder.embed_documents(texts)
        assert (embedder.stats.hits, embedder.stats.misses) == (kept, 3000 - kept)
    assert np.array_equal(
        np.asarray(vectors, dtype=np.float32),
        np.stack([expected_vector(tei.config, t) for t in texts]),
    )
    stats = run_cli("cache", "stats", "--json", "--qdrant-path", str(store))
    assert json.loads(stats.stdout)["collections"][0] == {**described, "count": 3000, "lost": 0}
