"""cached-tei: text embeddings from Hugging Face TEI, cached in Qdrant, batched and parallel.

The names below are the public API. They are imported on first use, so that ``import
cached_tei`` (and ``cached-tei --help``) stay cheap; every other module is internal.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .embedder import CachedEmbedder, Kind
    from .engine import EmbedResult, Engine
    from .errors import (
        CachedTEIError,
        EventLoopError,
        InputError,
        ModelChangedError,
        StoreConfigurationError,
        StoreLockedError,
        StoreUnavailable,
        TEIError,
    )
    from .keys import EmbedOptions, Namespace, point_id
    from .reranker import CachedReranker
    from .settings import CachedTEISettings
    from .sparse import CachedSparseEmbedder
    from .stats import Stats
    from .tei import TEIInfo
    from .values import Rank, SparseVector

logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"

# Where each public name lives (the lazy imports below).
_HOMES = {
    "CachedEmbedder": "embedder",
    "Kind": "embedder",
    "EmbedResult": "engine",
    "Engine": "engine",
    "CachedTEIError": "errors",
    "EventLoopError": "errors",
    "InputError": "errors",
    "ModelChangedError": "errors",
    "StoreConfigurationError": "errors",
    "StoreLockedError": "errors",
    "StoreUnavailable": "errors",
    "TEIError": "errors",
    "EmbedOptions": "keys",
    "Namespace": "keys",
    "point_id": "keys",
    "CachedTEISettings": "settings",
    "CachedReranker": "reranker",
    "CachedSparseEmbedder": "sparse",
    "Rank": "values",
    "SparseVector": "values",
    "Stats": "stats",
    "TEIInfo": "tei",
}
__all__ = [
    "CachedEmbedder",
    "CachedReranker",
    "CachedSparseEmbedder",
    "CachedTEIError",
    "CachedTEISettings",
    "EmbedOptions",
    "EmbedResult",
    "Engine",
    "EventLoopError",
    "InputError",
    "Kind",
    "ModelChangedError",
    "Namespace",
    "Rank",
    "SparseVector",
    "Stats",
    "StoreConfigurationError",
    "StoreLockedError",
    "StoreUnavailable",
    "TEIError",
    "TEIInfo",
    "point_id",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'cached_tei' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
