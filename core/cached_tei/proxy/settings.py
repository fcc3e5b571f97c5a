"""The proxy's own settings, read from ``CACHED_TEI_PROXY_*`` environment variables and ``.env``."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from ..environment import environment_settings


class ProxySettings(BaseSettings):
    """How ``cached-tei serve`` listens and what it accepts.

    The upstream (TEI or nginx) and the cache come from :class:`cached_tei.CachedTEISettings`.
    """

    model_config = environment_settings("CACHED_TEI_PROXY_")

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 in a container).")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    api_keys: SecretStr | None = Field(
        None,
        description="Comma-separated keys; when set, every route but /health and /metrics "
        "needs 'Authorization: Bearer <key>'.",
    )
    share_cache: bool = Field(
        False,
        description="With several API keys, share one cache across them; by default each key "
        "has its own namespace, so that no client learns what another embedded.",
    )
    workers: int | Literal["auto"] = Field(
        1,
        description="Worker processes; 'auto' is one per CPU this process may use. More than "
        "one needs a Qdrant server (qdrant_url): an embedded folder has one opener.",
    )
    max_body_bytes: int = Field(
        2_000_000, ge=1024, description="Largest request body accepted (TEI's --payload-limit)."
    )
    max_inputs: int = Field(
        1024, ge=1, description="Most texts in one request; larger batches than TEI's are split."
    )
    health_timeout: float = Field(5.0, gt=0, description="Seconds /health waits for the upstream.")
    graceful_timeout: float = Field(
        30.0, gt=0, description="Seconds a shutdown waits for in-flight requests."
    )
    access_log: bool = Field(False, description="Log every request (costs throughput).")
    log_level: str = Field("info", description="debug, info, warning or error.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("workers")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if value != "auto" and int(value) < 1:
            raise ValueError(f"workers must be at least 1 or 'auto', got {value!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.lower()
        if level not in ("critical", "error", "warning", "info", "debug"):
            raise ValueError(f"log_level must be debug, info, warning or error, got {value!r}")
        return level

    def keys(self) -> list[bytes]:
        """The API keys, as bytes (empty: no authentication)."""
        if self.api_keys is None:
            return []
        raw = self.api_keys.get_secret_value().split(",")
        return [key.strip().encode("utf-8") for key in raw if key.strip()]

    def worker_count(self) -> int:
        """``workers`` as a number: ``auto`` is the CPUs this process may run on."""
        if self.workers == "auto":
            return len(os.sched_getaffinity(0))
        return self.workers
