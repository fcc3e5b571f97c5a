"""Prometheus metrics, one registry per app: requests by route and status, and the engine's
counters (hits, misses, TEI latency and retries, cache errors, write-queue depth) read at
scrape time, so the request path pays for one counter and one histogram only."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..engine import Engine
from ..stats import TEI_LATENCY_BUCKETS

__all__ = ["CONTENT_TYPE_LATEST", "MetricsMiddleware", "ProxyMetrics"]

# A request answered from the cache takes well under a millisecond, a miss about TEI's time.
_BUCKETS = (0.0005, 0.001, 0.0025, *TEI_LATENCY_BUCKETS)
_DIRECTIVES = ("no-cache", "no-store")
_BREAKER_STATES = ("closed", "half-open", "open")


class EngineCollector(Collector):
    """Exports ``engine.stats`` as it is at scrape time."""

    def __init__(self, engine: Callable[[], Engine | None]) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self._engine()
        if engine is None:
            return
        s = engine.stats

        texts = CounterMetricFamily(
            "cached_tei_texts",
            "Distinct texts per request, by where their vector came from.",
            labels=["result"],
        )
        texts.add_metric(["hit"], s.hits)
        texts.add_metric(["miss"], s.misses)
        yield texts
        yield GaugeMetricFamily(
            "cached_tei_hit_ratio", "Share of texts served from the cache since start.", s.hit_ratio
        )
        yield CounterMetricFamily(
            "cached_tei_memory_hits", "Cache hits served from the in-process LRU.", s.memory_hits
        )
        yield CounterMetricFamily(
            "cached_tei_coalesced",
            "Misses that waited for a concurrent request's TEI call.",
            s.coalesced,
        )
        yield CounterMetricFamily(
            "cached_tei_duplicates", "Texts repeated within one request.", s.duplicates
        )
        yield _tei_latency(s.tei_latency_counts, s.tei_seconds)
        yield CounterMetricFamily("cached_tei_tei_texts", "Texts sent to TEI.", s.tei_texts)
        yield CounterMetricFamily(
            "cached_tei_tei_retries", "TEI requests retried after a transient failure.", s.retries
        )
        yield CounterMetricFamily(
            "cached_tei_cache_errors", "Failed cache (Qdrant) operations.", s.cache_errors
        )
        yield CounterMetricFamily(
            "cached_tei_cache_skipped",
            "Lookups skipped while the cache breaker was open.",
            s.cache_skipped,
        )
        writes = CounterMetricFamily(
            "cached_tei_cache_writes", "Vectors handed to the cache, by outcome.", labels=["result"]
        )
        writes.add_metric(["written"], s.writes)
        writes.add_metric(["failed"], s.write_errors)
        writes.add_metric(["dropped"], s.writes_dropped)
        yield writes
        yield CounterMetricFamily(
            "cached_tei_cache_written_bytes", "Vector bytes written to the cache.", s.bytes_written
        )
        yield GaugeMetricFamily(
            "cached_tei_write_queue_depth",
            "Vectors waiting to be written to the cache.",
            s.pending_writes,
        )
        breaker = GaugeMetricFamily(
            "cached_tei_cache_breaker_state",
            "1 for the cache breaker's current state.",
            labels=["state"],
        )
        state = engine.breaker.state
        for name in _BREAKER_STATES:
            breaker.add_metric([name], 1.0 if name == state else 0.0)
        yield breaker


def _tei_latency(counts: list[int], seconds: float) -> HistogramMetricFamily:
    """``Stats.tei_latency_counts`` (per bucket) as Prometheus' cumulative buckets."""
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*map(str, TEI_LATENCY_BUCKETS), "+Inf"), counts, strict=True):
        total += count
        buckets.append((bound, total))
    return HistogramMetricFamily(
        "cached_tei_tei_request_duration_seconds",
        "TEI embed requests by duration.",
        buckets=buckets,
        sum_value=seconds,
    )


class ProxyMetrics:
    """The registry of one app, its request metrics, and the engine's."""

    def __init__(self, engine: Callable[[], Engine | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "cached_tei_proxy_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "cached_tei_proxy_request_duration_seconds",
            "Time to answer a request, by route.",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        control = Counter(
            "cached_tei_cache_control",
            "Requests with a Cache-Control directive the proxy honours, by directive.",
            ["directive"],
            registry=self.registry,
        )
        self._directives = {directive: control.labels(directive) for directive in _DIRECTIVES}
        self.registry.register(EngineCollector(engine))

    def cache_control(self, directive: str) -> None:
        """Count a request carrying ``no-cache`` or ``no-store``."""
        self._directives[directive].inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every answer (401s and 413s included) under its route, or ``other``."""

    def __init__(self, app: ASGIApp, metrics: ProxyMetrics, routes: Iterable[str]) -> None:
        self.app = app
        self._metrics = metrics
        self._routes = frozenset(routes)
        self._durations = {
            route: metrics.duration.labels(route) for route in [*self._routes, "other"]
        }
        self._counters: dict[tuple[str, int], Counter] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in self._routes else "other"
        status = 500
        started = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self._durations[route].observe(time.perf_counter() - started)
            counter = self._counters.get((route, status))
            if counter is None:  # resolving labels costs more than the increment itself
                counter = self._metrics.requests.labels(route, str(status))
                self._counters[(route, status)] = counter
            counter.inc()
