"""What every cache store provides, and the rules they share."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..errors import StoreConfigurationError
from ..keys import Namespace

CREATED = "created"
TEXT = "text"
# The texts of new entries, kept in their payloads when ``store_text`` asks for it.
Texts = Sequence[str] | None
# Lookups and writes go to the store in chunks of this many points.
CHUNK = 1024


@dataclass(frozen=True)
class CollectionInfo:
    """One cache collection: its name, namespace, vector size and number of entries
    (None when it cannot be counted now: another process holds the embedded folder)."""

    name: str
    namespace: dict[str, Any] | None
    dimension: int
    count: int | None
    # Entries lost since the collection was last written (a damaged id tracker; embedded).
    lost: int = 0


class CacheStore(Protocol):
    """A persistent map from (namespace, point id) to a float32 vector and its creation time.

    One collection per namespace, created when the first vector (and so its dimension) is
    known. Every method may raise; the engine decides how failures are handled.
    """

    @property
    def location(self) -> str: ...

    async def dimension(self, namespace: Namespace) -> int | None:
        """The vector size of the namespace's collection, None if it does not exist yet.

        Raises StoreConfigurationError when the collection holds another namespace.
        """

    async def ensure_collection(self, namespace: Namespace, dimension: int) -> None:
        """Create the namespace's collection for vectors of ``dimension`` if it is missing."""

    async def lookup(
        self, namespace: Namespace, ids: Sequence[str], not_before: int | None
    ) -> dict[str, np.ndarray]:
        """Vectors stored under ``ids``; entries created before ``not_before`` are left out."""

    async def upsert(
        self, namespace: Namespace, ids: Sequence[str], vectors: np.ndarray, texts: Texts = None
    ) -> int:
        """Write entries (created now); returns the bytes of vector data written."""

    async def collections(self) -> list[CollectionInfo]:
        """Every cache collection under the configured prefix."""

    async def prune(self, older_than: int) -> int:
        """Delete entries created before ``older_than`` (unix seconds); returns how many."""

    async def claim_prune(self, owner: str, seconds: float) -> bool:
        """Whether ``owner`` should delete expired entries now: true for at most one process
        sharing the store per ``seconds`` (best effort: a second prune is harmless)."""

    async def clear(self) -> int:
        """Delete every cache collection under the prefix; returns how many entries went."""

    async def remember_info(self, tei_url: str, info: dict[str, Any]) -> None:
        """Keep the ``/info`` last read from ``tei_url``."""

    async def recall_info(self, tei_url: str) -> dict[str, Any] | None:
        """The ``/info`` last read from ``tei_url``, or None."""

    async def aclose(self) -> None:
        """Persist everything and release the store."""


class StoredRecord(Protocol):
    """A point as both Qdrant clients return it."""

    @property
    def id(self) -> Any: ...

    @property
    def vector(self) -> Any: ...

    @property
    def payload(self) -> dict[str, Any] | None: ...


def fresh_vectors(records: Iterable[StoredRecord], not_before: int | None) -> dict[str, np.ndarray]:
    """id -> float32 vector of the records created at or after ``not_before`` (all if None)."""
    found: dict[str, np.ndarray] = {}
    for record in records:
        if not_before is not None and (record.payload or {}).get(CREATED, 0) < not_before:
            continue
        found[str(record.id)] = np.asarray(record.vector, dtype=np.float32)
    return found


def entry_payloads(count: int, texts: Sequence[str] | None) -> list[dict[str, Any]]:
    """The payloads of ``count`` new entries: their creation time, and the text if kept."""
    created = int(time.time())
    if texts is None:
        return [{CREATED: created} for _ in range(count)]
    return [{CREATED: created, TEXT: text} for text in texts]


def url_key(tei_url: str) -> str:
    """A stable UUID for a TEI URL, under which its last ``/info`` is kept."""
    return str(uuid.UUID(bytes=hashlib.sha256(tei_url.encode()).digest()[:16]))


def namespace_mismatch(name: str, stored: Any, namespace: Namespace) -> StoreConfigurationError:
    return StoreConfigurationError(
        f"cache collection {name!r} holds vectors of {stored}, not of {namespace.descriptor()}; "
        "use another CACHED_TEI_COLLECTION_PREFIX or clear the cache (cached-tei cache clear)."
    )


def dimension_mismatch(name: str, stored: int, returned: int) -> StoreConfigurationError:
    return StoreConfigurationError(
        f"cache collection {name!r} stores {stored}-dimensional vectors but TEI returned "
        f"{returned}; the model behind CACHED_TEI_URL changed without a new revision: pin "
        "--revision on TEI, or clear the cache (cached-tei cache clear)."
    )
