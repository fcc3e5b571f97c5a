"""``llama_index.embeddings.cached_tei``: where LlamaIndex users look for an embedding
integration; the same class as :mod:`llama_index_cached_tei`."""

from llama_index_cached_tei import CachedTEIEmbeddings

__all__ = ["CachedTEIEmbeddings"]
