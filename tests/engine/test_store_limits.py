"""The embedded store within bounds: free disk, open collections, missing descriptions,
and the caller's event loop (qdrant-edge holds the GIL in every call)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from cached_tei import CachedEmbedder, EmbedOptions, StoreConfigurationError, point_id
from cached_tei.stores import disk, shards
from tests.conftest import sent_texts
from tests.tei_emulator import EmulatorServer, expected_vector


def _exact(tei: EmulatorServer, texts: list[str], vectors: object) -> bool:
    expected = np.stack([expected_vector(tei.config, t) for t in texts])
    return np.array_equal(np.asarray(vectors, dtype=np.float32), expected)


def _collection(embedder, options: EmbedOptions | None = None) -> str:
    loop, engine = embedder._engine()
    namespace = loop.run(engine.namespace(options or EmbedOptions()))
    return str(namespace.collection(engine.settings.collection_prefix))


# ---------------------------------------------------------------------------- disk
def test_below_the_free_disk_margin_writes_stop_reads_go_on(
    make_embedder, tei, monkeypatch, caplog
) -> None:
    free = {"bytes": 10 * 2**30}
    monkeypatch.setattr(disk, "free_bytes", lambda path: free["bytes"])
    embedder = make_embedder(lru_bytes=0, min_free_disk_bytes=2**20)
    stored = [f"stored {i}" for i in range(10)]
    embedder.embed_documents(stored)
    embedder.flush()
    assert embedder.stats.writes == 10

    free["bytes"] = 2**20  # below the margin plus the next write's growth
    with caplog.at_level(logging.ERROR, logger="cached_tei"):
        for call in range(3):
            texts = [f"new {call} {i}" for i in range(7)]
            assert _exact(tei, texts, embedder.embed_documents(texts))
            embedder.flush()
    stats = embedder.stats
    assert (stats.writes, stats.writes_dropped, stats.write_errors) == (10, 21, 0)
    assert stats.disk_full == 3 and stats.cache_errors == 0
    refusals = [r for r in caplog.records if "the cache is skipped" in r.getMessage()]
    assert len(refusals) == 1  # logged once
    tei.reset_log()
    assert _exact(tei, stored, embedder.embed_documents(stored))  # read from the open store
    assert sent_texts(tei) == [] and embedder._lease.engine.breaker.state == "closed"

    free["bytes"] = 10 * 2**30
    embedder.embed_documents(["after"])
    embedder.flush()
    assert embedder.stats.writes == 11


def test_a_store_that_cannot_be_opened_safely_is_skipped(
    make_embedder, tei, monkeypatch, qdrant_path
) -> None:
    texts = [f"kept {i}" for i in range(5)]
    first = make_embedder()
    first.embed_documents(texts)
    first.close()
    monkeypatch.setattr(disk, "free_bytes", lambda path: 0)
    reopened = make_embedder(lru_bytes=0)
    assert _exact(tei, texts, reopened.embed_documents(texts))
    assert reopened.stats.misses == 5 and reopened.stats.disk_full >= 1


# ---------------------------------------------------------------------------- descriptions
@pytest.mark.parametrize("damage", ["deleted", "garbled", "truncated"])
def test_a_missing_or_unreadable_description_never_deletes_data(
    make_embedder, tei, qdrant_path, damage
) -> None:
    first = make_embedder()
    first.embed_documents(["kept"])
    name = _collection(first)
    first.close()
    description = qdrant_path / name / "namespace.json"
    if damage == "deleted":
        description.unlink()
    elif damage == "garbled":
        description.write_bytes(b"\x00\xff not json")
    else:
        description.write_text(description.read_text()[:20])
    files = sorted(p for p in (qdrant_path / name / "shard").rglob("*") if p.is_file())

    for write_through in (False, True):
        embedder = make_embedder(write_through=write_through)
        with pytest.raises(StoreConfigurationError, match="nothing was deleted.*cache clear"):
            embedder.embed_documents(["kept", "new"])
        embedder.close()
    assert sorted(p for p in (qdrant_path / name / "shard").rglob("*") if p.is_file()) == files


def test_a_collection_left_by_a_crash_while_created_is_replaced(
    make_embedder, tei, qdrant_path
) -> None:
    first = make_embedder()
    first.embed_documents(["before"])
    name = _collection(first)
    first.close()
    (qdrant_path / name / "namespace.json").unlink()
    (qdrant_path / name / "creating").touch()  # the crash came before the description
    embedder = make_embedder(lru_bytes=0)
    assert _exact(tei, ["before"], embedder.embed_documents(["before"]))
    embedder.flush()
    assert embedder.stats.writes == 1 and not (qdrant_path / name / "creating").exists()


# ---------------------------------------------------------------------------- resources
def _held() -> tuple[int, int, int]:
    me = psutil.Process()
    return me.num_threads(), me.num_fds(), len(me.memory_maps(grouped=False))


@pytest.fixture
def fast_folder(tmp_path: Path) -> Iterator[Path]:
    """A store folder on tmpfs where there is one (/dev/shm): a thousand collections are
    created without a thousand rounds of fsyncs; else under tmp_path."""
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() else tmp_path / "store"
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_threads_fds_and_maps_stay_bounded_with_a_thousand_namespaces(
    make_embedder, tei, fast_folder
) -> None:
    embedder = make_embedder(
        qdrant_path=fast_folder, max_open_collections=8, write_through=True, lru_bytes=0
    )
    loop, engine = embedder._engine()
    loop.run(engine.embed(["warm up"], EmbedOptions(tenant="warm-up")))
    threads, fds, maps = _held()

    async def many() -> None:
        for tenant in range(1000):
            options = EmbedOptions(tenant=f"t{tenant}")
            result = await engine.embed([f"text of {tenant}"], options)
            assert _exact(tei, [f"text of {tenant}"], result.vectors)

    loop.run(many())
    now = _held()
    # qdrant-edge 0.9 held 8 threads, 1 fd and ~43 maps per open shard until closed
    assert now[0] <= threads + 8 * 2, now
    assert now[1] <= fds + 8 * 4, now
    assert now[2] <= maps + 8 * 40, now
    assert len(engine.store._use().shards) == 8
    # a closed one reopens on demand, with its entries
    first = loop.run(engine.embed(["text of 0"], EmbedOptions(tenant="t0")))
    assert first.hits == 1 and _exact(tei, ["text of 0"], first.vectors)
    embedder.close()  # before fast_folder goes


# ---------------------------------------------------------------------------- the caller's loop
def test_the_callers_loop_runs_between_store_steps(make_embedder, tei) -> None:
    embedder = make_embedder()
    loop, engine = embedder._engine()
    namespace = loop.run(engine.namespace(EmbedOptions()))
    count = 12_000  # more vector bytes than shards.FLUSH_BYTES
    ids = [point_id(f"step {i}") for i in range(count)]
    vectors = np.random.default_rng(7).standard_normal((count, 384), dtype=np.float32)

    async def run() -> tuple[int, int, dict[str, np.ndarray]]:
        ticks = 0
        running = True

        async def ticker() -> None:  # counts the loop's turns while the store works
            nonlocal ticks
            while running:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = ticks
        await engine.store.upsert(namespace, ids, vectors)
        during_write, before = ticks - before, ticks
        found = await engine.store.lookup(namespace, ids)
        during_read = ticks - before
        running = False
        await task
        return during_write, during_read, found

    during_write, during_read, found = loop.run(run())
    steps = -(-count // shards.step_points(384))
    assert during_write >= steps - 1 and during_read >= steps - 1
    assert found.ids == ids and np.array_equal(found.vectors, vectors)
    opened = engine.store._use().shards.get(namespace.collection("cached_tei"))
    assert vectors.nbytes > shards.FLUSH_BYTES > opened.unflushed  # flushed on the way


def test_interpreter_exit_closes_the_store_in_steps_without_threads(tei, qdrant_path) -> None:
    texts = [f"closed at exit {i}" for i in range(6000)]  # write-backs while writing, too
    script = (
        # DEBUG logging, as where this was seen: the executor is then shut down before the drain
        "import logging; logging.basicConfig(level=logging.DEBUG)\n"
        "from cached_tei import CachedEmbedder\n"
        f"embedder = CachedEmbedder(tei_url={tei.url!r}, qdrant_path={str(qdrant_path)!r})\n"
        "embedder.embed_documents([f'closed at exit {i}' for i in range(6000)])\n"
        "# no close(): at exit the executor takes no more threads; the store closes anyway\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert "closing cached-tei failed" not in done.stderr, done.stderr[-3000:]
    tei.reset_log()
    reopened = CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path, lru_bytes=0)
    with reopened:
        assert _exact(tei, texts, reopened.embed_documents(texts))
        assert reopened.stats.hits == 6000
