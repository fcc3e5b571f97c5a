"""cached-tei: text embeddings from Hugging Face TEI, cached in Qdrant, batched and parallel."""

import logging

from .embedder import CachedEmbedder, Kind
from .engine import EmbedResult, Engine
from .errors import CachedTEIError, InputError, StoreConfigurationError, TEIError
from .keys import EmbedOptions, Namespace, point_id
from .settings import CachedTEISettings
from .stats import Stats
from .tei import TEIInfo

logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"
__all__ = [
    "CachedEmbedder",
    "CachedTEIError",
    "CachedTEISettings",
    "EmbedOptions",
    "EmbedResult",
    "Engine",
    "InputError",
    "Kind",
    "Namespace",
    "Stats",
    "StoreConfigurationError",
    "TEIError",
    "TEIInfo",
    "point_id",
]
