"""Cache keys: which namespace (collection) a vector belongs to, and its point id inside it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from .errors import InputError
from .settings import CachedTEISettings, TruncationDirection, settings_of_scope

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
    it per API key), so that clients never see each other's entries.
    """

    normalize: bool = True
    truncate: bool | None = None
    truncation_direction: TruncationDirection = "Right"
    prompt_name: str | None = None
    dimensions: int | None = None
    instruction: str = ""
    tenant: str | None = None

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
        """The fields of a TEI ``/embed`` body besides ``inputs``, omitting server defaults."""
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
        if self.tenant is None:  # namespaces without a tenant keep the digests they always had
            del described["tenant"]
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
# changes the text itself (and so its key); ``tenant`` is set per client, not by settings.
_NAMESPACED_OPTIONS = tuple(f.name for f in fields(EmbedOptions) if f.name != "instruction")


def _check_scopes() -> None:
    """Raise TypeError unless the vector settings, EmbedOptions and Namespace agree."""
    from_settings = {_option_of(name)[1] for name in settings_of_scope("vector")}
    options = {f.name for f in fields(EmbedOptions)} - {"tenant"}
    if from_settings != options:
        raise TypeError(
            f"the vector settings set {sorted(from_settings)} but EmbedOptions has "
            f"{sorted(options)}: give EmbedOptions a field per vector setting (a query_/document_ "
            "pair sets one field)"
        )
    namespaced = {f.name for f in fields(Namespace)} - {"model_id", "model_sha", "model_dimension"}
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
