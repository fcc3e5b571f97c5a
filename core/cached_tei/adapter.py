"""What the framework adapters share: one ``CachedEmbedder`` held privately, and its lifecycle."""

from __future__ import annotations

from .embedder import CachedEmbedder
from .settings import CachedTEISettings
from .stats import Stats


class EmbedderHolder:
    """Mixed into an adapter model that keeps its engine in the private ``_client``."""

    _client: CachedEmbedder

    @property
    def settings(self) -> CachedTEISettings:
        """The effective settings: the fields given, then ``CACHED_TEI_*``, then defaults."""
        return self._client.settings

    @property
    def client(self) -> CachedEmbedder:
        """The engine behind this object."""
        return self._client

    @property
    def stats(self) -> Stats:
        """Counters of the engine: hits, misses, TEI requests, cache errors..."""
        return self._client.stats

    def flush(self) -> None:
        """Block until every computed vector is written to the cache."""
        self._client.flush()

    def close(self) -> None:
        """Write pending vectors and release connections and the embedded store's folder."""
        self._client.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        await self._client.aclose()
