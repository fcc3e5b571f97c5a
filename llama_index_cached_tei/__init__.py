"""LlamaIndex face of cached-tei: ``from llama_index_cached_tei import CachedTEIEmbeddings``."""

from cached_tei import CachedTEIError, InputError, TEIError

from .embeddings import DEFAULT_EMBED_BATCH_SIZE, CachedTEIEmbeddings
from .rerank import CachedTEIRerank
from .sparse import CachedTEISparseEmbedding

__all__ = [
    "DEFAULT_EMBED_BATCH_SIZE",
    "CachedTEIEmbeddings",
    "CachedTEIError",
    "CachedTEIRerank",
    "CachedTEISparseEmbedding",
    "InputError",
    "TEIError",
]
