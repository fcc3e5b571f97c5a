"""One settings object, read from ``CACHED_TEI_*`` environment variables and ``.env``."""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

log = logging.getLogger(__name__)

TruncationDirection = Literal["Right", "Left"]

PREFIX = "CACHED_TEI_"
# Read by the test suite, not by a settings class.
TEST_VARIABLES = frozenset({"CACHED_TEI_SOAK_SECONDS", "CACHED_TEI_FAULTS_REPORT"})
# BaseSettings' own keyword arguments (_env_file, _case_sensitive...).
_BASE_ARGUMENTS = frozenset(
    name for name in inspect.signature(BaseSettings.__init__).parameters if name.startswith("_")
)


def default_qdrant_path() -> Path:
    """The embedded store's folder: ``$XDG_CACHE_HOME/cached-tei/qdrant`` (default
    ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cached-tei" / "qdrant"


def environment_settings(prefix: str, *, populate_by_name: bool = False) -> SettingsConfigDict:
    """The configuration every cached-tei settings class shares: variables named
    ``<prefix><FIELD>``, read from the environment and ``.env``, frozen once built."""
    return SettingsConfigDict(
        env_prefix=prefix,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=populate_by_name,
    )


class CachedTEISettings(BaseSettings):
    """Everything cached-tei can be configured with.

    Each field reads ``CACHED_TEI_<FIELD>`` (``tei_url`` reads ``CACHED_TEI_URL``) and can be
    overridden by passing it by name; ``None`` leaves a field unset (the environment, then the
    default decide). A name that is not a setting is an error; a ``CACHED_TEI_*`` variable that
    no setting reads is logged as a warning. Secrets are ``SecretStr`` and never appear in reprs.
    """

    model_config = environment_settings(PREFIX, populate_by_name=True)

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
    min_free_disk_bytes: int | None = Field(
        None,
        ge=0,
        description="Embedded store: free disk kept; below it the cache stops writing. "
        "None = the store's next growth (one write step, at most 512 KiB of vectors, plus 8 MiB).",
    )
    max_open_collections: int = Field(
        32, ge=1, description="Embedded store: collections kept open; the least used close."
    )
    breaker_threshold: int = Field(3, ge=1, description="Qdrant failures that open the breaker.")
    breaker_cooldown: float = Field(30.0, gt=0, description="Seconds Qdrant is skipped then.")
    read_cache: bool = Field(True, description="Serve vectors from the cache (off: no-cache).")
    write_cache: bool = Field(True, description="Keep new vectors in the cache (off: no-store).")

    def __init__(self, **values: Any) -> None:
        unknown = [name for name in values if name not in _argument_names(type(self))]
        if unknown:
            raise _unknown_settings(type(self), unknown, values)
        # None leaves a field unset; BaseSettings' own arguments keep theirs (_env_file=None).
        super().__init__(
            **{k: v for k, v in values.items() if v is not None or k in _BASE_ARGUMENTS}
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        warn_unknown_variables(os.environ, "the environment")
        if isinstance(dotenv_settings, DotEnvSettingsSource):
            warn_unknown_variables(dotenv_settings.env_vars, str(dotenv_settings.env_file))
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    @property
    def cache_location(self) -> str:
        """Where the cache is, for messages: the server's URL without credentials, or the
        embedded store's folder."""
        if self.qdrant_url is None:
            return str(self.qdrant_path)
        from .redact import redact_url

        return redact_url(self.qdrant_url)

    @classmethod
    def from_attributes(cls, source: object) -> CachedTEISettings:
        """Settings from an object with attributes named like the fields (an adapter's
        configuration); an attribute that is None is unset, so it comes from the environment."""
        given: dict[str, Any] = {}
        for name in cls.model_fields:
            value = getattr(source, name, None)
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


# ---------------------------------------------------------------------------- names
@functools.cache
def _argument_names(model: type[BaseSettings]) -> frozenset[str]:
    names = set(_BASE_ARGUMENTS)
    for name, field in model.model_fields.items():
        names.add(name)
        if isinstance(field.validation_alias, AliasChoices):
            names.update(c for c in field.validation_alias.choices if isinstance(c, str))
    return frozenset(names)


def _unknown_settings(
    model: type[BaseSettings], unknown: list[str], values: dict[str, Any]
) -> ValidationError:
    errors = []
    for name in unknown:
        close = difflib.get_close_matches(name, list(model.model_fields), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        error = PydanticCustomError(
            "extra_forbidden", "{name} is not a setting{hint}", {"name": repr(name), "hint": hint}
        )
        errors.append(InitErrorDetails(type=error, loc=(name,), input=values[name]))
    return ValidationError.from_exception_data(model.__name__, errors)


def environment_variable(model: type[BaseSettings], name: str) -> str:
    """The variable a settings field reads (``tei_url``: ``CACHED_TEI_URL``)."""
    prefix = model.model_config.get("env_prefix", "")
    alias = model.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        for choice in alias.choices:
            if isinstance(choice, str) and choice.upper().startswith(prefix.upper()):
                return choice.upper()
    return f"{prefix}{name}".upper()


@functools.cache
def known_variables() -> frozenset[str]:
    """Every ``CACHED_TEI_*`` variable something reads: the settings classes', the tests'."""
    from .logs import LogSettings
    from .proxy.settings import ProxySettings

    models: tuple[type[BaseSettings], ...] = (CachedTEISettings, ProxySettings, LogSettings)
    return TEST_VARIABLES | {
        environment_variable(model, name) for model in models for name in model.model_fields
    }


_warned: set[str] = set()


def warn_unknown_variables(names: Iterable[str], where: str) -> None:
    """Log one warning per ``CACHED_TEI_*`` name that no setting reads (a likely typo)."""
    for name in sorted({name.upper() for name in names if name.upper().startswith(PREFIX)}):
        if name in _warned or name in known_variables():
            continue
        _warned.add(name)
        suffixes = [known[len(PREFIX) :] for known in known_variables()]
        close = difflib.get_close_matches(name[len(PREFIX) :], suffixes, n=1)
        hint = f"; did you mean {PREFIX}{close[0]}?" if close else ""
        log.warning("%s (in %s) is not a cached-tei setting%s", name, where, hint)
