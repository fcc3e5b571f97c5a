"""``CachedTEIRerank``: a LangChain document compressor that reranks with a TEI reranker,
each (query, text) score cached in Qdrant."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field

from cached_tei import CachedReranker, CachedTEISettings, Rank
from cached_tei.adapter import FaceAdapter

SCORE_KEY = "relevance_score"
"""The metadata key of the reranker's score, as in LangChain's other rerankers."""


class CachedTEIRerank(FaceAdapter[CachedReranker], BaseDocumentCompressor):
    """Reranks documents with TEI's ``/rerank``, computing each (query, text) pair once:
    for ``ContextualCompressionRetriever(base_compressor=..., base_retriever=...)``.

    Keeps the ``top_n`` best documents, best first, each a copy with its score in
    ``metadata["relevance_score"]``. TEI is at ``rerank_url`` (``CACHED_TEI_RERANK_URL``);
    every other option of :class:`cached_tei.CachedTEISettings` can be passed by name as for
    ``CachedTEIEmbeddings``. Nothing touches the network until the first call.

    Example:
        .. code-block:: python

            from langchain_cached_tei import CachedTEIRerank

            reranker = CachedTEIRerank(rerank_url="http://localhost:8082", top_n=3)
            best = reranker.compress_documents(documents, "what is qdrant?")
    """

    model_config = ConfigDict(extra="forbid")

    top_n: int | None = Field(3, ge=1, description="Documents kept, best first; None: all.")
    raw_scores: bool = Field(False, description="TEI's raw scores, without its sigmoid.")

    def _connect(self, settings: CachedTEISettings) -> CachedReranker:
        return CachedReranker(settings)

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The ``top_n`` documents most relevant to ``query``, best first, scored."""
        if not documents:
            return []
        ranks = self._client.rerank(
            query, _texts(documents), top_n=self.top_n, raw_scores=self.raw_scores
        )
        return _scored(documents, ranks)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Async :meth:`compress_documents`, native (no thread pool), from any event loop."""
        if not documents:
            return []
        ranks = await self._client.arerank(
            query, _texts(documents), top_n=self.top_n, raw_scores=self.raw_scores
        )
        return _scored(documents, ranks)


def _texts(documents: Sequence[Document]) -> list[str]:
    return [document.page_content for document in documents]


def _scored(documents: Sequence[Document], ranks: list[Rank]) -> list[Document]:
    """Copies of the ranked documents, in the ranks' order, with their scores."""
    return [
        documents[rank.index].model_copy(
            update={"metadata": {**documents[rank.index].metadata, SCORE_KEY: rank.score}}
        )
        for rank in ranks
    ]


__all__ = ["SCORE_KEY", "CachedTEIRerank"]
