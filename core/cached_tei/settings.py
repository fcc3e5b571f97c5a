"""One settings object, read from ``CACHED_TEI_*`` environment variables and ``.env``."""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
import os
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    JsonValue,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, DotEnvSettingsSource, PydanticBaseSettingsSource

from .environment import environment_settings
from .environment import environment_variable as environment_variable  # re-exported

log = logging.getLogger(__name__)

TruncationDirection = Literal["Right", "Left"]
# Where each setting applies, declared on its field: per call (a face's cache flags), per vector
# (the face's EmbedOptions, part of the namespace), or per engine (shared by faces that agree).
Scope = Literal["call", "vector", "engine"]
CALL: dict[str, JsonValue] = {"scope": "call"}
VECTOR: dict[str, JsonValue] = {"scope": "vector"}
ENGINE: dict[str, JsonValue] = {"scope": "engine"}

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
        json_schema_extra=ENGINE,
    )
    api_key: SecretStr | None = Field(
        None, description="TEI's --api-key, sent as a Bearer token.", json_schema_extra=ENGINE
    )
    timeout: float = Field(
        60.0, gt=0, description="Seconds for one TEI request.", json_schema_extra=ENGINE
    )
    retry_deadline: float = Field(
        120.0,
        gt=0,
        description="Seconds a call may spend retrying transient TEI failures.",
        json_schema_extra=ENGINE,
    )
    max_retries: int = Field(
        10, ge=0, description="Retries of one batch after its first try.", json_schema_extra=ENGINE
    )
    max_concurrency: int = Field(
        16, ge=1, description="TEI requests in flight at once.", json_schema_extra=ENGINE
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Texts per TEI request; unset = /info's max_client_batch_size (the cap).",
        json_schema_extra=ENGINE,
    )
    max_payload_bytes: int = Field(
        2_000_000,
        ge=1024,
        description="Largest request body sent to TEI (its --payload-limit).",
        json_schema_extra=ENGINE,
    )
    batch_window: float = Field(
        0.002,
        ge=0,
        description="Deprecated: 0 turns off sharing TEI requests between concurrent calls; "
        "other values are ignored (misses wait only while every slot is busy).",
        json_schema_extra=ENGINE,
    )
    tei_replicas: int | None = Field(
        None,
        ge=1,
        description="TEI servers behind tei_url: at least this many requests stay in flight "
        "before misses wait to share one; more are learned from TEI's x-queue-time.",
        json_schema_extra=ENGINE,
    )
    info_refresh: float = Field(
        60.0,
        gt=0,
        description="Seconds between re-reads of TEI's /info (a new model's namespace).",
        json_schema_extra=ENGINE,
    )
    sparse_url: str | None = Field(
        None,
        validation_alias=AliasChoices("sparse_url", "CACHED_TEI_SPARSE_URL"),
        description="TEI serving a sparse (SPLADE) model, for CachedSparseEmbedder, `embed "
        "--sparse` and the proxy's /embed_sparse; unset = sparse calls are refused (the proxy "
        "forwards /embed_sparse to tei_url).",
        json_schema_extra=ENGINE,
    )
    rerank_url: str | None = Field(
        None,
        validation_alias=AliasChoices("rerank_url", "CACHED_TEI_RERANK_URL"),
        description="TEI serving a reranker, for CachedReranker and the proxy's /rerank; unset = "
        "rerank calls are refused (the proxy forwards /rerank to tei_url).",
        json_schema_extra=ENGINE,
    )

    # --- what changes the vector (part of the cache namespace) ------------------------------
    normalize: bool = Field(
        True, description="TEI's normalize: unit-length vectors.", json_schema_extra=VECTOR
    )
    truncate: bool | None = Field(
        None,
        description="TEI's truncate: cut texts longer than the model's limit; "
        "unset = the server's --auto-truncate.",
        json_schema_extra=VECTOR,
    )
    truncation_direction: TruncationDirection = Field(
        "Right",
        description="Which end a truncated text loses: Right or Left (any case).",
        json_schema_extra=VECTOR,
    )
    dimensions: int | None = Field(
        None,
        ge=1,
        description="Matryoshka output size; unset = the model's.",
        json_schema_extra=VECTOR,
    )
    query_prompt_name: str | None = Field(
        None,
        description="TEI's prompt_name for queries (a prompt of the model's "
        "sentence-transformers config); unset = none.",
        json_schema_extra=VECTOR,
    )
    document_prompt_name: str | None = Field(
        None,
        description="TEI's prompt_name for documents; unset = none.",
        json_schema_extra=VECTOR,
    )
    query_instruction: str = Field(
        "", description="Plain-text prefix added to each query.", json_schema_extra=VECTOR
    )
    document_instruction: str = Field(
        "", description="Plain-text prefix added to each document.", json_schema_extra=VECTOR
    )

    # --- the cache --------------------------------------------------------------------------
    qdrant_url: str | None = Field(
        None, description="Qdrant server; unset = embedded store.", json_schema_extra=ENGINE
    )
    qdrant_path: Path = Field(
        default_factory=default_qdrant_path,
        description="The embedded store's folder (without qdrant_url); "
        "default $XDG_CACHE_HOME/cached-tei/qdrant.",
        json_schema_extra=ENGINE,
    )
    qdrant_api_key: SecretStr | None = Field(
        None, description="The Qdrant server's API key.", json_schema_extra=ENGINE
    )
    qdrant_prefer_grpc: bool = Field(
        False,
        description="Talk to the Qdrant server over gRPC (port 6334) instead of REST.",
        json_schema_extra=ENGINE,
    )
    qdrant_timeout: float = Field(
        5.0, gt=0, description="Seconds for one Qdrant operation.", json_schema_extra=ENGINE
    )
    qdrant_shards: int | None = Field(
        None,
        ge=1,
        description="shard_number for new collections; unset = the server's default.",
        json_schema_extra=ENGINE,
    )
    qdrant_replication_factor: int | None = Field(
        None,
        ge=1,
        description="replication_factor for new collections; unset = the server's default.",
        json_schema_extra=ENGINE,
    )
    collection_prefix: str = Field(
        "cached_tei",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Prefix of the cache's collections (letters, digits, _ and -); "
        "change it to start a separate cache.",
        json_schema_extra=ENGINE,
    )
    ttl: float | None = Field(
        None,
        gt=0,
        description="Seconds an entry is served; unset = forever.",
        json_schema_extra=ENGINE,
    )
    prune_interval: float | None = Field(
        None,
        gt=0,
        description="Seconds between deletions of expired entries (with a TTL); "
        "unset = the smaller of the TTL and 60 s.",
        json_schema_extra=ENGINE,
    )
    store_text: bool = Field(
        False,
        description="Also store the text in the entry's payload.",
        json_schema_extra=ENGINE,
    )
    lru_bytes: int = Field(
        64 * 2**20,
        ge=0,
        description="In-process LRU size in bytes; 0 = off.",
        json_schema_extra=ENGINE,
    )
    write_through: bool = Field(
        False, description="Write to Qdrant before returning.", json_schema_extra=ENGINE
    )
    write_queue_size: int = Field(
        50_000, ge=1, description="Vectors waiting to be written.", json_schema_extra=ENGINE
    )
    write_batch_size: int = Field(
        512, ge=1, description="Vectors per Qdrant upsert.", json_schema_extra=ENGINE
    )
    breaker_threshold: int = Field(
        3, ge=1, description="Qdrant failures that open the breaker.", json_schema_extra=ENGINE
    )
    breaker_cooldown: float = Field(
        30.0, gt=0, description="Seconds Qdrant is skipped then.", json_schema_extra=ENGINE
    )
    read_cache: bool = Field(
        True, description="Serve vectors from the cache (off: no-cache).", json_schema_extra=CALL
    )
    write_cache: bool = Field(
        True,
        description="Keep new vectors in the cache (off: no-store).",
        json_schema_extra=CALL,
    )
    min_free_disk_bytes: int | None = Field(
        None,
        ge=0,
        description="Embedded store: free disk kept; below it the cache stops writing. "
        "unset = the store's next growth (one write step, at most 512 KiB of vectors, plus 8 MiB).",
        json_schema_extra=ENGINE,
    )
    max_open_collections: int = Field(
        32,
        ge=1,
        description="Embedded store: collections kept open; the least used close.",
        json_schema_extra=ENGINE,
    )

    def __init__(self, **values: Any) -> None:
        reject_unknown_arguments(type(self), values, _BASE_ARGUMENTS)
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


# ---------------------------------------------------------------------------- scopes
def settings_of_scope(*scopes: Scope) -> frozenset[str]:
    """The names of the settings declared with one of ``scopes``."""
    return frozenset(
        name
        for name, field in CachedTEISettings.model_fields.items()
        if isinstance(field.json_schema_extra, dict)
        and field.json_schema_extra.get("scope") in scopes
    )


_unscoped = set(CachedTEISettings.model_fields) - settings_of_scope("call", "vector", "engine")
if _unscoped:
    raise TypeError(
        f"settings {sorted(_unscoped)} declare no scope: add json_schema_extra=CALL, VECTOR or "
        "ENGINE to their Field"
    )

# Settings that each face applies per call (EmbedOptions, cache flags): not part of the
# engine; the proxy takes them per request, as TEI's API does.
FACE_SETTINGS = settings_of_scope("call", "vector")


# ---------------------------------------------------------------------------- names
@functools.cache
def _argument_names(model: type[BaseModel]) -> frozenset[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(name)
        names.update(a for a in (field.alias, field.validation_alias) if isinstance(a, str))
        if isinstance(field.validation_alias, AliasChoices):
            names.update(c for c in field.validation_alias.choices if isinstance(c, str))
    return frozenset(names)


def reject_unknown_arguments(
    model: type[BaseModel], values: Mapping[str, Any], also: frozenset[str] = frozenset()
) -> None:
    """Raise a ValidationError naming each of ``values`` that is neither a field of ``model``
    (or an alias) nor in ``also``, with the closest name it takes: the settings and the
    adapters answer a misspelling the same way."""
    known = _argument_names(model)
    unknown = [name for name in values if name not in known and name not in also]
    if not unknown:
        return
    errors = []
    for name in unknown:
        # Every name an argument may take (a framework's alias too), not the variables'.
        names = [known_name for known_name in known if not known_name.isupper()]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        error = PydanticCustomError(
            "extra_forbidden", "{name} is not a setting{hint}", {"name": repr(name), "hint": hint}
        )
        errors.append(InitErrorDetails(type=error, loc=(name,), input=values[name]))
    raise ValidationError.from_exception_data(model.__name__, errors)


SECRET_SETTINGS = frozenset(
    name
    for name, field in CachedTEISettings.model_fields.items()
    if field.annotation is SecretStr or SecretStr in typing.get_args(field.annotation)
)
"""The settings that hold secrets (never logged, never pickled when read from the environment)."""


@functools.cache
def _engine_variables() -> frozenset[str]:
    return frozenset(
        environment_variable(CachedTEISettings, name) for name in CachedTEISettings.model_fields
    )


@functools.cache
def known_variables() -> frozenset[str]:
    """Every ``CACHED_TEI_*`` variable something reads: the settings classes', the tests'."""
    from .logs import LogSettings  # each imports only .environment: no circle
    from .proxy.settings import ProxySettings

    models: tuple[type[BaseSettings], ...] = (CachedTEISettings, ProxySettings, LogSettings)
    return TEST_VARIABLES | {
        environment_variable(model, name) for model in models for name in model.model_fields
    }


# Process-wide (see process.py); a forked child inherits it: what its parent warned about
# is not warned again.
_warned: set[str] = set()


def warn_unknown_variables(names: Iterable[str], where: str) -> None:
    """Log one warning per ``CACHED_TEI_*`` name that no setting reads (a likely typo)."""
    for name in sorted({name.upper() for name in names if name.upper().startswith(PREFIX)}):
        # The engine's own names are known without importing the other settings classes.
        if name in _warned or name in _engine_variables() or name in known_variables():
            continue
        _warned.add(name)
        suffixes = [known[len(PREFIX) :] for known in known_variables()]
        close = difflib.get_close_matches(name[len(PREFIX) :], suffixes, n=1)
        hint = f"; did you mean {PREFIX}{close[0]}?" if close else ""
        log.warning("%s (in %s) is not a cached-tei setting%s", name, where, hint)
