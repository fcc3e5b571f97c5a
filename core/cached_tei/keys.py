"""Cache keys: which namespace (collection) a vector belongs to, and its point id inside it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from .errors import InputError
from .settings import CachedTEISettings, TruncationDirection, settings_of_scope
from .values import ModelKind

if TYPE_CHECKING:
    from .tei import TEIInfo

NAMESPACE_SCHEMA = 1
_Kind = Literal["query", "document"]
# Settings named "<kind>_<option>" apply to that kind's texts only.
_KINDS: tuple[_Kind, ...] = ("query", "document")


@dataclass(frozen=True)
class EmbedOptions:
    """What decides the vector besides the text: TEI's ``/embed`` fields, and a text prefix.

    ``instruction`` is prepended to every text before it is keyed and sent (e5/bge-style
    ``"query: "``); ``prompt_name`` is applied by TEI itself. ``truncate=None`` means the
    server's ``--auto-truncate``. ``tenant`` gives a client its own namespace (the proxy sets
    it per API key), so that clients never see each other's entries. ``kind`` is the model's
    kind; a rerank call sets its ``query`` (part of each key) and ``raw_scores``.
    """

    normalize: bool = True
    truncate: bool | None = None
    truncation_direction: TruncationDirection = "Right"
    prompt_name: str | None = None
    dimensions: int | None = None
    instruction: str = ""
    tenant: str | None = None
    kind: ModelKind = "embedding"
    raw_scores: bool | None = None
    query: str | None = None

    @classmethod
    def from_settings(cls, settings: CachedTEISettings, kind: _Kind) -> EmbedOptions:
        """The options for queries or documents, with that kind's prompt and instruction."""
        if kind not in _KINDS:
            raise InputError(f"kind must be 'query' or 'document', got {kind!r}")
        values = {}
        for name in settings_of_scope("vector"):
            setting_kind, option = _option_of(name)
            if setting_kind in (None, kind):
                values[option] = getattr(settings, name)
        return cls(**values)

    def request_fields(self) -> dict[str, Any]:
        """The fields of a TEI body besides the texts, omitting server defaults."""
        if self.kind != "embedding":
            return self._other_fields()
        fields: dict[str, Any] = {
            "normalize": self.normalize,
            "truncation_direction": self.truncation_direction,
        }
        if self.truncate is not None:
            fields["truncate"] = self.truncate
        if self.prompt_name is not None:
            fields["prompt_name"] = self.prompt_name
        if self.dimensions is not None:
            fields["dimensions"] = self.dimensions
        return fields

    def _other_fields(self) -> dict[str, Any]:
        """``/embed_sparse`` and ``/rerank`` take no ``normalize`` or ``dimensions``; a rerank
        takes its query and ``raw_scores``, and no prompt."""
        fields: dict[str, Any] = {"truncation_direction": self.truncation_direction}
        if self.truncate is not None:
            fields["truncate"] = self.truncate
        if self.kind == "rerank":
            fields["query"] = self.query
            fields["raw_scores"] = bool(self.raw_scores)
        elif self.prompt_name is not None:
            fields["prompt_name"] = self.prompt_name
        return fields


@dataclass(frozen=True)
class Namespace:
    """Everything besides the text that fixes a vector; one Qdrant collection each."""

    model_id: str
    model_sha: str | None
    normalize: bool
    truncate: bool
    truncation_direction: str
    prompt_name: str | None
    dimensions: int | None
    tenant: str | None = None
    kind: str = "embedding"
    raw_scores: bool | None = None
    # Set when the model under the same /info began to answer with vectors of another size.
    model_dimension: int | None = None

    @classmethod
    def of(cls, info: TEIInfo, options: EmbedOptions) -> Namespace:
        """The namespace of ``options`` on the model ``info`` describes; ``truncate=None``
        resolved to the server's ``--auto-truncate``."""
        values = {name: getattr(options, name) for name in _NAMESPACED_OPTIONS}
        values["truncate"] = info.auto_truncate if options.truncate is None else options.truncate
        return cls(model_id=info.model_id, model_sha=info.model_sha, **values)

    def descriptor(self) -> dict[str, Any]:
        """A JSON-able description, stored with the collection and checked when it is opened."""
        described = {"schema": NAMESPACE_SCHEMA, **asdict(self)}
        # Dense namespaces without a tenant keep the digests they always had.
        if self.tenant is None:
            del described["tenant"]
        if self.kind == "embedding":
            del described["kind"]
        if self.raw_scores is None:
            del described["raw_scores"]
        if self.model_dimension is None:
            del described["model_dimension"]
        return described

    @cached_property
    def digest(self) -> str:
        encoded = json.dumps(self.descriptor(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(encoded.encode()).hexdigest()

    def collection(self, prefix: str) -> str:
        return f"{prefix}_{self.digest[:24]}"


def _option_of(setting: str) -> tuple[_Kind | None, str]:
    """The kind a vector setting is for (None: both) and the EmbedOptions field it sets."""
    for kind in _KINDS:
        if setting.startswith(f"{kind}_"):
            return kind, setting[len(kind) + 1 :]
    return None, setting


# Options that change the vector but not the text: part of the namespace. ``instruction``
# changes the text itself and ``query`` the pair (and so their keys).
_NAMESPACED_OPTIONS = tuple(
    f.name for f in fields(EmbedOptions) if f.name not in ("instruction", "query")
)
# Options set per client or per call, not by settings.
_CALL_OPTIONS = {"tenant", "kind", "raw_scores", "query"}


# What fixes the model rather than an option: its /info, and the size it answers with.
_MODEL_FIELDS = frozenset({"model_id", "model_sha", "model_dimension"})


def _check_scopes() -> None:
    """Raise TypeError unless the vector settings, EmbedOptions and Namespace agree."""
    from_settings = {_option_of(name)[1] for name in settings_of_scope("vector")}
    options = {f.name for f in fields(EmbedOptions)} - _CALL_OPTIONS
    if from_settings != options:
        raise TypeError(
            f"the vector settings set {sorted(from_settings)} but EmbedOptions has "
            f"{sorted(options)}: give EmbedOptions a field per vector setting (a query_/document_ "
            "pair sets one field)"
        )
    namespaced = {f.name for f in fields(Namespace)} - _MODEL_FIELDS
    if namespaced != set(_NAMESPACED_OPTIONS):
        raise TypeError(
            f"Namespace has {sorted(namespaced)} but the options that change a vector are "
            f"{sorted(_NAMESPACED_OPTIONS)}: give Namespace a field per option"
        )


_check_scopes()


def point_id(text: str) -> str:
    """The cache key of a text (as TEI sees it): a UUID from the first 16 bytes of its SHA-256."""
    # The string str(uuid.UUID(bytes=digest[:16])) gives, formatted directly (3x faster).
    h = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def point_ids(texts: list[str], options: EmbedOptions) -> list[str]:
    """The cache keys of texts; for a rerank, of each (query, text) pair (JSON-encoded, so
    that no two pairs share a key)."""
    if options.query is None:
        return [point_id(text) for text in texts]
    query = json.dumps(options.query)
    return [point_id(f"[{query},{json.dumps(text)}]") for text in texts]
