"""TEI fails under the engine: replicas die and come back, all of them overload, all go down.

Real nginx (the generated nginx.conf) in front of three TEI emulator processes; the engine
(``CachedEmbedder``) in front of nginx; the embedded store. Every vector is checked.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from pathlib import Path

import pytest

from cached_tei import CachedEmbedder
from cached_tei.errors import TEIError
from tests.tei_emulator import EmulatorServer, Fault

from .conftest import FAST_TEI, Cluster, Tally, free_port

pytestmark = [pytest.mark.nginx, pytest.mark.timeout(120)]


def _load(
    embedder: CachedEmbedder,
    tally: Tally,
    tag: str,
    calls: int,
    workers: int,
    on_done=None,
    texts_per_call: int = 4,
) -> None:
    """``calls`` embed calls of distinct texts, ``workers`` at a time; on_done(k) after the k-th."""
    done = 0
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal done
        texts = [f"{tag} call {i} text {j}" for j in range(texts_per_call)]
        try:
            result = embedder.embed(texts)
        except Exception as exc:  # counted, and shown by the assertions
            tally.fail()
            tally.extra.setdefault("errors", []).append(repr(exc)[:200])
        else:
            tally.check(FAST_TEI, texts, result.vectors)
        with lock:
            done += 1
            k = done
        if on_done is not None:
            on_done(k)

    with cf.ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(one, i) for i in range(calls)]:
            f.result()


@pytest.mark.slow
def test_replica_killed_mid_run_then_restarted(
    cluster: Cluster, tmp_path: Path, tally: Tally
) -> None:
    """SIGKILL one of three replicas under load, restart it later: no failed call, no wrong or
    missing vector, and the restarted replica takes traffic again."""
    victim = cluster.replicas[1]
    embedder = CachedEmbedder(tei_url=cluster.url, qdrant_path=tmp_path / "q", retry_deadline=30)
    events: dict[str, float] = {}

    def on_done(k: int) -> None:
        if k == 60:
            events["killed"] = time.monotonic()
            victim.kill()
        if k == 140:
            events["restarted"] = time.monotonic()
            victim.start()

    try:
        _load(embedder, tally, "kill", 200, 6, on_done)
        # nginx rests a failed server for fail_timeout (2 s here): keep traffic coming until
        # the restarted replica serves, at most 20 s.
        deadline = time.monotonic() + 20
        extra = 0
        while victim.requests() == [] and time.monotonic() < deadline:
            _load(embedder, tally, f"return {extra}", 12, 4)
            extra += 1
        tally.retried = embedder.stats.retries
    finally:
        embedder.close()
    served_after_restart = sum(1 for r in victim.requests() if r.status == 200)
    tally.extra.update(served_by_restarted=served_after_restart, replica_served=cluster.served())
    assert {"killed", "restarted"} <= set(events)
    assert tally.failed == 0, tally.extra.get("errors")
    assert tally.wrong == 0
    assert served_after_restart > 0, "traffic never returned to the restarted replica"


@pytest.mark.slow
def test_every_replica_overloaded_for_a_while(
    cluster: Cluster, tmp_path: Path, tally: Tally
) -> None:
    """All replicas answer 429 for ~2 s: calls wait (retry with backoff) and all succeed;
    nginx passes 429 through (no retry at nginx, no 502 cascade)."""
    for r in cluster.replicas:
        r.inject(Fault(kind="status", status=429, count=100_000))
    timer = threading.Timer(2.0, lambda: [r.clear_faults() for r in cluster.replicas])
    timer.start()
    embedder = CachedEmbedder(tei_url=cluster.url, qdrant_path=tmp_path / "q", retry_deadline=30)
    started = time.monotonic()
    try:
        _load(embedder, tally, "overload", 24, 8)
        tally.retried = embedder.stats.retries
    finally:
        timer.cancel()
        embedder.close()
    statuses = cluster.statuses()
    tally.extra.update(seconds=round(time.monotonic() - started, 1), tei_429=statuses.count(429))
    assert tally.failed == 0, tally.extra.get("errors")
    assert tally.wrong == 0
    assert set(statuses) <= {200, 429}, f"a replica answered something else: {set(statuses)}"
    assert statuses.count(429) > 0
    # Every 429 a replica sent was one engine attempt: nginx retried none of them.
    assert statuses.count(429) == tally.retried


@pytest.mark.slow
def test_overload_that_never_clears_ends_in_tei_error(
    cluster: Cluster, tmp_path: Path, tally: Tally
) -> None:
    """Bounded retries and a total deadline: TEI's own 429 comes back, never a short list."""
    for r in cluster.replicas:
        r.inject(Fault(kind="status", status=429, count=100_000))
    # (a) the retry budget ends it: max_retries=3 -> exactly 4 attempts
    embedder = CachedEmbedder(
        tei_url=cluster.url, qdrant_path=tmp_path / "q1", max_retries=3, retry_deadline=60
    )
    try:
        with pytest.raises(TEIError) as caught:
            embedder.embed(["never", "clears"])
        tally.fail()
        tally.retried += embedder.stats.retries
    finally:
        embedder.close()
    assert caught.value.status == 429 and caught.value.error_type == "Overloaded"
    assert caught.value.message == "Model is overloaded"  # TEI's own message
    assert "Gave up after 4 attempts" in str(caught.value)
    assert cluster.statuses().count(429) == 4
    # (b) the deadline ends it: 2 s, however many retries are left
    embedder = CachedEmbedder(
        tei_url=cluster.url, qdrant_path=tmp_path / "q2", max_retries=1000, retry_deadline=2
    )
    started = time.monotonic()
    try:
        with pytest.raises(TEIError) as caught:
            embedder.embed(["deadline"])
        elapsed = time.monotonic() - started
        tally.fail()
        tally.retried += embedder.stats.retries
    finally:
        embedder.close()
    tally.extra["deadline_s"] = round(elapsed, 2)
    assert caught.value.status == 429
    assert elapsed < 2 + 4.5, elapsed  # the deadline, plus at most one backoff step (max 4 s)


def test_all_tei_down(cluster: Cluster, tmp_path: Path, tally: Tally) -> None:
    """Every replica dead: a clear error naming the upstream within the deadline; texts
    already cached are still served, without TEI, by an engine that has met TEI before."""
    store = tmp_path / "q"
    cached = [f"cached before the outage {i}" for i in range(40)]
    # LRU off: after the outage the vectors can only come from the store
    embedder = CachedEmbedder(tei_url=cluster.url, qdrant_path=store, lru_bytes=0, retry_deadline=3)
    try:
        tally.check(FAST_TEI, cached, embedder.embed(cached).vectors)
        embedder.flush()
        for r in cluster.replicas:
            r.kill()
        before = embedder.stats.tei_requests
        result = embedder.embed(cached)
        tally.check(FAST_TEI, cached, result.vectors)
        assert result.hits == len(cached) and embedder.stats.tei_requests == before
        started = time.monotonic()
        with pytest.raises(TEIError) as caught:
            embedder.embed(cached[:5] + ["not cached"])
        elapsed = time.monotonic() - started
        tally.fail()
        tally.retried = embedder.stats.retries
    finally:
        embedder.close()
    error = caught.value
    tally.extra.update(error_after_s=round(elapsed, 2), error=str(error)[:160])
    assert cluster.url in str(error)  # names the upstream
    assert error.status == 502  # nginx's "no live upstream"
    assert elapsed < 3 + 4.5 + 2, elapsed
    assert tally.wrong == 0


def test_fully_cached_request_served_by_a_fresh_engine_while_tei_is_down(
    tmp_path: Path, tally: Tally
) -> None:
    """A process (re)started during a TEI outage: its cached texts should still be served."""
    store = tmp_path / "q"
    cached = [f"cached before the outage {i}" for i in range(10)]
    with EmulatorServer(FAST_TEI) as tei:
        url = tei.url
        with CachedEmbedder(tei_url=url, qdrant_path=store) as warm:
            tally.check(FAST_TEI, cached, warm.embed(cached).vectors)
    # TEI is gone; a fresh engine on the same store and URL
    with CachedEmbedder(tei_url=url, qdrant_path=store, retry_deadline=1, timeout=1) as fresh:
        try:
            result = fresh.embed(cached)
        except TEIError:
            tally.fail()
            raise
        tally.check(FAST_TEI, cached, result.vectors)


def test_tei_unreachable_without_nginx(tmp_path: Path, tally: Tally) -> None:
    """A TEI that refuses connections: the error says so, names the URL, within the deadline."""
    url = f"http://127.0.0.1:{free_port()}"
    embedder = CachedEmbedder(tei_url=url, qdrant_path=tmp_path / "q", retry_deadline=2, timeout=2)
    started = time.monotonic()
    try:
        with pytest.raises(TEIError) as caught:
            embedder.embed(["anyone there"])
        tally.fail()
        tally.retried = embedder.stats.retries
    finally:
        embedder.close()
    elapsed = time.monotonic() - started
    assert url in str(caught.value) and caught.value.status is None
    assert "reachable at CACHED_TEI_URL" in str(caught.value)
    assert elapsed < 2 + 4.5, elapsed


def test_all_or_nothing_when_one_batch_fails(tmp_path: Path, tally: Tally) -> None:
    """A call split into several TEI batches, one of which fails for good: the call raises
    TEI's error, never a shorter list; the batches that succeeded are cached."""
    with EmulatorServer(FAST_TEI) as tei:
        texts = [f"batch text {i}" for i in range(100)]  # 4 batches of <= 32
        tei.inject(Fault(kind="status", status=424, count=1))  # Backend: not transient
        with CachedEmbedder(tei_url=tei.url, qdrant_path=tmp_path / "q") as embedder:
            with pytest.raises(TEIError) as caught:
                embedder.embed(texts)
            tally.fail()
            assert caught.value.error_type == "Backend"
            again = embedder.embed(texts)
            tally.check(FAST_TEI, texts, again.vectors)
            assert again.hits == 100 - 32 or again.hits >= 68
    assert tally.wrong == 0
