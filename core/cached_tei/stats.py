"""Counters of what the engine did; a plain object the proxy exports to Prometheus."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace

# Upper bounds (seconds) of the TEI request latency histogram: embedding requests take from a
# few milliseconds (short texts on a GPU) to tens of seconds (long batches on a CPU).
TEI_LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


@dataclass
class Stats:
    """Counts since the engine started. Texts are counted once per call after deduplication.

    ``hits`` came from the cache (in-process memory or Qdrant), ``misses`` were computed by
    TEI for this call or for a concurrent call computing the same text (``coalesced``).
    ``upstream_hits`` are texts sent to TEI that a cached-tei proxy at the TEI URL served from
    its own cache (its ``x-cache-hits`` header): TEI itself computed ``tei_texts`` minus those.
    """

    hits: int = 0
    memory_hits: int = 0
    misses: int = 0
    coalesced: int = 0
    duplicates: int = 0
    tei_requests: int = 0
    tei_texts: int = 0
    upstream_hits: int = 0
    tei_seconds: float = 0.0
    retries: int = 0
    cache_errors: int = 0
    cache_skipped: int = 0
    writes: int = 0
    write_errors: int = 0
    writes_dropped: int = 0
    bytes_written: int = 0
    pending_writes: int = 0
    expired: int = 0
    corrupt: int = 0  # entries read back that did not match their checksum (recomputed)
    # Store operations skipped for lack of free disk (embedded store).
    disk_full: int = 0
    # Requests per latency bucket (not cumulative); the last counts those above every bound.
    tei_latency_counts: list[int] = field(
        default_factory=lambda: [0] * (len(TEI_LATENCY_BUCKETS) + 1)
    )

    def observe_tei_request(self, seconds: float) -> None:
        """Count one TEI request that took ``seconds``."""
        self.tei_requests += 1
        self.tei_seconds += seconds
        self.tei_latency_counts[bisect.bisect_left(TEI_LATENCY_BUCKETS, seconds)] += 1

    @property
    def hit_ratio(self) -> float:
        """Share of texts served from the cache, 0.0 before any text."""
        served = self.hits + self.misses
        return self.hits / served if served else 0.0

    def snapshot(self) -> Stats:
        """A copy that no longer changes."""
        return replace(self, tei_latency_counts=list(self.tei_latency_counts))
