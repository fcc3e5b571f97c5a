"""One settings object, read from ``CACHED_TEI_*`` environment variables and ``.env``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TruncationDirection = Literal["Right", "Left"]


def default_qdrant_path() -> Path:
    """The embedded store's folder: ``$XDG_CACHE_HOME/cached-tei/qdrant`` (default
    ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cached-tei" / "qdrant"


class CachedTEISettings(BaseSettings):
    """Everything cached-tei can be configured with.

    Each field reads ``CACHED_TEI_<FIELD>`` (``tei_url`` reads ``CACHED_TEI_URL``) and can be
    overridden by passing it by name. Secrets are ``SecretStr`` and never appear in reprs.
    """

    model_config = SettingsConfigDict(
        env_prefix="CACHED_TEI_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    # --- TEI -------------------------------------------------------------------------------
    tei_url: str = Field(
        "http://localhost:8080",
        validation_alias=AliasChoices("tei_url", "CACHED_TEI_URL"),
        description="TEI, or the nginx that balances several TEI servers.",
    )
    api_key: SecretStr | None = Field(None, description="TEI's --api-key, sent as a Bearer token.")
    timeout: float = Field(60.0, gt=0, description="Seconds for one TEI request.")
    retry_deadline: float = Field(
        120.0, gt=0, description="Seconds a call may spend retrying transient TEI failures."
    )
    max_retries: int = Field(10, ge=0, description="Retries of one batch after its first try.")
    max_concurrency: int = Field(16, ge=1, description="TEI requests in flight at once.")
    batch_size: int | None = Field(
        None, ge=1, description="Texts per TEI request; capped by /info's max_client_batch_size."
    )
    max_payload_bytes: int = Field(
        2_000_000, ge=1024, description="Largest request body sent to TEI (its --payload-limit)."
    )
    batch_window: float = Field(
        0.002,
        ge=0,
        description="Seconds to wait for concurrent calls' misses to share a TEI request; 0 = off.",
    )

    # --- what changes the vector (part of the cache namespace) ------------------------------
    normalize: bool = True
    truncate: bool | None = Field(None, description="None: the server's --auto-truncate.")
    truncation_direction: TruncationDirection = "Right"
    dimensions: int | None = Field(None, ge=1, description="Matryoshka output size.")
    query_prompt_name: str | None = None
    document_prompt_name: str | None = None
    query_instruction: str = Field("", description="Plain-text prefix added to each query.")
    document_instruction: str = Field("", description="Plain-text prefix added to each document.")

    # --- the cache --------------------------------------------------------------------------
    qdrant_url: str | None = Field(None, description="Qdrant server; unset = embedded store.")
    qdrant_path: Path = Field(default_factory=default_qdrant_path)
    qdrant_api_key: SecretStr | None = None
    qdrant_prefer_grpc: bool = False
    qdrant_timeout: float = Field(5.0, gt=0, description="Seconds for one Qdrant operation.")
    qdrant_shards: int | None = Field(None, ge=1, description="shard_number for new collections.")
    qdrant_replication_factor: int | None = Field(None, ge=1)
    collection_prefix: str = Field("cached_tei", pattern=r"^[A-Za-z0-9_-]+$")
    ttl: float | None = Field(None, gt=0, description="Seconds an entry is served; None = forever.")
    prune_interval: float | None = Field(
        None,
        gt=0,
        description="Seconds between deletions of expired entries (with a TTL); "
        "None = the smaller of the TTL and 60 s.",
    )
    store_text: bool = Field(False, description="Also store the text in the entry's payload.")
    lru_bytes: int = Field(64 * 2**20, ge=0, description="In-process LRU size in bytes; 0 = off.")
    write_through: bool = Field(False, description="Write to Qdrant before returning.")
    write_queue_size: int = Field(50_000, ge=1, description="Vectors waiting to be written.")
    write_batch_size: int = Field(512, ge=1, description="Vectors per Qdrant upsert.")
    breaker_threshold: int = Field(3, ge=1, description="Qdrant failures that open the breaker.")
    breaker_cooldown: float = Field(30.0, gt=0, description="Seconds Qdrant is skipped then.")
    read_cache: bool = Field(True, description="Serve vectors from the cache (off: no-cache).")
    write_cache: bool = Field(True, description="Keep new vectors in the cache (off: no-store).")

    @classmethod
    def from_attributes(cls, source: object) -> CachedTEISettings:
        """Settings from an object with attributes named like the fields (an adapter's
        configuration); an attribute that is None is unset, so it comes from the environment."""
        given: dict[str, Any] = {}
        for name in cls.model_fields:
            value = getattr(source, name, None)
            if value is not None:
                given[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return cls(**given)

    @field_validator("api_key", "qdrant_api_key", mode="before")
    @classmethod
    def _empty_secret_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator(
        "qdrant_url", "ttl", "prune_interval", "truncate", "dimensions", "batch_size", mode="before"
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("truncation_direction", mode="before")
    @classmethod
    def _capitalise_direction(cls, value: Any) -> Any:
        return value.capitalize() if isinstance(value, str) else value

    @field_validator("tei_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"tei_url must start with http:// or https://, got {value!r}")
        return value.rstrip("/")
