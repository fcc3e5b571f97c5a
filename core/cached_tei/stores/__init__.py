"""Cache stores: a Qdrant server, or Qdrant's engine embedded in this process."""

from __future__ import annotations

from ..settings import CachedTEISettings
from .base import CacheStore, CollectionInfo, Rows
from .embedded import EmbeddedStore


def open_store(settings: CachedTEISettings) -> CacheStore:
    """The store the settings ask for: a server at ``qdrant_url``, else the embedded folder
    at ``qdrant_path`` (shared with every other store of this process that points at it).

    Nothing is opened or contacted until the store's first use; ``aclose()`` releases it.
    """
    if settings.qdrant_url is not None:
        from .server import QdrantServerStore  # imports qdrant-client (and grpc): only here

        return QdrantServerStore(settings)
    return EmbeddedStore(settings)


__all__ = ["CacheStore", "CollectionInfo", "EmbeddedStore", "Rows", "open_store"]
