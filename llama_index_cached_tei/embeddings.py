"""``CachedTEIEmbeddings``: a LlamaIndex ``BaseEmbedding`` from TEI with a persistent Qdrant cache."""

from __future__ import annotations

import os
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import AliasChoices, ConfigDict, Field, PrivateAttr, SecretStr, field_validator

from cached_tei import CachedEmbedder, CachedTEISettings
from cached_tei.adapter import EmbedderHolder

DEFAULT_EMBED_BATCH_SIZE = 32
"""TEI's default ``--max-client-batch-size``; the engine splits larger batches anyway."""

_UNKNOWN_MODEL = "unknown"


class CachedTEIEmbeddings(EmbedderHolder, BaseEmbedding):
    """Text embeddings from Hugging Face TEI, cached in Qdrant so no text is embedded twice.

    Every option of :class:`cached_tei.CachedTEISettings` can be passed by name; an option
    left unset (``None``) comes from its ``CACHED_TEI_*`` environment variable (or ``.env``)
    and then from the default. ``base_url``, ``text_instruction``, ``auth_token`` and
    ``truncate_text`` are accepted as in ``TextEmbeddingsInference``. Nothing touches the
    network until the first call; ``model_name`` is then read from TEI unless given.

    Example:
        .. code-block:: python

            from llama_index_cached_tei import CachedTEIEmbeddings

            embed_model = CachedTEIEmbeddings(tei_url="http://localhost:8080")
            vectors = embed_model.get_text_embedding_batch(["hello", "world"])
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model_name: str = Field(
        default=_UNKNOWN_MODEL, description="The model's name; read from TEI's /info unless given."
    )
    embed_batch_size: int = Field(
        default=DEFAULT_EMBED_BATCH_SIZE, gt=0, le=2048, description="Texts per engine call."
    )

    # --- TEI ---------------------------------------------------------------------------------
    tei_url: str | None = Field(
        None,
        validation_alias=AliasChoices("tei_url", "base_url"),
        description="TEI (or the nginx in front of several); env CACHED_TEI_URL.",
    )
    api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("api_key", "auth_token"),
        exclude=True,
        description="TEI's --api-key; env CACHED_TEI_API_KEY. Never serialised.",
    )
    timeout: float | None = Field(None, description="Seconds for one TEI request.")
    retry_deadline: float | None = Field(None, description="Seconds spent retrying a call.")
    max_retries: int | None = Field(None, description="Retries of one batch after its first try.")
    max_concurrency: int | None = Field(None, description="TEI requests in flight at once.")
    batch_size: int | None = Field(None, description="Texts per TEI request (capped by TEI).")
    max_payload_bytes: int | None = Field(None, description="Largest request body sent to TEI.")

    # --- what changes the vector ---------------------------------------------------------------
    normalize: bool | None = Field(None, description="L2-normalise vectors (TEI's normalize).")
    truncate: bool | None = Field(
        None,
        validation_alias=AliasChoices("truncate", "truncate_text"),
        description="Truncate long inputs; unset: the server's --auto-truncate.",
    )
    truncation_direction: str | None = Field(None, description="'Right' or 'Left'.")
    dimensions: int | None = Field(None, description="Matryoshka output size.")
    query_prompt_name: str | None = Field(None, description="TEI prompt_name for queries.")
    document_prompt_name: str | None = Field(None, description="TEI prompt_name for documents.")
    query_instruction: str | None = Field(None, description="Text prefix for queries (e5/bge).")
    document_instruction: str | None = Field(
        None,
        validation_alias=AliasChoices("document_instruction", "text_instruction"),
        description="Text prefix for documents (nodes).",
    )

    # --- the cache ------------------------------------------------------------------------------
    qdrant_url: str | None = Field(None, description="Qdrant server; unset: the embedded store.")
    qdrant_path: str | None = Field(None, description="Folder of the embedded store.")
    qdrant_api_key: SecretStr | None = Field(
        None, exclude=True, description="Qdrant API key; never serialised."
    )
    qdrant_prefer_grpc: bool | None = None
    qdrant_timeout: float | None = Field(None, description="Seconds for one Qdrant operation.")
    qdrant_shards: int | None = Field(None, description="shard_number for new collections.")
    qdrant_replication_factor: int | None = None
    collection_prefix: str | None = Field(None, description="Prefix of the cache collections.")
    ttl: float | None = Field(None, description="Seconds an entry is served; unset: forever.")
    store_text: bool | None = Field(None, description="Also store the text in the cache.")
    lru_bytes: int | None = Field(None, description="In-process LRU size in bytes; 0 = off.")
    write_through: bool | None = Field(None, description="Write to Qdrant before returning.")
    write_queue_size: int | None = None
    write_batch_size: int | None = None
    breaker_threshold: int | None = None
    breaker_cooldown: float | None = None

    _client: CachedEmbedder = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Validates the whole configuration now; the engine itself starts on first use.
        self._client = CachedEmbedder(CachedTEISettings.from_attributes(self))

    @classmethod
    def class_name(cls) -> str:
        return "CachedTEIEmbeddings"

    @field_validator("qdrant_path", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    # --- BaseEmbedding --------------------------------------------------------------------------
    def _get_query_embedding(self, query: str) -> Embedding:
        return self._named(self.client.embed_query(query))

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._named(await self.client.aembed_query(query))

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._named(self.client.embed_documents([text]))[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return self._named(await self.client.aembed_documents([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._named(self.client.embed_documents(texts))

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._named(await self.client.aembed_documents(texts))

    def _named(self, result: Any) -> Any:
        """Fill ``model_name`` from TEI's ``/info`` (already fetched) after the first call."""
        if self.model_name == _UNKNOWN_MODEL:
            self.model_name = self.client.info().model_id
        return result


__all__ = ["DEFAULT_EMBED_BATCH_SIZE", "CachedTEIEmbeddings"]
