"""The proxy's own settings, read from ``CACHED_TEI_PROXY_*`` environment variables and ``.env``."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
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
    metrics_key: SecretStr | None = Field(
        None,
        description="When set, GET /metrics needs 'Authorization: Bearer <metrics key>' "
        "(the API keys do not open it); unset, /metrics is public.",
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
    header_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a connection has to send a request's headers (from its opening or "
        "its previous answer); then it is closed.",
    )
    body_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a client has to send a request's whole body; then 408 and the "
        "connection is closed.",
    )
    send_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a client may read nothing of an answer waiting for it; then the "
        "connection is aborted and the answer dropped.",
    )
    keep_alive_timeout: int = Field(
        5, ge=1, description="Seconds an idle keep-alive connection is kept open."
    )
    access_log: bool = Field(False, description="Log every request (costs throughput).")
    log_level: str = Field("info", description="debug, info, warning or error.")

    @field_validator("api_keys", "metrics_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("api_keys", "metrics_key")
    @classmethod
    def _holds_a_key(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # A blank list (" ", ",", a tab) must not quietly turn authentication off.
        if value is not None and not _split(value):
            variable = f"CACHED_TEI_PROXY_{str(info.field_name).upper()}"
            raise ValueError(
                f"{variable} is set but holds no key (only blanks or commas): set it to "
                "comma-separated keys, or unset it (or set it empty) to serve without one"
            )
        return value

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
        return [] if self.api_keys is None else _split(self.api_keys)

    def metrics_keys(self) -> list[bytes]:
        """The keys that open /metrics (empty: it is public)."""
        return [] if self.metrics_key is None else _split(self.metrics_key)

    def worker_count(self) -> int:
        """``workers`` as a number: ``auto`` is the CPUs this process may run on."""
        if self.workers == "auto":
            return len(os.sched_getaffinity(0))
        return self.workers


def _split(keys: SecretStr) -> list[bytes]:
    return [
        key.strip().encode("utf-8") for key in keys.get_secret_value().split(",") if key.strip()
    ]
