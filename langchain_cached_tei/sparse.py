"""``CachedTEISparseEmbeddings``: langchain-qdrant ``SparseEmbeddings`` from a TEI SPLADE model,
cached in Qdrant."""

from __future__ import annotations

from langchain_qdrant import SparseEmbeddings, SparseVector
from pydantic import ConfigDict

import cached_tei
from cached_tei import CachedSparseEmbedder, CachedTEISettings
from cached_tei.adapter import FaceAdapter


class CachedTEISparseEmbeddings(FaceAdapter[CachedSparseEmbedder], SparseEmbeddings):
    """Sparse (SPLADE) embeddings from TEI's ``/embed_sparse``, cached so no text is embedded
    twice; for ``QdrantVectorStore(retrieval_mode=RetrievalMode.HYBRID, sparse_embedding=...)``.

    TEI is at ``sparse_url`` (``CACHED_TEI_SPARSE_URL``); every other option of
    :class:`cached_tei.CachedTEISettings` can be passed by name as for ``CachedTEIEmbeddings``.
    Nothing touches the network until the first call.

    Example:
        .. code-block:: python

            from langchain_cached_tei import CachedTEISparseEmbeddings

            sparse = CachedTEISparseEmbeddings(sparse_url="http://localhost:8081")
            vectors = sparse.embed_documents(["hello", "world"])
    """

    model_config = ConfigDict(extra="forbid")

    def _connect(self, settings: CachedTEISettings) -> CachedSparseEmbedder:
        return CachedSparseEmbedder(settings)

    def embed_documents(self, texts: list[str]) -> list[SparseVector]:
        """Embed documents (document prompt/instruction applied); one vector per text, with
        TEI's indices and values in TEI's order."""
        return [_to_langchain(vector) for vector in self._client.embed_documents(texts)]

    def embed_query(self, text: str) -> SparseVector:
        """Embed one query (query prompt/instruction applied)."""
        return _to_langchain(self._client.embed_query(text))

    async def aembed_documents(self, texts: list[str]) -> list[SparseVector]:
        """Async :meth:`embed_documents`, native (no thread pool), from any event loop."""
        vectors = await self._client.aembed_documents(texts)
        return [_to_langchain(vector) for vector in vectors]

    async def aembed_query(self, text: str) -> SparseVector:
        """Async :meth:`embed_query`, native (no thread pool), from any event loop."""
        return _to_langchain(await self._client.aembed_query(text))


def _to_langchain(vector: cached_tei.SparseVector) -> SparseVector:
    # Already ints and floats of equal length: nothing to validate.
    return SparseVector.model_construct(indices=vector.indices, values=vector.values)


__all__ = ["CachedTEISparseEmbeddings"]
