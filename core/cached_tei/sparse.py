"""``CachedSparseEmbedder``: cached sparse (SPLADE) embeddings from TEI's ``/embed_sparse``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from .embedder import _single
from .face import Face
from .keys import EmbedOptions
from .settings import CachedTEISettings
from .values import ModelKind, SparseVector


class CachedSparseEmbedder(Face):
    """Sparse embeddings from the TEI at ``CACHED_TEI_SPARSE_URL``, with the cache in front.

    Built like :class:`~cached_tei.CachedEmbedder` (settings, keyword overrides, the
    environment). Each text is keyed by the SHA-256 of the text TEI sees, in a namespace
    fixing the sparse model, its revision and truncation; queries and documents share
    entries (TEI encodes both alike). Values come back exactly as TEI computed them (float32).
    """

    kind: ClassVar[ModelKind] = "sparse"

    def __init__(self, settings: CachedTEISettings | None = None, **overrides: Any) -> None:
        super().__init__(settings, **overrides)
        self._options = EmbedOptions(
            kind="sparse",
            truncate=self.settings.truncate,
            truncation_direction=self.settings.truncation_direction,
        )

    def __repr__(self) -> str:
        return f"CachedSparseEmbedder(sparse_url={self.settings.sparse_url!r})"

    def embed_documents(self, texts: Sequence[str]) -> list[SparseVector]:
        """One sparse vector per text, in input order."""
        loop, engine = self._engine()
        result = loop.run(engine.embed(texts, self._options, **self._cache()))
        vectors: list[SparseVector] = result.vectors.tolist()
        return vectors

    def embed_query(self, text: str) -> SparseVector:
        """The sparse vector of one query."""
        return self.embed_documents([_single(text)])[0]

    async def aembed_documents(self, texts: Sequence[str]) -> list[SparseVector]:
        """Async :meth:`embed_documents`, from any event loop."""
        loop, engine = self._engine()
        result = await loop.run_async(engine.embed(texts, self._options, **self._cache()))
        vectors: list[SparseVector] = result.vectors.tolist()
        return vectors

    async def aembed_query(self, text: str) -> SparseVector:
        """Async :meth:`embed_query`."""
        return (await self.aembed_documents([_single(text)]))[0]

    def _cache(self) -> dict[str, bool]:
        return {"read_cache": self.settings.read_cache, "write_cache": self.settings.write_cache}


__all__ = ["CachedSparseEmbedder"]
