"""``CachedTEIEmbeddings``: LangChain ``Embeddings`` from TEI with a persistent Qdrant cache."""

from __future__ import annotations

import os
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.utils import from_env, secret_from_env
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from typing_extensions import Self

from cached_tei import CachedEmbedder, CachedTEISettings
from cached_tei.adapter import EmbedderHolder


class CachedTEIEmbeddings(EmbedderHolder, BaseModel, Embeddings):
    """Text embeddings from Hugging Face TEI, cached in Qdrant so no text is embedded twice.

    Every option of :class:`cached_tei.CachedTEISettings` can be passed by name; an option
    left unset (``None``) comes from its ``CACHED_TEI_*`` environment variable (or ``.env``)
    and then from the default. Nothing touches the network until the first call.

    Example:
        .. code-block:: python

            from langchain_cached_tei import CachedTEIEmbeddings

            embeddings = CachedTEIEmbeddings(
                tei_url="http://localhost:8080",
                query_instruction="query: ",
                document_instruction="passage: ",
            )
            vectors = embeddings.embed_documents(["hello", "world"])
            query = embeddings.embed_query("hi")
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    # --- TEI ---------------------------------------------------------------------------------
    tei_url: str | None = Field(
        default_factory=from_env("CACHED_TEI_URL", default=None),
        description="TEI (or the nginx in front of several); env CACHED_TEI_URL.",
    )
    api_key: SecretStr | None = Field(
        default_factory=secret_from_env("CACHED_TEI_API_KEY", default=None),
        description="TEI's --api-key; env CACHED_TEI_API_KEY.",
    )
    timeout: float | None = Field(None, description="Seconds for one TEI request.")
    retry_deadline: float | None = Field(None, description="Seconds spent retrying a call.")
    max_retries: int | None = Field(None, description="Retries of one batch after its first try.")
    max_concurrency: int | None = Field(None, description="TEI requests in flight at once.")
    batch_size: int | None = Field(None, description="Texts per TEI request (capped by TEI).")
    max_payload_bytes: int | None = Field(None, description="Largest request body sent to TEI.")

    # --- what changes the vector ---------------------------------------------------------------
    normalize: bool | None = Field(None, description="L2-normalise vectors (TEI's normalize).")
    truncate: bool | None = Field(None, description="Truncate long inputs; unset: the server's.")
    truncation_direction: str | None = Field(None, description="'Right' or 'Left'.")
    dimensions: int | None = Field(None, description="Matryoshka output size.")
    query_prompt_name: str | None = Field(None, description="TEI prompt_name for queries.")
    document_prompt_name: str | None = Field(None, description="TEI prompt_name for documents.")
    query_instruction: str | None = Field(None, description="Text prefix for queries (e5/bge).")
    document_instruction: str | None = Field(None, description="Text prefix for documents.")

    # --- the cache ------------------------------------------------------------------------------
    qdrant_url: str | None = Field(
        default_factory=from_env("CACHED_TEI_QDRANT_URL", default=None),
        description="Qdrant server; unset: the embedded store at qdrant_path.",
    )
    qdrant_path: str | None = Field(None, description="Folder of the embedded store.")
    qdrant_api_key: SecretStr | None = Field(
        default_factory=secret_from_env("CACHED_TEI_QDRANT_API_KEY", default=None),
        description="Qdrant API key; env CACHED_TEI_QDRANT_API_KEY.",
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

    @field_validator("qdrant_path", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @model_validator(mode="after")
    def _build_client(self) -> Self:
        """Validate the whole configuration now; the engine itself starts on first use."""
        self._client = CachedEmbedder(CachedTEISettings.from_attributes(self))
        return self

    # --- Embeddings ---------------------------------------------------------------------------
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (document prompt/instruction applied); one vector per text."""
        return self.client.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (query prompt/instruction applied)."""
        return self.client.embed_query(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async :meth:`embed_documents`, native (no thread pool), from any event loop."""
        return await self.client.aembed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query`, native (no thread pool), from any event loop."""
        return await self.client.aembed_query(text)


__all__ = ["CachedTEIEmbeddings"]
