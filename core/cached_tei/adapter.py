"""What the framework adapters share: the settings fields, declared once, and the plain face
they delegate to (:class:`FaceAdapter`; :class:`CachedTEIAdapter` for dense embeddings).

Each field of :class:`CachedTEISettings` is a field of every adapter, declared here once. Its
default is ``None`` (unset: the ``CACHED_TEI_*`` environment variable, then the default); once
built, the adapter's fields hold the effective values, so attributes and ``repr`` show what
runs. Secrets are never serialised. An adapter adds only its framework's aliases, with
:func:`setting`; a field that drifts from :class:`CachedTEISettings` fails at import.
"""

from __future__ import annotations

import os
import types
import typing
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any, Generic, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from typing_extensions import Self

from .embedder import CachedEmbedder
from .engine import prepare_texts
from .face import Face
from .settings import (
    SECRET_SETTINGS,
    CachedTEISettings,
    TruncationDirection,
    reject_unknown_arguments,
)
from .stats import Stats


def _is_secret(annotation: Any) -> bool:
    return SecretStr in _optional(annotation)


def _optional(annotation: Any) -> frozenset[Any]:
    """The members of ``annotation | None``, a path counted as a ``str``."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    members = typing.get_args(annotation) if union else (annotation,)
    return frozenset(str if member is Path else member for member in (*members, type(None)))


def setting(name: str, *aliases: str) -> Any:
    """The adapter field for the setting ``name`` (unset by default, immutable once built),
    described as in :class:`CachedTEISettings`; ``aliases`` are extra names the framework's
    users know it by (``base_url`` for ``tei_url``...)."""
    source = CachedTEISettings.model_fields[name]
    return Field(
        None,
        validation_alias=AliasChoices(name, *aliases) if aliases else None,
        description=source.description,
        exclude=_is_secret(source.annotation),
        frozen=True,
    )


FaceT = TypeVar("FaceT", bound=Face)  # CachedEmbedder, CachedSparseEmbedder, CachedReranker


class FaceAdapter(BaseModel, Generic[FaceT]):
    """The configuration and lifecycle of an adapter over the plain face ``FaceT``: mixed in
    before the framework's base; a subclass says which face in :meth:`_connect`."""

    model_config = ConfigDict(extra="forbid")

    # --- TEI ---------------------------------------------------------------------------------
    tei_url: str | None = setting("tei_url")
    api_key: SecretStr | None = setting("api_key")
    timeout: float | None = setting("timeout")
    retry_deadline: float | None = setting("retry_deadline")
    max_retries: int | None = setting("max_retries")
    max_concurrency: int | None = setting("max_concurrency")
    batch_size: int | None = setting("batch_size")
    max_payload_bytes: int | None = setting("max_payload_bytes")
    batch_window: float | None = setting("batch_window")
    sparse_url: str | None = setting("sparse_url")
    rerank_url: str | None = setting("rerank_url")
    tei_replicas: int | None = setting("tei_replicas")
    info_refresh: float | None = setting("info_refresh")

    # --- what changes the vector ---------------------------------------------------------------
    normalize: bool | None = setting("normalize")
    truncate: bool | None = setting("truncate")
    truncation_direction: TruncationDirection | None = setting("truncation_direction")
    dimensions: int | None = setting("dimensions")
    query_prompt_name: str | None = setting("query_prompt_name")
    document_prompt_name: str | None = setting("document_prompt_name")
    query_instruction: str | None = setting("query_instruction")
    document_instruction: str | None = setting("document_instruction")

    # --- the cache ------------------------------------------------------------------------------
    qdrant_url: str | None = setting("qdrant_url")
    qdrant_path: str | None = setting("qdrant_path")  # a str, so frameworks can JSON it
    qdrant_api_key: SecretStr | None = setting("qdrant_api_key")
    qdrant_prefer_grpc: bool | None = setting("qdrant_prefer_grpc")
    qdrant_timeout: float | None = setting("qdrant_timeout")
    qdrant_shards: int | None = setting("qdrant_shards")
    qdrant_replication_factor: int | None = setting("qdrant_replication_factor")
    collection_prefix: str | None = setting("collection_prefix")
    ttl: float | None = setting("ttl")
    prune_interval: float | None = setting("prune_interval")
    store_text: bool | None = setting("store_text")
    lru_bytes: int | None = setting("lru_bytes")
    write_through: bool | None = setting("write_through")
    write_queue_size: int | None = setting("write_queue_size")
    write_batch_size: int | None = setting("write_batch_size")
    min_free_disk_bytes: int | None = setting("min_free_disk_bytes")
    max_open_collections: int | None = setting("max_open_collections")
    breaker_threshold: int | None = setting("breaker_threshold")
    breaker_cooldown: float | None = setting("breaker_cooldown")
    read_cache: bool | None = setting("read_cache")
    write_cache: bool | None = setting("write_cache")

    _client: FaceT = PrivateAttr()
    # The secrets given as arguments: only these are pickled.
    _given_secrets: frozenset[str] = PrivateAttr(frozenset())

    def __init__(self, **data: Any) -> None:
        reject_unknown_arguments(type(self), data)
        super().__init__(**data)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        check_fields(cls)

    @field_validator("qdrant_path", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("truncation_direction", mode="before")
    @classmethod
    def _direction_as_settings_take_it(cls, value: Any) -> Any:
        return CachedTEISettings._capitalise_direction(value)  # "left" -> "Left"

    @model_validator(mode="after")
    def _build_client(self) -> Self:
        """Validate the whole configuration now and show its effective values; the engine
        itself starts on first use."""
        self._configure()
        return self

    def _configure(self) -> None:
        settings = CachedTEISettings.from_attributes(self)
        self._client = self._connect(settings)
        self._given_secrets = frozenset(n for n in SECRET_SETTINGS if getattr(self, n) is not None)
        for name in CachedTEISettings.model_fields:
            value = getattr(settings, name)
            self.__dict__[name] = str(value) if isinstance(value, PurePath) else value

    @abstractmethod
    def _connect(self, settings: CachedTEISettings) -> FaceT:
        """The plain face for ``settings`` (it touches no network until its first call)."""

    # --- pickling -----------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """The fields, less the secrets read from the environment (the copy reads them again
        where it is unpickled); the engine is rebuilt from the fields."""
        state = super().__getstate__()
        fields = dict(state["__dict__"])
        fields.update(dict.fromkeys(SECRET_SETTINGS - self._given_secrets))
        private = dict(state.get("__pydantic_private__") or {})
        private.pop("_client", None)
        return {**state, "__dict__": fields, "__pydantic_private__": private}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # LlamaIndex's runs __init__, which builds the engine
        if "_client" not in (self.__pydantic_private__ or {}):
            self._configure()

    # --- the engine -----------------------------------------------------------------------------
    @property
    def settings(self) -> CachedTEISettings:
        """The effective settings: the fields given, then ``CACHED_TEI_*``, then defaults."""
        return self._client.settings

    @property
    def client(self) -> FaceT:
        """The plain face behind this object."""
        return self._client

    @property
    def stats(self) -> Stats:
        """Counters of the engine: hits, misses, TEI requests, cache errors..."""
        return self._client.stats

    def flush(self) -> None:
        """Block until every vector this object computed is written to the cache."""
        self._client.flush()

    def close(self) -> None:
        """Write pending vectors and release this object's share of connections and store;
        other objects on the same cache keep working."""
        self._client.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        await self._client.aclose()


def check_texts(texts: Sequence[str]) -> None:
    """Raise :class:`cached_tei.InputError` unless ``texts`` is a list of non-empty strings
    (a bare string is one text, not a list of characters)."""
    prepare_texts(texts)


def check_fields(adapter: type[BaseModel]) -> None:
    """Raise TypeError unless ``adapter`` has every setting as a field made by
    :func:`setting`: of the setting's type, optional (a path is a ``str``), secrets excluded."""
    for name, source in CachedTEISettings.model_fields.items():
        field = adapter.model_fields.get(name)
        if field is None:
            raise TypeError(
                f"{adapter.__name__} lacks the setting {name!r}: declare it in "
                "cached_tei.adapter.CachedTEIAdapter"
            )
        same_type = _optional(field.annotation) == _optional(source.annotation)
        as_setting = field.default is None and field.frozen and not field.default_factory
        if not same_type or not as_setting or bool(field.exclude) != _is_secret(field.annotation):
            raise TypeError(
                f"{adapter.__name__}.{name} must be declared `= setting({name!r})` with the type "
                f"of CachedTEISettings.{name} ({source.annotation}), optional"
            )


class CachedTEIAdapter(FaceAdapter[CachedEmbedder]):
    """The adapter over :class:`CachedEmbedder`: the dense embeddings faces."""

    def _connect(self, settings: CachedTEISettings) -> CachedEmbedder:
        return CachedEmbedder(settings)


check_fields(FaceAdapter)

__all__ = ["CachedTEIAdapter", "FaceAdapter", "check_fields", "check_texts", "setting"]
