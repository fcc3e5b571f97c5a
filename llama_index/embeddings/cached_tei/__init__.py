"""``llama_index.embeddings.cached_tei``: where LlamaIndex users look for an embedding
integration; the same objects as :mod:`llama_index_cached_tei`."""

from llama_index_cached_tei import (
    DEFAULT_EMBED_BATCH_SIZE,
    CachedTEIEmbeddings,
    CachedTEIError,
    InputError,
    TEIError,
)

__all__ = [
    "DEFAULT_EMBED_BATCH_SIZE",
    "CachedTEIEmbeddings",
    "CachedTEIError",
    "InputError",
    "TEIError",
]
