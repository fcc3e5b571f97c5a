"""Several users of one cache: threads of one process on the embedded store, two processes on
one Qdrant server, a second opener of an embedded store, and a process killed mid-write."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cached_tei import CachedEmbedder
from tests.conftest import sent_texts
from tests.support.env import scrubbed_environ
from tests.tei_emulator import EmulatorServer

from .conftest import REPO, Tally, check_points, embedded_points
from .fake_qdrant import FakeQdrant

pytestmark = pytest.mark.timeout(90)


def _worker(
    tei_url: str, store: str, prefix: str, calls: int, per_call: int, forever: bool = False
):
    env = scrubbed_environ(PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = [
        sys.executable,
        "-m",
        "tests.faults._worker",
        tei_url,
        store,
        prefix,
        str(calls),
        str(per_call),
    ]
    if forever:
        args.append("--forever")
    return subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_embedders_share_an_embedded_folder_and_another_process_is_told_who_holds_it(
    tei: EmulatorServer, tmp_path: Path, tally: Tally
) -> None:
    store = tmp_path / "q"
    with CachedEmbedder(tei_url=tei.url, qdrant_path=store) as first:
        tally.check(tei.config, ["a", "b"], first.embed(["a", "b"]).vectors)
        first.flush()
        # another engine (no LRU) in this process opens the same folder and reads it
        with CachedEmbedder(tei_url=tei.url, qdrant_path=store, lru_bytes=0) as second:
            result = second.embed(["a"])
            assert result.hits == 1
            tally.check(tei.config, ["a"], result.vectors)
        # the first is unaffected by the second's close
        tally.check(tei.config, ["a", "c"], first.embed(["a", "c"]).vectors)
        # another process fails at its first call, before sending anything to TEI
        proc = _worker(tei.url, str(store), "other process", 1, 2)
        _, err = proc.communicate(timeout=60)
        tally.fail()
        assert proc.returncode != 0 and "StoreLockedError" in err, err[-2000:]
        message = err.strip().splitlines()[-1]
        assert str(store) in message and f"PID {os.getpid()}" in message  # names the holder
        assert "CACHED_TEI_QDRANT_URL" in message and "CACHED_TEI_QDRANT_PATH" in message
        assert not [text for text in sent_texts(tei) if text.startswith("other process")]
    # once the holder is gone, another process opens it
    proc = _worker(tei.url, str(store), "other process", 1, 2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "closed" in out, err[-2000:]
    assert tally.wrong == 0


def test_one_embedded_store_many_threads(tei: EmulatorServer, tmp_path: Path, tally: Tally) -> None:
    """8 threads, overlapping texts, one embedder: every answer right, the store holds each
    distinct text once with its right vector."""
    store = tmp_path / "q"
    every: set[str] = set()
    with CachedEmbedder(tei_url=tei.url, qdrant_path=store, write_batch_size=16) as embedder:

        def one(i: int) -> None:
            texts = [f"shared {(i * 5 + j) % 300}" for j in range(20)] + [f"shared {i % 7}"] * 3
            every.update(texts)
            tally.check(tei.config, texts, embedder.embed(texts).vectors)

        with cf.ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(200)))
        stats = embedder.stats
    points = embedded_points(store)
    known, wrong = check_points(points, tei.config, sorted(every))
    tally.extra.update(
        distinct=len(every),
        stored=len(points),
        coalesced=stats.coalesced,
        tei_texts=tei.embed_texts_computed,
    )
    assert len(points) == known == len(every)
    assert wrong == 0 and tally.wrong == 0 and tally.failed == 0
    assert tei.embed_texts_computed == len(every), "a text was computed twice"


@pytest.mark.slow
def test_two_processes_share_one_qdrant_server(tei: EmulatorServer, tally: Tally) -> None:
    """Two processes embed overlapping texts into one Qdrant server at once: no corruption;
    a third engine then gets every text from the cache."""
    with FakeQdrant() as qdrant:
        procs = [_worker(tei.url, qdrant.url, "two processes", 40, 16) for _ in range(2)]
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err[-2000:]
            tally.sent += out.count("done")
        texts = [f"two processes {i}" for i in range(40 * 8 + 8)]
        points = qdrant.points()
        known, wrong = check_points(points, tei.config, texts)
        tally.wrong += wrong
        computed = tei.embed_texts_computed
        with CachedEmbedder(tei_url=tei.url, qdrant_url=qdrant.url, lru_bytes=0) as third:
            result = third.embed(texts)
            tally.check(tei.config, texts, result.vectors)
        tally.extra.update(stored=len(points), tei_texts_by_workers=computed)
    assert known == len(points) == len(texts)
    assert result.hits == len(texts) and tei.embed_texts_computed == computed
    assert tally.wrong == 0


@pytest.mark.slow
def test_process_killed_mid_write_leaves_a_consistent_store(
    tei: EmulatorServer, tmp_path: Path, tally: Tally
) -> None:
    """SIGKILL a process while it writes to the embedded store: the next opener works, every
    entry it serves is right (no half-written entry), and it loses at most the queued writes."""
    store = tmp_path / "q"
    proc = _worker(tei.url, str(store), "crash", 0, 64, forever=True)
    assert proc.stdout is not None
    done = 0
    deadline = time.monotonic() + 30
    while done < 30 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("done"):
            done = int(line.split()[1])
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)  # reaps it and closes its pipes
    tally.sent += done
    texts = [f"crash {i}" for i in range(done * 32 + 64 + 64 * 4)]
    points = embedded_points(store)
    known, wrong = check_points(points, tei.config, texts)
    tally.wrong += wrong
    with CachedEmbedder(tei_url=tei.url, qdrant_path=store, lru_bytes=0) as after:
        result = after.embed(texts)
        tally.check(tei.config, texts, result.vectors)
    tally.extra.update(
        calls_before_kill=done, entries_after_kill=len(points), hits_after=result.hits
    )
    assert known == len(points) and wrong == 0
    assert len(points) > 0, "nothing survived the crash"
    assert result.hits == len(points)
    assert tally.wrong == 0
