"""Prometheus metrics, one registry per app: requests by route and status, and the engine's
counters (hits, misses, TEI latency and retries, cache errors, write-queue depth) read at
scrape time, so the request path pays for one counter and one histogram only.

With several workers (``cached-tei serve --workers N``) the supervisor sets
``PROMETHEUS_MULTIPROC_DIR`` to a fresh folder: the request metrics live in prometheus_client's
multiprocess files, each worker adds its engine's counts to them every second (and when it is
scraped or stops), and a scrape of any worker reports the sum over all of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import fields
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..engine import Engine
from ..stats import TEI_LATENCY_BUCKETS, Stats
from .limits import BODY_TIMED_OUT

log = logging.getLogger(__name__)

__all__ = ["CONTENT_TYPE_LATEST", "SHARED_FOLDER", "MetricsMiddleware", "ProxyMetrics"]

# prometheus_client's multiprocess mode: set (by the supervisor) before any worker starts.
SHARED_FOLDER = "PROMETHEUS_MULTIPROC_DIR"
# How stale another worker's engine counts may be in a scrape.
PUBLISH_INTERVAL = 1.0
# A request answered from the cache takes well under a millisecond, a miss about TEI's time.
_BUCKETS = (0.0005, 0.001, 0.0025, *TEI_LATENCY_BUCKETS)
_DIRECTIVES = ("no-cache", "no-store")
# Worst last: with several workers the breaker reported is the worst of the live workers'.
_BREAKER_STATES = ("closed", "half-open", "open")
# Stats that are levels, not counts: summed over live workers only.
_LEVEL_STATS = frozenset({"pending_writes"})


# Engine counters exported as they are: (metric, help, Stats field).
_PLAIN_COUNTERS = (
    ("cached_tei_memory_hits", "Cache hits served from the in-process LRU.", "memory_hits"),
    (
        "cached_tei_coalesced",
        "Misses that waited for a concurrent request's TEI call.",
        "coalesced",
    ),
    ("cached_tei_duplicates", "Texts repeated within one request.", "duplicates"),
    ("cached_tei_tei_texts", "Texts sent to TEI.", "tei_texts"),
    ("cached_tei_tei_retries", "TEI requests retried after a transient failure.", "retries"),
    ("cached_tei_cache_errors", "Failed cache (Qdrant) operations.", "cache_errors"),
    (
        "cached_tei_cache_skipped",
        "Lookups skipped while the cache breaker was open.",
        "cache_skipped",
    ),
    ("cached_tei_cache_expired", "Expired entries deleted from the cache.", "expired"),
    (
        "cached_tei_cache_corrupt",
        "Cache entries that did not match their checksum (recomputed).",
        "corrupt",
    ),
    (
        "cached_tei_cache_disk_full",
        "Cache operations skipped for lack of free disk (embedded store).",
        "disk_full",
    ),
)


class EngineCollector(Collector):
    """Exports ``engine.stats`` as it is at scrape time."""

    def __init__(self, engine: Callable[[], Engine | None]) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self._engine()
        if engine is not None:
            yield from _engine_families(engine.stats, engine.breaker.state)


def _engine_families(s: Stats, breaker_state: str) -> Iterator[Metric]:
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
    for name, documentation, field in _PLAIN_COUNTERS:
        yield CounterMetricFamily(name, documentation, getattr(s, field))
    yield _tei_latency(s.tei_latency_counts, s.tei_seconds)
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
    for name in _BREAKER_STATES:
        breaker.add_metric([name], 1.0 if name == breaker_state else 0.0)
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


class _SharedEngineStats:
    """One worker's ``Stats`` in the multiprocess files, and the sum over every worker's.

    Counts are added as they grow (a counter per stat, kept after the worker ends), levels
    and the breaker state are set (live workers only: the supervisor marks ended ones dead)."""

    _COUNTS = "cached_tei_worker_stats"
    _LEVELS = "cached_tei_worker_levels"
    _BREAKER = "cached_tei_worker_breaker"

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._counts = Counter(self._COUNTS, "Engine counts.", ["stat"], registry=None)
        self._levels = Gauge(
            self._LEVELS, "Engine levels.", ["stat"], registry=None, multiprocess_mode="livesum"
        )
        self._breaker = Gauge(
            self._BREAKER, "Worst breaker state.", registry=None, multiprocess_mode="livemax"
        )
        self._published: dict[str, float] = {}

    def publish(self, engine: Engine) -> None:
        """Bring this worker's entries up to date with its engine."""
        for name, value in _flatten(engine.stats).items():
            if name in _LEVEL_STATS:
                self._levels.labels(name).set(value)
                continue
            added = value - self._published.get(name, 0)
            if added:
                self._counts.labels(name).inc(added)
                self._published[name] = value
        self._breaker.set(_BREAKER_STATES.index(engine.breaker.state))

    def collect(self) -> Iterator[Metric]:
        """Every metric in the folder, the engine's summed over the workers."""
        stats: dict[str, float] = {}
        breaker = 0
        files = [str(path) for path in self._folder.glob("*.db")]
        merged: list[Metric] = MultiProcessCollector.merge(files)  # type: ignore[no-untyped-call]
        for metric in merged:
            if metric.name == self._BREAKER:
                breaker = max(int(sample.value) for sample in metric.samples)
            elif metric.name in (self._COUNTS, self._LEVELS):
                stats.update((s.labels["stat"], s.value) for s in metric.samples)
            else:
                yield metric
        if stats:
            yield from _engine_families(_unflatten(stats), _BREAKER_STATES[breaker])


def _flatten(stats: Stats) -> dict[str, float]:
    """``{"hits": 3, ..., "tei_latency_counts:0": 1, ...}``."""
    flat: dict[str, float] = {}
    for field in fields(stats):
        value = getattr(stats, field.name)
        if isinstance(value, list):
            flat.update((f"{field.name}:{i}", count) for i, count in enumerate(value))
        else:
            flat[field.name] = value
    return flat


def _unflatten(flat: Mapping[str, float]) -> Stats:
    stats = Stats()
    for key, value in flat.items():
        name, _, index = key.partition(":")
        current = getattr(stats, name)
        if index:
            current[int(index)] = int(value)
        else:
            setattr(stats, name, type(current)(value))  # int counts are exact in a double
    return stats


class _WorkersCollector(Collector):
    """Exports the sum over every worker, this one's engine brought up to date first."""

    def __init__(self, shared: _SharedEngineStats, engine: Callable[[], Engine | None]) -> None:
        self._shared = shared
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self._engine()
        if engine is not None:
            self._shared.publish(engine)
        yield from self._shared.collect()


class ProxyMetrics:
    """The registry of one app, its request metrics, and the engine's."""

    def __init__(self, engine: Callable[[], Engine | None]) -> None:
        folder = os.environ.get(SHARED_FOLDER)
        self._shared = _SharedEngineStats(Path(folder)) if folder else None
        self.registry = CollectorRegistry(auto_describe=True)
        # Several workers: the metrics write to the shared files, which one collector reads.
        own = self.registry if self._shared is None else None
        self.requests = Counter(
            "cached_tei_proxy_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=own,
        )
        self.duration = Histogram(
            "cached_tei_proxy_request_duration_seconds",
            "Time to answer a request, by route.",
            ["route"],
            buckets=_BUCKETS,
            registry=own,
        )
        control = Counter(
            "cached_tei_cache_control",
            "Requests with a Cache-Control directive the proxy honours, by directive.",
            ["directive"],
            registry=own,
        )
        self._directives = {directive: control.labels(directive) for directive in _DIRECTIVES}
        self._route_texts = Counter(
            "cached_tei_proxy_texts",
            "Distinct texts (pairs for /rerank) of /embed_sparse and /rerank, by route and "
            "where they came from.",
            ["route", "result"],
            registry=own,
        )
        if self._shared is None:
            self.registry.register(EngineCollector(engine))
        else:
            self.registry.register(_WorkersCollector(self._shared, engine))

    def texts(self, route: str, hits: int, misses: int) -> None:
        """Count one sparse or rerank request's texts (the dense engine's are in
        ``cached_tei_texts``)."""
        self._route_texts.labels(route, "hit").inc(hits)
        self._route_texts.labels(route, "miss").inc(misses)

    def cache_control(self, directive: str) -> None:
        """Count a request carrying ``no-cache`` or ``no-store``."""
        self._directives[directive].inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    @contextlib.asynccontextmanager
    async def publishing(self, engine: Engine) -> AsyncIterator[None]:
        """With several workers, adds ``engine``'s counts to the shared files every
        ``PUBLISH_INTERVAL`` and once more on the way out (after the engine's last writes);
        with one worker, nothing."""
        shared = self._shared
        if shared is None:
            yield
            return

        async def every_interval() -> None:
            while True:
                await asyncio.sleep(PUBLISH_INTERVAL)
                shared.publish(engine)

        task = asyncio.create_task(every_interval())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            shared.publish(engine)


class MetricsMiddleware:
    """Counts every answer (401s and 413s included) under its route, or ``other``; a client
    that disconnects before sending its whole body counts as 499, not as a failure."""

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
        except ClientDisconnect:
            if scope.get(BODY_TIMED_OUT):  # the connection answered 408 and closed
                status = 408
            else:
                # Gone before sending its whole body: nothing to answer, and not the proxy's
                # failure (nginx's 499, "client closed request").
                status = 499
                log.info(
                    "%s %s: the client disconnected before sending its body",
                    scope["method"],
                    route,
                )
        finally:
            self._durations[route].observe(time.perf_counter() - started)
            counter = self._counters.get((route, status))
            if counter is None:  # resolving labels costs more than the increment itself
                counter = self._metrics.requests.labels(route, str(status))
                self._counters[(route, status)] = counter
            counter.inc()
