"""LangChain face of cached-tei: ``from langchain_cached_tei import CachedTEIEmbeddings``.

``CachedTEISparseEmbeddings`` (langchain-qdrant's ``SparseEmbeddings``) is imported on first
use, so that dense users do not pay for importing langchain-qdrant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cached_tei import CachedTEIError, InputError, TEIError

from .embeddings import CachedTEIEmbeddings
from .rerank import CachedTEIRerank

if TYPE_CHECKING:
    from .sparse import CachedTEISparseEmbeddings

__all__ = [
    "CachedTEIEmbeddings",
    "CachedTEIError",
    "CachedTEIRerank",
    "CachedTEISparseEmbeddings",
    "InputError",
    "TEIError",
]


def __getattr__(name: str) -> Any:
    if name != "CachedTEISparseEmbeddings":
        raise AttributeError(f"module 'langchain_cached_tei' has no attribute {name!r}")
    from .sparse import CachedTEISparseEmbeddings

    return CachedTEISparseEmbeddings
