"""The default cache: Qdrant's engine in this process (qdrant-edge), one shard per namespace.

Chosen by measurement (bench/store_backends.py): against qdrant-client's local mode it
upserts 70-89x faster, reads 1.8x faster, reopens 10-30x faster and needs 5-8x less memory,
because it memory-maps its segments instead of loading every point into Python objects.

Layout under ``qdrant_path``: ``<collection>/shard/`` (the edge shard, locked by its WAL
against a second opener), ``<collection>/namespace.json`` (what the vectors are),
``<collection>/creating`` (only while a collection is being created), and
``tei-info/<url hash>.json`` (the last ``/info`` of each TEI URL).

qdrant-edge holds the GIL in every call, so reads and writes go to it in steps of a few
milliseconds with the event loop free between them (``shards.step_points``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import qdrant_edge as edge

from .. import process
from ..errors import StoreConfigurationError, StoreDiskFullError, StoreLockedError
from ..keys import Namespace
from ..settings import CachedTEISettings
from ..values import SparseVector
from .base import (
    CREATED,
    SPARSE,
    CollectionInfo,
    Rows,
    Texts,
    dimension_mismatch,
    entry_payloads,
    float32_matrix,
    namespace_mismatch,
    sparse_bytes,
    store_contract,
    url_key,
)
from .disk import DiskGuard
from .shards import OpenShard, OpenShards, step_points

if sys.platform != "win32":
    import fcntl

log = logging.getLogger(__name__)

_NAMESPACE_FILE = "namespace.json"
_SHARD_DIR = "shard"
_INFO_DIR = "tei-info"
_LOCK_FILE = "cached-tei.lock"
_CREATING = "creating"


class _Folder:
    """An embedded cache folder opened by this process: its lock and its opened shards.

    One per folder per process, shared by every store (and so every engine, face and thread)
    that points at it; ``mutex`` serialises their use of the shards.
    """

    def __init__(self, root: Path, settings: CachedTEISettings) -> None:
        self.root = root
        self.pid = os.getpid()
        self.users = 0
        self.mutex = threading.RLock()
        self.shards = OpenShards(settings.max_open_collections)
        self.disk = DiskGuard(root, settings.min_free_disk_bytes)
        self._lock = _lock_folder(root)

    async def close(self) -> None:
        """Close every shard, one per step (each flushes what it holds), then unlock."""
        while True:
            with self.mutex:
                opened = self.shards.pop_oldest()
            if opened is None:
                break
            await opened.write_back_off_loop()
            with self.mutex:
                opened.close()
        if self._lock is not None:
            self._lock.close()  # releases the lock


_folders: dict[Path, _Folder] = {}
_folders_mutex = threading.Lock()
# A forked child must not touch (or drop) the shards its parent has open.
_inherited: list[_Folder] = []


def _forget_inherited_folders() -> None:
    _inherited.extend(_folders.values())
    _folders.clear()


process.on_fork(_forget_inherited_folders)


def _acquire_folder(root: Path, settings: CachedTEISettings) -> _Folder:
    with _folders_mutex:
        folder = _folders.get(root)
        if folder is None:
            folder = _folders[root] = _Folder(root, settings)
        folder.users += 1
        return folder


async def _release_folder(folder: _Folder) -> None:
    with _folders_mutex:
        folder.users -= 1
        if folder.users > 0:
            return
        if _folders.get(folder.root) is folder:
            del _folders[folder.root]
    await folder.close()


def _lock_folder(root: Path) -> IO[str] | None:
    """Take the folder's lock (whole folder, not per shard, so that a second process fails
    at its first call, never halfway through a pipeline); records this process as holder."""
    if sys.platform == "win32":  # qdrant-edge's own per-shard lock still guards the data
        return None
    root.mkdir(parents=True, exist_ok=True)
    handle = open(root / _LOCK_FILE, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        recorded = handle.read()
        handle.close()
        raise StoreLockedError(str(root), _describe_holder(recorded)) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "program": Path(sys.argv[0]).name}))
        handle.flush()
    except OSError as exc:  # a full disk: the record only names the holder to others
        log.warning("could not record this process as the holder of %s: %s", root, exc)
    return handle


def _describe_holder(recorded: str) -> str | None:
    try:
        holder = json.loads(recorded)
        return f"PID {int(holder['pid'])} ({holder.get('program') or 'python'})"
    except (ValueError, KeyError, TypeError):
        return None


def folder_holder(root: Path) -> str | None:
    """Who holds the embedded folder at ``root``: None if nobody, else a description."""
    with _folders_mutex:
        if root in _folders:
            return f"this process (PID {os.getpid()})"
    if sys.platform == "win32" or not (root / _LOCK_FILE).exists():
        return None
    with open(root / _LOCK_FILE, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe_holder(handle.read()) or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


@store_contract
class EmbeddedStore:
    """Cache entries in folders under ``qdrant_path``.

    Every store in a process that points at one folder shares it (and its lock) with the
    others; another process that points at it gets a StoreLockedError at its first use.
    qdrant-edge holds the GIL during its calls, so they run directly on the event loop, in
    steps (a thread would add overhead without adding parallelism); only the write-back of a
    shard's pages, plain ``os.fsync`` calls that release the GIL, runs in a thread.
    """

    def __init__(self, settings: CachedTEISettings) -> None:
        self._root = Path(settings.qdrant_path).expanduser().absolute()
        self._collection_prefix = settings.collection_prefix
        self._settings = settings
        self._folder: _Folder | None = None

    @property
    def location(self) -> str:
        """The folder."""
        return str(self._root)

    def holder(self) -> str | None:
        """The process holding this folder (None if nobody does)."""
        return folder_holder(self._root)

    def _use(self) -> _Folder:
        if self._folder is None:
            self._folder = _acquire_folder(self._root, self._settings)
        return self._folder

    def _opened(self, name: str) -> OpenShard | None:
        """The collection's open shard (opened now if needed), None if it does not exist."""
        folder = self._use()
        opened = folder.shards.get(name)
        if opened is not None:
            return opened
        description = _read_description(self._root / name)
        if description is None:
            return None
        dimension = int(description["dimension"])
        folder.disk.check_open(self._root / name / _SHARD_DIR)
        try:
            sparse = (description.get("namespace") or {}).get("kind") == "sparse"
            config = _sparse_config() if sparse else _config(dimension)
            shard = edge.EdgeShard.load(str(self._root / name / _SHARD_DIR), config)
        except Exception as exc:
            if "WouldBlock" in str(exc):  # a process that does not take the folder lock
                raise StoreLockedError(str(self._root), None) from exc
            raise
        return folder.shards.add(self._root / name, shard, dimension)

    def _stored_namespace(self, name: str) -> dict[str, Any] | None:
        description = _read_description(self._root / name)
        return None if description is None else description.get("namespace")

    async def dimension(self, namespace: Namespace) -> int | None:
        """The vector size of the namespace's collection, None if it does not exist yet.

        Raises StoreConfigurationError when the collection holds another namespace.
        """
        with self._use().mutex:
            return self._dimension(namespace)

    def _dimension(self, namespace: Namespace) -> int | None:
        name = namespace.collection(self._collection_prefix)
        if name not in self._use().shards and (self._root / name / _NAMESPACE_FILE).exists():
            stored = self._stored_namespace(name)
            if stored != namespace.descriptor():
                raise namespace_mismatch(name, stored, namespace)
        opened = self._opened(name)
        return opened.dimension if opened else None

    async def ensure_collection(self, namespace: Namespace, dimension: int) -> None:
        """Create the namespace's collection for vectors of ``dimension`` if it is missing."""
        with self._use().mutex:
            self._ensure_collection(namespace, dimension)

    def _ensure_collection(self, namespace: Namespace, dimension: int) -> OpenShard:
        existing = self._dimension(namespace)
        name = namespace.collection(self._collection_prefix)
        if existing is not None:
            if existing != dimension:
                raise dimension_mismatch(name, existing, dimension)
            opened = self._use().shards.get(name)
            assert opened is not None
            return opened
        self._use().disk.check_write(0, dimension or SPARSE_SIZE)
        folder = self._root / name
        if (folder / _SHARD_DIR).exists():
            if not (folder / _CREATING).exists():
                raise _undescribed(folder, "is missing")
            # Left by a crash before its description was written; it was never served.
            shutil.rmtree(folder / _SHARD_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / _CREATING).touch()
        shard = edge.EdgeShard.create(
            str(folder / _SHARD_DIR),
            _sparse_config() if namespace.kind == "sparse" else _config(dimension),
        )
        if self._settings.ttl is not None:
            _index_created(shard)
        # The description is written last: a folder without it is ignored, never half-served.
        description = {"namespace": namespace.descriptor(), "dimension": dimension}
        (folder / f"{_NAMESPACE_FILE}.tmp").write_text(json.dumps(description))
        (folder / f"{_NAMESPACE_FILE}.tmp").replace(folder / _NAMESPACE_FILE)
        (folder / _CREATING).unlink()
        log.info("created cache collection %s (%d dimensions) in %s", name, dimension, folder)
        return self._use().shards.add(folder, shard, dimension)

    async def lookup(
        self, namespace: Namespace, ids: Sequence[str], *, lists: bool = False
    ) -> Rows:
        """The entries stored under ``ids``, raw (the engine filters), step by step; with
        ``lists``, also the binding's own lists of floats (exact float32 values)."""
        if not ids:
            return Rows.empty()
        with self._use().mutex:
            dimension = self._dimension(namespace)
        if dimension is None:
            return Rows.empty()
        name = namespace.collection(self._collection_prefix)
        parts = []
        step = step_points(dimension or SPARSE_SIZE)
        for start in range(0, len(ids), step):
            if start:
                await asyncio.sleep(0)  # the event loop runs between steps
            with self._use().mutex:
                opened = self._opened(name)  # reopened if closed meanwhile
                if opened is None:  # cleared meanwhile
                    break
                records = opened.shard.retrieve(
                    point_ids=list(ids[start : start + step]), with_payload=True, with_vector=True
                )
            if namespace.kind == "sparse":
                parts.append(_sparse_rows(records))
                continue
            # Dense vectors only: the binding builds each one's list of floats here. Kept only
            # for a list face; otherwise each is freed once packed (fresh memory for a whole
            # chunk of lists costs several times the packing: bench/warm_steps.py).
            vectors = (cast(list[float], r.vector) for r in records)
            kept = list(vectors) if lists else None
            matrix = float32_matrix(vectors if kept is None else kept, dimension)
            ids_found = [str(r.id) for r in records]
            parts.append(Rows.of(ids_found, matrix, (r.payload for r in records), kept))
        return Rows.join(parts)

    async def upsert(
        self, namespace: Namespace, ids: Sequence[str], vectors: np.ndarray, texts: Texts = None
    ) -> int:
        """Write entries (created now, with their checksums) step by step, the event loop
        free between steps; returns the bytes written."""
        sparse = namespace.kind == "sparse"
        dimension = 0 if sparse else int(vectors.shape[1])
        self._use().disk.check_write(len(ids), dimension or SPARSE_SIZE)
        payloads = entry_payloads(ids, vectors, texts)
        rows = _sparse_points(vectors) if sparse else None
        step = step_points(dimension or SPARSE_SIZE)
        for start in range(0, len(ids), step):
            if start:
                await asyncio.sleep(0)  # the event loop runs between steps
            points = [
                edge.Point(
                    ids[index],
                    vectors[index].tolist() if rows is None else rows[index],
                    payloads[index],
                )
                for index in range(start, min(start + step, len(ids)))
            ]
            with self._use().mutex:
                opened = self._ensure_collection(namespace, dimension)
                opened.shard.update(edge.UpdateOperation.upsert_points(points))
                write_back, flush = opened.wrote(len(points))
            if write_back or flush:
                await opened.write_back_off_loop()
            if flush:
                with self._use().mutex:
                    if self._use().shards.get(opened.folder.name) is opened:  # still open
                        opened.flush()
        return sparse_bytes(vectors) if sparse else int(vectors.nbytes)

    def _collection_folders(self) -> list[Path]:
        """The folders of collections under the prefix, described or not (a folder left by
        a crash while its collection was being created is not one)."""
        if not self._root.exists():
            return []
        return [
            folder
            for folder in sorted(self._root.iterdir())
            if folder.name.startswith(f"{self._collection_prefix}_")
            and ((folder / _NAMESPACE_FILE).exists() or (folder / _SHARD_DIR).exists())
            and not (folder / _CREATING).exists()
        ]

    def _described_folders(self) -> list[Path]:
        return [folder for folder in self._collection_folders() if _read_description(folder)]

    async def collections(self) -> list[CollectionInfo]:
        """Every cache collection; while another process holds the folder, their namespaces
        and sizes are read from their descriptions and ``count`` is None (also while the
        disk is too full to open them safely). An unreadable one raises
        StoreConfigurationError naming ``cached-tei cache clear``."""
        try:
            with self._use().mutex:
                return [self._describe(folder, count=True) for folder in self._collection_folders()]
        except StoreLockedError:
            return [self._describe(folder, count=False) for folder in self._collection_folders()]

    def _describe(self, folder: Path, *, count: bool) -> CollectionInfo:
        description = _read_description(folder)
        assert description is not None  # a collection folder without one raised
        opened = None
        if count:
            try:
                opened = self._opened(folder.name)
            except StoreDiskFullError:
                pass
        return CollectionInfo(
            name=folder.name,
            namespace=description.get("namespace"),
            dimension=int(description["dimension"]),
            count=None if opened is None else opened.count(),
            lost=0 if opened is None else opened.lost,
        )

    async def prune(self, older_than: int) -> int:
        """Delete entries created before ``older_than`` (unix seconds); returns how many."""
        expired = edge.Filter(
            must=[edge.FieldCondition(key=CREATED, range=edge.RangeFloat(lt=older_than))]
        )
        removed = 0
        with self._use().mutex:
            for folder in self._described_folders():
                opened = self._opened(folder.name)
                assert opened is not None
                shard = opened.shard
                _index_created(shard)
                expiring = shard.count(edge.CountRequest(filter=expired, exact=True))
                if expiring:
                    shard.update(edge.UpdateOperation.delete_points_by_filter(expired))
                    opened.flush()  # records the new count
                removed += expiring
        return removed

    async def clear(self) -> int:
        """Delete every collection under the prefix, also those that cannot be read (the
        documented recovery); returns the entries counted in those that could be."""
        removed = 0
        with self._use().mutex:
            for folder in self._root.glob(f"{self._collection_prefix}_*"):
                if not folder.is_dir():
                    continue
                try:
                    opened = self._opened(folder.name)
                    removed += 0 if opened is None else opened.count()
                except Exception as exc:  # what cannot be read is deleted all the same
                    log.warning(
                        "deleting cache collection %s, which cannot be read: %s", folder, exc
                    )
                self._use().shards.forget(folder.name)
                shutil.rmtree(folder)
        return removed

    async def sample(self, name: str, size: int) -> list[tuple[str, np.ndarray, dict[str, Any]]]:
        """Up to ``size`` entries of collection ``name``, drawn at random: (id, vector,
        payload), for ``cached-tei cache verify``."""
        with self._use().mutex:
            opened = self._opened(name)
            if opened is None:
                return []
            records = opened.shard.query(
                edge.QueryRequest(
                    limit=size, query=edge.Sample.Random, with_vector=True, with_payload=True
                )
            )
        return [
            (str(r.id), np.asarray(r.vector, dtype=np.float32), dict(r.payload or {}))
            for r in records
        ]

    async def claim_prune(self, owner: str, seconds: float) -> bool:
        """Always true: the folder lock makes this process the only one."""
        return True

    async def remember_info(self, tei_url: str, info: dict[str, Any]) -> None:
        """Keep the ``/info`` last read from ``tei_url`` in a file of its own."""
        folder = self._root / _INFO_DIR
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f"{url_key(tei_url)}.{os.getpid()}.tmp"
        temporary.write_text(json.dumps({"tei_url": tei_url, "info": info}))
        temporary.replace(folder / f"{url_key(tei_url)}.json")

    async def recall_info(self, tei_url: str) -> dict[str, Any] | None:
        """The ``/info`` last read from ``tei_url``, or None."""
        path = self._root / _INFO_DIR / f"{url_key(tei_url)}.json"
        if not path.exists():
            return None
        info: dict[str, Any] = json.loads(path.read_text())["info"]
        return info

    async def aclose(self) -> None:
        """Release this store's use of the folder; the last user in the process closes it."""
        folder, self._folder = self._folder, None
        if folder is not None:
            await _release_folder(folder)


def _index_created(shard: edge.EdgeShard) -> None:
    """Index the entries' creation times, which pruning filters on (a no-op once indexed).

    Only a store with a TTL needs it: every open rebuilds it in memory (a third of the open
    of a 20,000-entry collection), so a collection made without a TTL gets it at its first
    prune instead (one pass over its entries)."""
    shard.update(edge.UpdateOperation.create_field_index(CREATED, edge.PayloadSchemaType.Integer))


def _config(dimension: int) -> edge.EdgeConfig:
    """The shard configuration of a collection of ``dimension``-sized vectors; one search
    thread (id lookups do not search), where qdrant-edge would start one per core."""
    return edge.EdgeConfig(
        vectors=edge.EdgeVectorParams(
            size=dimension,
            distance=edge.Distance.Dot,
            datatype=edge.VectorStorageDatatype.Float32,
        ),
        hnsw_config=edge.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),
        max_search_threads=1,
    )


def _read_description(folder: Path) -> dict[str, Any] | None:
    """The collection's ``namespace.json``; None if the collection does not exist (or was
    left by a crash while being created). Data without a readable description raises:
    it is never deleted, nor served, by guesswork."""
    path = folder / _NAMESPACE_FILE
    if not path.exists():
        if (folder / _SHARD_DIR).exists() and not (folder / _CREATING).exists():
            raise _undescribed(folder, "is missing")
        return None
    try:
        description: dict[str, Any] = json.loads(path.read_text())
        int(description["dimension"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _undescribed(folder, f"cannot be read ({exc})") from None
    return description


def _undescribed(folder: Path, problem: str) -> StoreConfigurationError:
    return StoreConfigurationError(
        f"cache collection {folder.name} holds vectors but its description "
        f"{folder / _NAMESPACE_FILE} {problem}, so what they are is unknown; nothing was "
        "deleted. Run cached-tei cache clear to delete the cache (or restore the file)."
    )


# Sparse (SPLADE) collections: one named sparse vector per point, Qdrant's u32/f32 pairs.
# Steps and disk checks count a sparse vector as this many floats (about 256 entries).
SPARSE_SIZE = 512


def _sparse_config() -> edge.EdgeConfig:
    return edge.EdgeConfig(
        vectors={}, sparse_vectors={SPARSE: edge.EdgeSparseVectorParams()}, max_search_threads=1
    )


def _sparse_points(
    vectors: np.ndarray,
) -> list[dict[str, list[float] | edge.SparseVector | list[list[float]]]]:
    return [{SPARSE: edge.SparseVector(indices=v.indices, values=v.values)} for v in vectors]


def _sparse_rows(records: Sequence[edge.Record]) -> Rows:
    """Retrieved records of a sparse collection: their SparseVectors in an object array."""
    rows = np.empty(len(records), dtype=object)
    for position, record in enumerate(records):
        assert isinstance(record.vector, dict)
        stored = record.vector[SPARSE]
        assert isinstance(stored, edge.SparseVector)
        rows[position] = SparseVector(list(stored.indices), list(stored.values))
    return Rows.of([str(r.id) for r in records], rows, (r.payload for r in records))
