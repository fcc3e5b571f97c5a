"""Cache stores: a Qdrant server, or Qdrant's engine embedded in this process."""

from __future__ import annotations

from ..settings import CachedTEISettings
from .base import CacheStore, CollectionInfo
from .embedded import EmbeddedStore
from .server import QdrantServerStore


def open_store(settings: CachedTEISettings) -> CacheStore:
    """The store the settings ask for: a server at ``qdrant_url``, else embedded at ``qdrant_path``."""
    if settings.qdrant_url is not None:
        return QdrantServerStore(settings)
    return EmbeddedStore(settings)


__all__ = ["CacheStore", "CollectionInfo", "EmbeddedStore", "QdrantServerStore", "open_store"]
