"""What every cache store provides, and the rules they share.

The contract: a store keeps entries and hands them back raw (:class:`Rows`: ids, one float32
matrix, creation times, checksums); the engine decides what is served (expiry, integrity).
A store raises only StoreConfigurationError (permanent: fix the configuration) or
StoreUnavailable (transient: the engine carries on without the cache); :func:`store_contract`
turns anything else a store's client raises into StoreUnavailable. A new store is one class
with the methods of :class:`CacheStore`, decorated with :func:`store_contract`.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

import numpy as np

from ..errors import StoreConfigurationError, StoreUnavailable
from ..integrity import checksums
from ..keys import Namespace

CREATED = "created"
CHECKSUM = "crc32"
TEXT = "text"
# The payload fields a lookup reads back.
READ_FIELDS = [CREATED, CHECKSUM]
# The texts of new entries, kept in their payloads when ``store_text`` asks for it.
Texts = Sequence[str] | None
# Lookups and writes go to the store in chunks of this many points.
CHUNK = 1024
# The name of a sparse collection's one vector.
SPARSE = "sparse"

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound=type)


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


@dataclass(frozen=True)
class Rows:
    """Entries as a store holds them, in no particular order: ``vectors`` has one float32 row
    per id; ``created`` is unix seconds (0 when unknown); ``checksums`` is None for entries
    written before checksums were kept. ``lists``, where the store's client hands vectors over
    as Python floats widened from float32 (qdrant-edge), are those lists: the same values as
    ``vectors``, which list faces return as they are."""

    ids: list[str]
    vectors: np.ndarray
    created: list[int]
    checksums: list[int | None]
    lists: list[list[float]] | None = None

    @classmethod
    def empty(cls) -> Rows:
        return cls([], np.zeros((0, 0), dtype=np.float32), [], [])

    @classmethod
    def join(cls, parts: Sequence[Rows]) -> Rows:
        """One Rows of several chunks' (empty chunks left out)."""
        parts = [part for part in parts if part.ids]
        if len(parts) <= 1:
            return parts[0] if parts else cls.empty()
        whole = all(part.lists is not None for part in parts)
        return cls(
            [i for part in parts for i in part.ids],
            np.concatenate([part.vectors for part in parts]),
            [c for part in parts for c in part.created],
            [c for part in parts for c in part.checksums],
            [v for part in parts for v in part.lists or ()] if whole else None,
        )

    @classmethod
    def of(
        cls,
        ids: list[str],
        vectors: np.ndarray,
        payloads: Iterable[dict[str, Any] | None],
        lists: list[list[float]] | None = None,
    ) -> Rows:
        """Rows from ids, their matrix and their payloads (as both Qdrant clients return)."""
        created, sums = [], []
        for payload in payloads:
            payload = payload or {}
            created.append(int(payload.get(CREATED, 0)))
            value = payload.get(CHECKSUM)
            sums.append(None if value is None else int(value))
        return cls(ids, vectors, created, sums, lists)


def float32_matrix(lists: Iterable[list[float]], dimension: int) -> np.ndarray:
    """The float32 matrix of vectors handed over as Python lists of float32 values (exact):
    packed row by row with ``struct``, half the cost of ``np.array`` over the lists
    (bench/warm_steps.py). Read-only. Given a generator, each list can be freed as soon as it
    is packed, which costs far less than keeping a chunk of them alive."""
    pack = struct.Struct(f"{dimension}f").pack
    packed = b"".join([pack(*vector) for vector in lists])
    return np.frombuffer(packed, dtype=np.float32).reshape(-1, dimension)


class CacheStore(Protocol):
    """A persistent map from (namespace, point id) to a float32 vector, its creation time and
    its checksum.

    One collection per namespace, created when the first vector (and so its dimension) is
    known. Methods raise only StoreConfigurationError or StoreUnavailable.
    """

    @property
    def location(self) -> str:
        """Where the store is, for messages (a folder, or a URL without credentials)."""

    async def dimension(self, namespace: Namespace) -> int | None:
        """The vector size of the namespace's collection, None if it does not exist yet.

        Raises StoreConfigurationError when the collection holds another namespace.
        """

    async def ensure_collection(self, namespace: Namespace, dimension: int) -> None:
        """Create the namespace's collection for vectors of ``dimension`` if it is missing."""

    async def lookup(
        self, namespace: Namespace, ids: Sequence[str], *, lists: bool = False
    ) -> Rows:
        """The entries stored under ``ids`` (missing ids left out), raw: nothing is filtered.
        ``lists=True`` asks for the vectors as the store's own Python lists too, where it has
        them exactly (``Rows.lists``)."""

    async def upsert(
        self, namespace: Namespace, ids: Sequence[str], vectors: np.ndarray, texts: Texts = None
    ) -> int:
        """Write entries (created now, with their checksums); returns the bytes of vector
        data written."""

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


def store_contract(cls: S) -> S:
    """Make every public coroutine method of a store raise only StoreConfigurationError or
    StoreUnavailable: whatever else its client raises becomes StoreUnavailable."""
    for name, method in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(method):
            setattr(cls, name, _unavailable_on_error(method))
    return cls


def _unavailable_on_error(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(method)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (StoreConfigurationError, StoreUnavailable):
            raise
        except Exception as exc:
            raise StoreUnavailable(f"the cache store failed in {method.__name__}: {exc!r}") from exc

    return guarded


def entry_payloads(
    ids: Sequence[str], vectors: np.ndarray, texts: Sequence[str] | None
) -> list[dict[str, Any]]:
    """The payloads of new entries: their creation time, checksum, and the text if kept."""
    created = int(time.time())
    payloads: list[dict[str, Any]] = [
        {CREATED: created, CHECKSUM: crc} for crc in checksums(ids, vectors)
    ]
    if texts is not None:
        for payload, text in zip(payloads, texts, strict=True):
            payload[TEXT] = text
    return payloads


def sparse_bytes(vectors: np.ndarray) -> int:
    """The bytes of sparse vector data (u32 index and f32 value per entry) in an object
    array of SparseVectors."""
    return sum(8 * len(vector.indices) for vector in vectors)


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
