"""GET /metrics after known traffic, GET /health, GET /info."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cached_tei.stats import TEI_LATENCY_BUCKETS
from tests.support.proxy import ProxyProcess
from tests.tei_emulator import Fault

from .support import FAST, post


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for_writes(url: str, expected: int) -> dict:
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(url)
        written = value(samples, "cached_tei_cache_writes_total", result="written")
        if written >= expected or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def test_metrics_after_known_traffic(proxy, emu):
    assert post(proxy.url + "/embed", {"inputs": ["m1", "m2"]}).status_code == 200
    assert post(proxy.url + "/embed", {"inputs": ["m1", "m3", "m3"]}).status_code == 200
    assert post(proxy.url + "/embed", {"inputs": []}).status_code == 400
    assert post(proxy.url + "/v1/embeddings", {"input": ["m1"]}).status_code == 200
    assert post(proxy.url + "/tokenize", {"inputs": "m1"}).status_code == 200
    assert httpx.get(proxy.url + "/nope").status_code == 404
    emu.inject(Fault("status", status=503))
    assert post(proxy.url + "/embed", {"inputs": ["m4"]}).status_code == 200

    s = wait_for_writes(proxy.url, 4)
    requests = "cached_tei_proxy_requests_total"
    assert value(s, requests, route="/embed", status="200") == 3
    assert value(s, requests, route="/embed", status="400") == 1
    assert value(s, requests, route="/v1/embeddings", status="200") == 1
    assert value(s, requests, route="/tokenize", status="200") == 1
    assert value(s, requests, route="other", status="404") == 1
    assert value(s, "cached_tei_proxy_request_duration_seconds_count", route="/embed") == 4

    assert value(s, "cached_tei_texts_total", result="hit") == 2
    assert value(s, "cached_tei_texts_total", result="miss") == 4
    assert value(s, "cached_tei_duplicates_total") == 1
    assert abs(value(s, "cached_tei_hit_ratio") - 2 / 6) < 1e-9
    assert value(s, "cached_tei_tei_texts_total") == 4
    assert value(s, "cached_tei_tei_request_duration_seconds_count") == 4  # 3 batches + 1 retry
    assert value(s, "cached_tei_tei_request_duration_seconds_sum") > 0
    tei_buckets = [
        value(s, "cached_tei_tei_request_duration_seconds_bucket", le=le)
        for le in [*map(str, TEI_LATENCY_BUCKETS), "+Inf"]
    ]
    assert tei_buckets == sorted(tei_buckets) and tei_buckets[-1] == 4
    assert value(s, "cached_tei_tei_retries_total") == 1
    assert value(s, "cached_tei_cache_errors_total") == 0
    assert value(s, "cached_tei_cache_writes_total", result="written") == 4
    assert value(s, "cached_tei_cache_written_bytes_total") == 4 * FAST.dim * 4
    assert value(s, "cached_tei_write_queue_depth") == 0
    assert value(s, "cached_tei_cache_breaker_state", state="closed") == 1


def test_metrics_registries_are_per_app(emu, make_proxy):
    first, second = make_proxy(emu.url), make_proxy(emu.url)
    post(first.url + "/embed", {"inputs": ["only first"]})
    assert (
        value(scrape(first.url), "cached_tei_proxy_requests_total", route="/embed", status="200")
        == 1
    )
    assert (
        value(scrape(second.url), "cached_tei_proxy_requests_total", route="/embed", status="200")
        == 0
    )


def test_health_follows_the_upstream_and_reports_the_store(proxy, emu):
    healthy = httpx.get(proxy.url + "/health")
    assert (healthy.status_code, healthy.content, healthy.headers["x-cache-store"]) == (
        200,
        b"",
        "ok",
    )

    emu.set_healthy(False)
    down = httpx.get(proxy.url + "/health")
    assert (down.status_code, down.json()) == (
        503,
        {"error": "unhealthy", "error_type": "Unhealthy"},
    )
    emu.set_healthy(True)

    breaker = proxy.engine.breaker
    for _ in range(proxy.settings.breaker_threshold):
        breaker.record_failure()
    degraded = httpx.get(proxy.url + "/health")
    assert (degraded.status_code, degraded.headers["x-cache-store"]) == (200, "degraded")
    assert post(proxy.url + "/embed", {"inputs": ["while qdrant is skipped"]}).status_code == 200
    breaker.record_success()


def test_info_is_the_upstreams_with_the_proxys_limit_and_the_cache(proxy, emu):
    upstream = httpx.get(emu.url + "/info").json()
    post(proxy.url + "/embed", {"inputs": ["info a", "info b"]})
    wait_for_writes(proxy.url, 2)
    info = httpx.get(proxy.url + "/info").json()
    cache = info.pop("cache")
    assert info == {**upstream, "max_client_batch_size": proxy.proxy.max_inputs}
    assert cache["entries"] == 2 and cache["store"] == "embedded" and cache["breaker"] == "closed"
    assert cache["namespace"]["model_id"] == FAST.model_id
    assert cache["namespace"]["normalize"] is True and cache["namespace"]["truncate"] is True
    assert cache["collection"].startswith(proxy.settings.collection_prefix + "_")


def test_health_is_503_while_another_process_holds_the_embedded_folder(emu, make_proxy, tmp_path):
    store = tmp_path / "shared-folder"
    with ProxyProcess(tmp_path, emu.url, qdrant_path=store) as holder:
        assert post(holder.url + "/embed", {"inputs": ["held"]}).status_code == 200  # opens it
        second = make_proxy(emu.url, qdrant_path=store)
        health = httpx.get(second.url + "/health")
        assert (health.status_code, health.headers["x-cache-store"]) == (503, "locked")
        assert health.json()["error_type"] == "Unhealthy"
        assert health.json()["error"].startswith(
            f"the embedded cache at {store} is held by PID {holder.pid} "
        )
        refused = post(second.url + "/embed", {"inputs": ["held"]})
        assert refused.status_code == 503 and refused.json()["error"] == health.json()["error"]
    healthy = httpx.get(second.url + "/health")  # the holder is gone
    assert (healthy.status_code, healthy.headers["x-cache-store"]) == (200, "ok")
    assert post(second.url + "/embed", {"inputs": ["held"]}).headers["x-cache-hits"] == "1"
