"""The cache fails under the engine: Qdrant down, hung, slow, failing writes.

The server store (``qdrant_url``) talks to a fake Qdrant REST server on loopback (backed by
qdrant-client's own engine) whose faults are switched on and off, or to a port that accepts
and never answers. TEI is the in-process emulator. Embeddings must stay correct throughout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from cached_tei import CachedEmbedder, CachedTEISettings
from cached_tei.proxy import ProxySettings
from tests.tei_emulator import EmulatorServer

from .conftest import InThreadProxy, Tally
from .fake_qdrant import Blackhole, FakeQdrant

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def qdrant() -> Iterator[FakeQdrant]:
    with FakeQdrant() as q:
        yield q


def _texts(tag: str, n: int = 8) -> list[str]:
    return [f"{tag} text {i}" for i in range(n)]


def _call(embedder: CachedEmbedder, tei: EmulatorServer, tally: Tally, texts: list[str]) -> float:
    started = time.monotonic()
    try:
        result = embedder.embed(texts)
    except Exception:
        tally.fail()
        raise
    tally.check(tei.config, texts, result.vectors)
    return time.monotonic() - started


def test_qdrant_down_then_back(tei: EmulatorServer, qdrant: FakeQdrant, tally: Tally) -> None:
    """Qdrant answers 500 to everything: every call still succeeds with TEI's vectors; the
    breaker opens (no more Qdrant calls), then closes once Qdrant is back; writes resume."""
    qdrant.mode = "down"
    embedder = CachedEmbedder(
        tei_url=tei.url,
        qdrant_url=qdrant.url,
        breaker_threshold=3,
        breaker_cooldown=1.0,
        lru_bytes=0,
    )
    try:
        for i in range(10):
            _call(embedder, tei, tally, _texts(f"down {i}"))
        embedder.flush()
        during = embedder.stats
        breaker = embedder._lease.engine.breaker  # type: ignore[union-attr]
        assert breaker.state == "open"
        calls_while_open = sum(qdrant.calls.values())
        _call(embedder, tei, tally, _texts("down again"))
        assert sum(qdrant.calls.values()) == calls_while_open, "an open breaker still called Qdrant"
        assert during.cache_errors >= 3 and during.cache_skipped > 0 and during.writes_dropped > 0

        qdrant.mode = "ok"
        time.sleep(1.1)  # the cooldown
        for i in range(3):
            _call(embedder, tei, tally, _texts(f"back {i}"))
        embedder.flush()
        assert breaker.state == "closed"
        after = embedder.stats
        assert after.writes > 0
    finally:
        embedder.close()
    tally.extra.update(
        cache_errors=after.cache_errors,
        skipped=after.cache_skipped,
        dropped=after.writes_dropped,
        written=after.writes,
    )
    # what was written after recovery is served from Qdrant by a fresh engine
    with CachedEmbedder(tei_url=tei.url, qdrant_url=qdrant.url, lru_bytes=0) as fresh:
        result = fresh.embed(_texts("back 2"))
        tally.check(tei.config, _texts("back 2"), result.vectors)
        assert result.hits == 8
    assert tally.failed == 0 and tally.wrong == 0


def test_qdrant_hung_costs_bounded_latency(tei: EmulatorServer, tally: Tally) -> None:
    """A Qdrant that accepts and never answers: each lookup gives up after qdrant_timeout; after
    the threshold the breaker opens and calls cost no Qdrant latency at all."""
    with Blackhole() as hole:
        embedder = CachedEmbedder(
            tei_url=tei.url,
            qdrant_url=hole.url,
            qdrant_timeout=1.0,
            breaker_threshold=2,
            breaker_cooldown=60,
            lru_bytes=0,
        )
        try:
            first = [_call(embedder, tei, tally, _texts(f"hung {i}")) for i in range(2)]
            later = [_call(embedder, tei, tally, _texts(f"open {i}")) for i in range(10)]
            stats = embedder.stats
        finally:
            started = time.monotonic()
            embedder.close()
            close_s = time.monotonic() - started
    tally.extra.update(
        first_s=[round(x, 2) for x in first],
        worst_later_s=round(max(later), 3),
        close_s=round(close_s, 2),
    )
    assert all(x < 1.0 + 1.0 for x in first), first  # qdrant_timeout plus TEI
    assert max(later) < 0.5, later
    assert stats.cache_errors >= 2 and stats.cache_skipped >= 80
    assert close_s < 10, "closing with a hung Qdrant took too long"
    assert tally.failed == 0 and tally.wrong == 0


def test_qdrant_slow_beyond_its_timeout(
    tei: EmulatorServer, qdrant: FakeQdrant, tally: Tally
) -> None:
    """Every Qdrant answer takes 3 s, the timeout is 1 s: same as down, bounded latency."""
    qdrant.mode, qdrant.delay = "slow", 3.0
    embedder = CachedEmbedder(
        tei_url=tei.url,
        qdrant_url=qdrant.url,
        qdrant_timeout=1.0,
        breaker_threshold=2,
        breaker_cooldown=60,
        lru_bytes=0,
    )
    try:
        latencies = [_call(embedder, tei, tally, _texts(f"slow {i}")) for i in range(8)]
    finally:
        embedder.close()
    tally.extra["latencies_s"] = [round(x, 2) for x in latencies]
    assert max(latencies) < 2.0, latencies
    assert max(latencies[3:]) < 0.5, latencies
    assert tally.failed == 0 and tally.wrong == 0


def test_failing_writes_are_counted_and_never_block(
    tei: EmulatorServer, qdrant: FakeQdrant, tally: Tally
) -> None:
    """Reads work, every write fails: calls succeed at TEI speed; failed writes are counted
    (write errors, then dropped while the breaker is open)."""
    qdrant.mode = "fail_writes"
    embedder = CachedEmbedder(
        tei_url=tei.url, qdrant_url=qdrant.url, breaker_threshold=3, breaker_cooldown=60
    )
    try:
        latencies = [_call(embedder, tei, tally, _texts(f"nowrite {i}", 16)) for i in range(20)]
        embedder.flush()
        stats = embedder.stats
    finally:
        embedder.close()
    tally.extra.update(
        write_errors=stats.write_errors,
        dropped=stats.writes_dropped,
        worst_s=round(max(latencies), 3),
    )
    assert stats.writes == 0
    assert stats.write_errors > 0
    # every vector computed is accounted for: failed, dropped (breaker open), or written
    assert stats.write_errors + stats.writes_dropped == 20 * 16
    assert max(latencies[1:]) < 0.5, latencies  # the first call also starts the engine
    assert tally.failed == 0 and tally.wrong == 0


def test_slow_writes_do_not_slow_calls(
    tei: EmulatorServer, qdrant: FakeQdrant, tally: Tally
) -> None:
    """Writes take 0.5 s each (under the timeout): with the default queue, calls do not wait."""
    qdrant.mode, qdrant.delay = "slow_writes", 0.5
    embedder = CachedEmbedder(tei_url=tei.url, qdrant_url=qdrant.url, qdrant_timeout=5)
    try:
        latencies = [_call(embedder, tei, tally, _texts(f"slowwrite {i}", 16)) for i in range(20)]
        started = time.monotonic()
        embedder.flush()
        flush_s = time.monotonic() - started
        stats = embedder.stats
    finally:
        embedder.close()
    tally.extra.update(
        worst_s=round(max(latencies), 3), flush_s=round(flush_s, 2), written=stats.writes
    )
    assert max(latencies[1:]) < 0.4, latencies  # the first call also starts the engine
    assert stats.writes == 20 * 16
    assert tally.failed == 0 and tally.wrong == 0


def test_slow_writes_never_block_calls_even_when_the_queue_is_full(
    tei: EmulatorServer, qdrant: FakeQdrant, tally: Tally
) -> None:
    """The issue: writes 'never block requests'. A queue of 32 vectors, writes of 1 s each:
    calls of 16 new texts should still answer at TEI speed."""
    qdrant.mode, qdrant.delay = "slow_writes", 1.0
    embedder = CachedEmbedder(
        tei_url=tei.url, qdrant_url=qdrant.url, qdrant_timeout=5, write_queue_size=32
    )
    try:
        latencies = [_call(embedder, tei, tally, _texts(f"fullqueue {i}", 16)) for i in range(6)]
    finally:
        embedder.close()
    tally.extra["latencies_s"] = [round(x, 2) for x in latencies]
    assert max(latencies[1:]) < 0.5, latencies  # the first call also starts the engine


def test_proxy_metrics_and_health_show_a_failing_cache(
    tei: EmulatorServer, qdrant: FakeQdrant, tmp_path, tally: Tally
) -> None:
    """Through the proxy: Qdrant down -> answers stay right, /metrics shows the errors and the
    open breaker, /health says degraded; Qdrant back -> the breaker closes and writes resume."""
    qdrant.mode = "down"
    settings = CachedTEISettings(
        tei_url=tei.url,
        qdrant_url=qdrant.url,
        breaker_threshold=2,
        breaker_cooldown=1.0,
        lru_bytes=0,
    )

    def metric(text: str, prefix: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
        )

    with InThreadProxy(settings, ProxySettings()) as proxy, httpx.Client(timeout=10) as client:
        for i in range(5):
            texts = _texts(f"proxy down {i}")
            r = client.post(proxy.url + "/embed", json={"inputs": texts})
            assert r.status_code == 200
            tally.check(tei.config, texts, r.json())
        down = client.get(proxy.url + "/metrics").text
        health = client.get(proxy.url + "/health")
        qdrant.mode = "ok"
        time.sleep(1.1)
        for i in range(3):
            texts = _texts(f"proxy back {i}")
            r = client.post(proxy.url + "/embed", json={"inputs": texts})
            tally.check(tei.config, texts, r.json())
        time.sleep(0.3)
        back = client.get(proxy.url + "/metrics").text
    assert metric(down, 'cached_tei_cache_breaker_state{state="open"}') == 1.0
    assert metric(down, "cached_tei_cache_errors_total") >= 2
    assert metric(down, 'cached_tei_cache_writes_total{result="dropped"}') > 0
    assert health.status_code == 200 and health.headers["x-cache-store"] == "degraded"
    assert metric(back, 'cached_tei_cache_breaker_state{state="closed"}') == 1.0
    assert metric(back, 'cached_tei_cache_writes_total{result="written"}') > 0
    tally.extra.update(
        errors=metric(down, "cached_tei_cache_errors_total"),
        written_after=metric(back, 'cached_tei_cache_writes_total{result="written"}'),
    )
    assert tally.wrong == 0 and tally.failed == 0
