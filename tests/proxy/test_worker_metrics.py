"""``cached-tei serve --workers 2``: any worker's /metrics is the sum over every worker, those
that ended included."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from cached_tei.keys import point_id
from cached_tei.stats import TEI_LATENCY_BUCKETS
from tests.faults.fake_qdrant import FakeQdrant
from tests.tei_emulator.process import free_port

from .support import texts_sent
from .test_observability import value
from .test_workers import serve, serve_two_workers, wait_healthy, workers_of


@pytest.fixture
def qdrant() -> Iterator[FakeQdrant]:
    with FakeQdrant() as server:
        yield server


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(url + "/metrics")  # a new connection: either worker answers
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def embeds_answered(folder: Path, pid: int) -> float:
    """The /embed requests one worker answered, from its own multiprocess file."""
    path = folder / f"counter_{pid}.db"
    if not path.exists():
        return 0.0
    return sum(
        sample.value
        for metric in MultiProcessCollector.merge([str(path)])
        for sample in metric.samples
        if sample.name == "cached_tei_proxy_requests_total"
        and sample.labels == {"route": "/embed", "status": "200"}
    )


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def published(folder: Path, *stats: str) -> list[float]:
    """The workers' engine counts as they stand in the shared files."""
    files = [str(path) for path in folder.glob("counter_*.db")]
    counts = {
        sample.labels["stat"]: sample.value
        for metric in MultiProcessCollector.merge(files)
        for sample in metric.samples
        if sample.name == "cached_tei_worker_stats_total"
    }
    return [counts.get(stat, 0.0) for stat in stats]


def assert_sums(url: str, emu, requests: int, texts: int) -> None:
    """Several scrapes, each the exact sum: ``requests`` embeds, ``texts`` misses then hits."""
    tei_requests = len(emu.requests)
    for _ in range(6):
        s = scrape(url)
        assert value(s, "cached_tei_proxy_requests_total", route="/embed", status="200") == (
            requests
        )
        assert value(s, "cached_tei_proxy_request_duration_seconds_count", route="/embed") == (
            requests
        )
        assert value(s, "cached_tei_texts_total", result="miss") == texts
        assert value(s, "cached_tei_texts_total", result="hit") == texts
        assert value(s, "cached_tei_hit_ratio") == 0.5
        assert value(s, "cached_tei_tei_texts_total") == texts
        assert value(s, "cached_tei_tei_request_duration_seconds_count") == tei_requests
        assert value(s, "cached_tei_tei_request_duration_seconds_bucket", le="+Inf") == tei_requests
        buckets = [
            value(s, "cached_tei_tei_request_duration_seconds_bucket", le=str(le))
            for le in TEI_LATENCY_BUCKETS
        ]
        assert buckets == sorted(buckets)
        assert value(s, "cached_tei_cache_writes_total", result="written") == texts
        assert value(s, "cached_tei_write_queue_depth") == 0
        assert value(s, "cached_tei_cache_breaker_state", state="closed") == 1
        assert value(s, "cached_tei_cache_breaker_state", state="open") == 0


def test_every_scrape_sums_every_worker_the_ended_ones_included(emu, qdrant):
    process, url = serve_two_workers(emu, qdrant)
    try:
        workers = workers_of(process)
        assert len(workers) == 2
        folder = Path(workers[0].environ()["PROMETHEUS_MULTIPROC_DIR"])
        assert folder.is_dir()

        # Misses, one new text per request on a new connection, until both workers answered some.
        texts: list[str] = []
        while len(texts) < 20 or (
            len(texts) < 300 and not all(embeds_answered(folder, w.pid) for w in workers)
        ):
            texts.append(f"worker metrics {len(texts)}")
            answer = httpx.post(url + "/embed", json={"inputs": [texts[-1]]})
            assert answer.headers["x-cache-misses"] == "1"
        assert all(embeds_answered(folder, w.pid) for w in workers), "one worker answered all"
        wait_until(
            lambda: {point_id(t) for t in texts} <= qdrant.points().keys(),
            "the vectors never reached Qdrant",
        )
        for text in texts:  # hits, from Qdrant or the worker's memory
            answer = httpx.post(url + "/embed", json={"inputs": [text]})
            assert answer.headers["x-cache-hits"] == "1"
        assert sorted(texts_sent(emu)) == sorted(texts)
        requests = 2 * len(texts)
        # Each worker adds its engine's counts to the shared files by itself, unscraped.
        wait_until(
            lambda: published(folder, "hits", "misses", "writes") == [len(texts)] * 3,
            "the workers never published their engine counts",
        )
        assert_sums(url, emu, requests, len(texts))

        killed = workers[0]
        killed.send_signal(signal.SIGKILL)
        killed.wait(30)
        wait_until(
            lambda: len(workers_of(process)) == 2 and killed not in workers_of(process),
            "the supervisor did not replace the killed worker",
        )
        wait_healthy(url, process)
        # Its levels left the sums, its counts stayed.
        wait_until(
            lambda: not list(folder.glob(f"gauge_live*_{killed.pid}.db")),
            "the killed worker was not marked dead",
        )
        assert (folder / f"counter_{killed.pid}.db").exists()
        assert_sums(url, emu, requests, len(texts))

        # SIGHUP replaces every worker, each stopping gracefully.
        replaced = {worker.pid for worker in workers_of(process)}
        process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: (
                {worker.pid for worker in workers_of(process)}.isdisjoint(replaced)
                and len(workers_of(process)) == 2
            ),
            "SIGHUP did not replace the workers",
        )
        wait_until(
            lambda: not any(list(folder.glob(f"gauge_live*_{pid}.db")) for pid in replaced),
            "the replaced workers were not marked dead",
        )
        assert_sums(url, emu, requests, len(texts))
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert not folder.exists()


def test_one_worker_keeps_its_own_registry(emu, tmp_path):
    port = free_port()
    env = {
        "CACHED_TEI_URL": emu.url,
        "CACHED_TEI_QDRANT_PATH": str(tmp_path / "q"),
        "CACHED_TEI_PROXY_PORT": str(port),
    }
    process = serve(env=env)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process)
        assert "PROMETHEUS_MULTIPROC_DIR" not in psutil.Process(process.pid).environ()
        s = scrape(f"http://127.0.0.1:{port}")
        assert ("cached_tei_proxy_requests_created", (("route", "/health"), ("status", "200"))) in s
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
