"""``CachedTEISparseEmbedding``: a LlamaIndex ``BaseSparseEmbedding`` from a TEI SPLADE model,
cached in Qdrant; also the encoders of ``QdrantVectorStore(enable_hybrid=True)``."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base_sparse import BaseSparseEmbedding, SparseEmbedding
from pydantic import ConfigDict, Field, SecretStr

from cached_tei import CachedSparseEmbedder, CachedTEISettings, SparseVector
from cached_tei.adapter import FaceAdapter, check_texts, setting

from .embeddings import DEFAULT_EMBED_BATCH_SIZE

BatchSparseEncoding = tuple[list[list[int]], list[list[float]]]
"""What llama-index-vector-stores-qdrant's ``sparse_doc_fn``/``sparse_query_fn`` return."""

_UNKNOWN_MODEL = "unknown"


class CachedTEISparseEmbedding(FaceAdapter[CachedSparseEmbedder], BaseSparseEmbedding):
    """Sparse (SPLADE) embeddings from TEI's ``/embed_sparse``, cached so no text is embedded
    twice. ``sparse_doc_fn`` and ``sparse_query_fn`` are the encoders of LlamaIndex's
    ``QdrantVectorStore(enable_hybrid=True, sparse_doc_fn=..., sparse_query_fn=...)``.

    TEI is at ``sparse_url`` (``CACHED_TEI_SPARSE_URL``, or ``base_url`` as in
    ``TextEmbeddingsInference``); every other option of :class:`cached_tei.CachedTEISettings`
    can be passed by name as for ``CachedTEIEmbeddings``. Nothing touches the network until the
    first call; ``model_name`` is then read from TEI unless given. Also importable as
    ``llama_index.embeddings.cached_tei``.

    Example:
        .. code-block:: python

            from llama_index_cached_tei import CachedTEISparseEmbedding

            sparse = CachedTEISparseEmbedding(base_url="http://localhost:8081")
            weights = sparse.get_text_embedding("hello")  # {token id: weight}
    """

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(
        default=_UNKNOWN_MODEL, description="The model's name; read from TEI's /info unless given."
    )
    embed_batch_size: int = Field(
        default=DEFAULT_EMBED_BATCH_SIZE, gt=0, le=2048, description="Texts per engine call."
    )

    # TextEmbeddingsInference's names for these settings.
    sparse_url: str | None = setting("sparse_url", "base_url")
    api_key: SecretStr | None = setting("api_key", "auth_token")
    truncate: bool | None = setting("truncate", "truncate_text")
    document_instruction: str | None = setting("document_instruction", "text_instruction")

    @classmethod
    def class_name(cls) -> str:
        return "CachedTEISparseEmbedding"

    def _connect(self, settings: CachedTEISettings) -> CachedSparseEmbedder:
        return CachedSparseEmbedder(settings)

    # --- QdrantVectorStore(enable_hybrid=True) --------------------------------------------------
    def sparse_doc_fn(self, texts: list[str]) -> BatchSparseEncoding:
        """``sparse_doc_fn`` for LlamaIndex's hybrid ``QdrantVectorStore``: documents in,
        (indices, values) per text out."""
        return _batch(self._client.embed_documents(texts))

    def sparse_query_fn(self, texts: list[str]) -> BatchSparseEncoding:
        """``sparse_query_fn`` for LlamaIndex's hybrid ``QdrantVectorStore``: queries in (the
        query prompt/instruction applied), (indices, values) per query out."""
        check_texts(texts)
        return _batch([self._client.embed_query(text) for text in texts])

    # --- batches: a bare string is one text, not a list of characters --------------------------
    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[SparseEmbedding]:
        check_texts(texts)
        return super().get_text_embedding_batch(texts, show_progress, **kwargs)

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False
    ) -> list[SparseEmbedding]:
        check_texts(texts)
        return await super().aget_text_embedding_batch(texts, show_progress)

    # --- BaseSparseEmbedding --------------------------------------------------------------------
    def _get_query_embedding(self, query: str) -> SparseEmbedding:
        weights = _weights(self._client.embed_query(query))
        self._name_model()
        return weights

    async def _aget_query_embedding(self, query: str) -> SparseEmbedding:
        weights = _weights(await self._client.aembed_query(query))
        await self._aname_model()
        return weights

    def _get_text_embedding(self, text: str) -> SparseEmbedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> SparseEmbedding:
        return (await self._aget_text_embeddings([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[SparseEmbedding]:
        weights = [_weights(vector) for vector in self._client.embed_documents(texts)]
        self._name_model()
        return weights

    async def _aget_text_embeddings(self, texts: list[str]) -> list[SparseEmbedding]:
        weights = [_weights(vector) for vector in await self._client.aembed_documents(texts)]
        await self._aname_model()
        return weights

    def _name_model(self) -> None:
        """Fill ``model_name`` from TEI's ``/info`` (already fetched by the first call)."""
        if self.model_name == _UNKNOWN_MODEL:
            self.model_name = self._client.info().model_id

    async def _aname_model(self) -> None:
        """:meth:`_name_model` without blocking the caller's event loop."""
        if self.model_name == _UNKNOWN_MODEL:
            self.model_name = (await self._client.ainfo()).model_id


def _weights(vector: SparseVector) -> SparseEmbedding:
    """LlamaIndex's ``{token id: weight}``, in TEI's order."""
    return dict(zip(vector.indices, vector.values, strict=True))


def _batch(vectors: list[SparseVector]) -> BatchSparseEncoding:
    return [vector.indices for vector in vectors], [vector.values for vector in vectors]


__all__ = ["CachedTEISparseEmbedding"]
