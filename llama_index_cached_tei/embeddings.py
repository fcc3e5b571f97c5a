"""``CachedTEIEmbeddings``: a LlamaIndex ``BaseEmbedding`` from TEI with a Qdrant cache."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import ConfigDict, Field, SecretStr

from cached_tei.adapter import CachedTEIAdapter, check_texts, setting

DEFAULT_EMBED_BATCH_SIZE = 32
"""TEI's default ``--max-client-batch-size``; the engine splits larger batches anyway."""

_UNKNOWN_MODEL = "unknown"


class CachedTEIEmbeddings(CachedTEIAdapter, BaseEmbedding):
    """Text embeddings from Hugging Face TEI, cached in Qdrant so no text is embedded twice.

    Every option of :class:`cached_tei.CachedTEISettings` can be passed by name; an option
    left unset comes from its ``CACHED_TEI_*`` environment variable (or ``.env``) and then
    from the default, and the attributes show the values in effect. ``base_url``,
    ``text_instruction``, ``auth_token`` and ``truncate_text`` are accepted as in
    ``TextEmbeddingsInference``. ``read_cache=False`` recomputes every text (and refreshes the
    cache); ``write_cache=False`` keeps nothing. Nothing touches the network until the first
    call; ``model_name`` is then read from TEI unless given. Also importable as
    ``llama_index.embeddings.cached_tei``.

    Example:
        .. code-block:: python

            from llama_index.embeddings.cached_tei import CachedTEIEmbeddings

            embed_model = CachedTEIEmbeddings(base_url="http://localhost:8080")
            vectors = embed_model.get_text_embedding_batch(["hello", "world"])
    """

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(
        default=_UNKNOWN_MODEL, description="The model's name; read from TEI's /info unless given."
    )
    embed_batch_size: int = Field(
        default=DEFAULT_EMBED_BATCH_SIZE, gt=0, le=2048, description="Texts per engine call."
    )

    # TextEmbeddingsInference's names for these settings.
    tei_url: str | None = setting("tei_url", "base_url")
    api_key: SecretStr | None = setting("api_key", "auth_token")
    truncate: bool | None = setting("truncate", "truncate_text")
    document_instruction: str | None = setting("document_instruction", "text_instruction")

    @classmethod
    def class_name(cls) -> str:
        return "CachedTEIEmbeddings"

    # --- batches: a bare string is one text, not a list of characters --------------------------
    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        check_texts(texts)
        return super().get_text_embedding_batch(texts, show_progress, **kwargs)

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        check_texts(texts)
        return await super().aget_text_embedding_batch(texts, show_progress, **kwargs)

    # --- BaseEmbedding --------------------------------------------------------------------------
    def _get_query_embedding(self, query: str) -> Embedding:
        vector = self._client.embed_query(query)
        self._name_model()
        return vector

    async def _aget_query_embedding(self, query: str) -> Embedding:
        vector = await self._client.aembed_query(query)
        await self._aname_model()
        return vector

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aget_text_embeddings([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        vectors = self._client.embed_documents(texts)
        self._name_model()
        return vectors

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        vectors = await self._client.aembed_documents(texts)
        await self._aname_model()
        return vectors

    def _name_model(self) -> None:
        """Fill ``model_name`` from TEI's ``/info`` (already fetched by the first call)."""
        if self.model_name == _UNKNOWN_MODEL:
            self.model_name = self._client.info().model_id

    async def _aname_model(self) -> None:
        """:meth:`_name_model` without blocking the caller's event loop."""
        if self.model_name == _UNKNOWN_MODEL:
            self.model_name = (await self._client.ainfo()).model_id


__all__ = ["DEFAULT_EMBED_BATCH_SIZE", "CachedTEIEmbeddings"]
