"""Counters of what the engine did; a plain object the proxy exports to Prometheus."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass
class Stats:
    """Counts since the engine started. Texts are counted once per call after deduplication.

    ``hits`` came from the cache (in-process memory or Qdrant), ``misses`` were computed by
    TEI for this call or for a concurrent call computing the same text (``coalesced``).
    """

    hits: int = 0
    memory_hits: int = 0
    misses: int = 0
    coalesced: int = 0
    duplicates: int = 0
    tei_requests: int = 0
    tei_texts: int = 0
    tei_seconds: float = 0.0
    retries: int = 0
    cache_errors: int = 0
    cache_skipped: int = 0
    writes: int = 0
    write_errors: int = 0
    writes_dropped: int = 0
    bytes_written: int = 0
    pending_writes: int = 0

    @property
    def hit_ratio(self) -> float:
        """Share of texts served from the cache, 0.0 before any text."""
        served = self.hits + self.misses
        return self.hits / served if served else 0.0

    def snapshot(self) -> Stats:
        """A copy that no longer changes."""
        return replace(self)
