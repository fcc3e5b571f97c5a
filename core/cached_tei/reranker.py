"""``CachedReranker``: cached reranking from TEI's ``/rerank``, one entry per (query, text)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from .engine import EmbedResult
from .errors import InputError
from .face import Face
from .keys import EmbedOptions
from .values import ModelKind, Rank


class CachedReranker(Face):
    """Reranking by the TEI at ``CACHED_TEI_RERANK_URL``, with the cache in front.

    Built like :class:`~cached_tei.CachedEmbedder`. Each (query, text) pair's score is an
    entry of its own, in a namespace fixing the reranker, its revision, truncation and
    ``raw_scores``; only the pairs not cached reach TEI. The order (by score, best first, ties
    as TEI breaks them), ``top_n`` and ``return_text`` are rebuilt locally.
    """

    kind: ClassVar[ModelKind] = "rerank"

    def __repr__(self) -> str:
        return f"CachedReranker(rerank_url={self.settings.rerank_url!r})"

    def rerank(
        self,
        query: str,
        texts: Sequence[str],
        *,
        top_n: int | None = None,
        raw_scores: bool = False,
        return_text: bool = False,
        truncate: bool | None = None,
    ) -> list[Rank]:
        """The texts ranked by their score against ``query``, best first (``top_n`` of them)."""
        options = self._options(query, top_n, raw_scores, truncate)
        if _no_texts(texts):
            return []
        loop, engine = self._engine()
        result = loop.run(engine.embed(texts, options, **self._cache()))
        return ranks(result, texts, top_n, return_text)

    async def arerank(
        self,
        query: str,
        texts: Sequence[str],
        *,
        top_n: int | None = None,
        raw_scores: bool = False,
        return_text: bool = False,
        truncate: bool | None = None,
    ) -> list[Rank]:
        """Async :meth:`rerank`, from any event loop."""
        options = self._options(query, top_n, raw_scores, truncate)
        if _no_texts(texts):
            return []
        loop, engine = self._engine()
        result = await loop.run_async(engine.embed(texts, options, **self._cache()))
        return ranks(result, texts, top_n, return_text)

    def _options(
        self, query: str, top_n: int | None, raw_scores: bool, truncate: bool | None
    ) -> EmbedOptions:
        if not isinstance(query, str):
            raise InputError(f"query must be a string, got {type(query).__name__}")
        if top_n is not None and (
            isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0
        ):
            raise InputError(f"top_n must be a whole number >= 0 or None, got {top_n!r}")
        return EmbedOptions(
            kind="rerank",
            truncate=self.settings.truncate if truncate is None else truncate,
            truncation_direction=self.settings.truncation_direction,
            raw_scores=bool(raw_scores),
            query=query,
        )

    def _cache(self) -> dict[str, bool]:
        return {"read_cache": self.settings.read_cache, "write_cache": self.settings.write_cache}


def _no_texts(texts: Sequence[str]) -> bool:
    """An empty list: nothing to rank, no TEI call (a bare string is checked by the engine)."""
    return not texts and isinstance(texts, Sequence) and not isinstance(texts, str)


def ranks(
    result: EmbedResult, texts: Sequence[str], top_n: int | None, return_text: bool
) -> list[Rank]:
    """The call's scores as TEI orders them: a stable sort by score, reversed (so equal
    scores come last index first), cut to ``top_n``."""
    scores = result.vectors[:, 0]
    order = np.argsort(scores, kind="stable")[::-1][:top_n]
    values = scores.tolist()
    return [Rank(int(i), values[i], texts[i] if return_text else None) for i in order.tolist()]


__all__ = ["CachedReranker", "ranks"]
