"""``llama_index.embeddings.cached_tei``: where LlamaIndex users look for an embedding
integration; the same classes as :mod:`llama_index_cached_tei`."""

from llama_index_cached_tei import CachedTEIEmbeddings, CachedTEISparseEmbedding

__all__ = ["CachedTEIEmbeddings", "CachedTEISparseEmbedding"]
