"""LangChain face of cached-tei: ``from langchain_cached_tei import CachedTEIEmbeddings``."""

from cached_tei import CachedTEIError, InputError, TEIError

from .embeddings import CachedTEIEmbeddings

__all__ = ["CachedTEIEmbeddings", "CachedTEIError", "InputError", "TEIError"]
