"""The engine: the path of one ``embed`` call, from the texts to their vectors.

1. check the texts (before any I/O); 2. apply the instruction; 3. key each text inside its
namespace; 4. deduplicate; 5. look up memory, then Qdrant; 6. wait for texts another call is
already computing; 7. send the rest to TEI in concurrent batches; 8. hand new vectors to the
waiting calls, the memory cache and the write-behind queue; 9. return them in input order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import numpy as np
from cachetools import Cache, LRUCache, TTLCache

from . import tracing
from .breaker import CircuitBreaker
from .errors import (
    InputError,
    ModelChangedError,
    StoreConfigurationError,
    StoreDiskFullError,
    StoreUnavailable,
    TEIError,
)
from .integrity import intact
from .keys import EmbedOptions, Namespace, point_ids
from .settings import CachedTEISettings
from .singleflight import Flight, SingleFlight
from .stats import Stats
from .stores import CacheStore, Rows, open_store
from .tei import TEIClient, TEIInfo
from .values import ModelKind
from .writer import WriteBehind

log = logging.getLogger(__name__)
T = TypeVar("T")

# Seconds between probes of an unreachable TEI while its remembered /info stands in.
_PROBE_INTERVAL = 5.0
# Bytes an LRU entry costs beyond its vector (key strings and tuple, array header,
# cachetools' bookkeeping), measured with tracemalloc (bench/README.md).
_ENTRY_OVERHEAD = 420


@dataclass(frozen=True)
class EmbedResult:
    """Vectors for one call (float32, one row per input, input order) and where they came from.

    A sparse engine's ``vectors`` is an object array of SparseVectors; a rerank engine's
    holds one score per text.

    ``hits`` and ``misses`` count distinct texts: ``hits`` came from the cache, ``misses`` were
    computed by TEI (for this call or a concurrent one).
    """

    vectors: np.ndarray
    hits: int
    misses: int


@dataclass(frozen=True)
class EmbedLists:
    """An :class:`EmbedResult` as Python lists, what LangChain and LlamaIndex return. Vectors
    the store hands over as lists (qdrant-edge) are passed through as they are: float32 values
    widened to Python floats, identical to ``ndarray.tolist()``."""

    vectors: list[list[float]]
    hits: int
    misses: int


@dataclass
class _Gathered:
    """One call's vectors, by distinct text, before they are put in input order."""

    vectors: list[np.ndarray | None]
    keys: list[str]
    inverse: list[int]
    hits: int
    # Vectors read from the store as Python lists, by point id (a call for lists only).
    lists: dict[str, list[float]] | None = None


@dataclass(frozen=True)
class _Call:
    """What one ``embed`` call fixes for all its texts: where their vectors belong, how TEI
    computes them, and whether the cache is read and written."""

    namespace: Namespace
    collection: str
    options: EmbedOptions
    read: bool
    write: bool
    lists: dict[str, list[float]] | None = None

    @property
    def shares(self) -> bool:
        """Only a call that reads and writes the cache computes texts for other calls."""
        return self.read and self.write


# A flight's key: (collection, point id).
_Key = tuple[str, str]


def prepare_texts(texts: Sequence[str], instruction: str = "", *, pairs: bool = False) -> list[str]:
    """Check the texts and return them as TEI will see them; raises InputError naming the index.
    A rerank's texts (``pairs``) may be empty: TEI reads each with its query."""
    if isinstance(texts, (str, bytes)):
        raise InputError(
            "expected a list of strings, got a single string; wrap it in a list, "
            "or use embed_query for one text"
        )
    if not isinstance(texts, Sequence):
        raise InputError(f"expected a list of strings, got {type(texts).__name__}")
    prepared = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(
                f"text at index {index} is {type(text).__name__}, not str; "
                "convert it (or drop it) before embedding"
            )
        if not text and not pairs:
            raise InputError(
                f"text at index {index} is empty; TEI rejects empty inputs, drop it first"
            )
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InputError(
                    f"text at index {index} is not valid Unicode ({exc.reason} at position "
                    f"{exc.start}); decode your source with errors='replace'"
                ) from None
        prepared.append(instruction + text)
    return prepared


class Engine:
    """Cached, batched, parallel embeddings. Async; bound to the event loop it first runs on.

    Use :class:`cached_tei.CachedEmbedder` for a sync API or from several loops; use the
    engine directly inside one event loop (as the proxy does). ``kind`` is the kind of model
    it caches (dense, sparse or rerank), each at its own TEI URL.
    """

    def __init__(self, settings: CachedTEISettings, kind: ModelKind = "embedding") -> None:
        tracing.configure()
        self.settings = settings
        self.kind = kind
        self.stats = Stats()
        self.tei = TEIClient(settings, self.stats, kind)
        self.store: CacheStore = open_store(settings)
        self.breaker = CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown)
        self._writer = WriteBehind(
            self._write,
            self.stats,
            capacity=settings.write_queue_size,
            batch_size=settings.write_batch_size,
        )
        self._memory = _memory_cache(settings)
        self._flights: SingleFlight[_Key, np.ndarray] = SingleFlight()
        self._corrupt_logged: set[str] = set()
        self._namespaces: dict[tuple[TEIInfo, EmbedOptions], Namespace] = {}
        self._remembered_info: TEIInfo | None = None
        self._probe_after = 0.0
        self._remembered_for: TEIInfo | None = None
        # Model drift: each namespace's vector dimension, and namespaces whose model now
        # answers with another dimension under the same /info (the namespace they moved to).
        self._dimensions: dict[Namespace, int] = {}
        self._moved: dict[Namespace, Namespace] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._expiry: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ public
    async def info(self) -> TEIInfo:
        """TEI's ``/info``, read once.

        While TEI cannot be reached, the ``/info`` last read from this URL (kept in the
        store) stands in, so that cached texts are still served; TEI is probed again every
        few seconds, and its real ``/info`` replaces the stand-in as soon as it answers.
        """
        known = self.tei.known_info
        if known is not None:
            return known
        if self._remembered_info is not None and time.monotonic() < self._probe_after:
            return self._remembered_info
        try:
            info = await self.tei.info(retry=False)
        except TEIError as exc:
            if not exc.transient:
                raise
            remembered = await self._recall_info()
            if remembered is None:
                info = await self.tei.info()
            else:
                self._probe_after = time.monotonic() + _PROBE_INTERVAL
                log.warning(
                    "TEI at %s is unreachable (%s); serving cached vectors of %s, its last /info",
                    self.tei.url,
                    exc.message,
                    remembered.model_id,
                )
                return remembered
        if info != self._remembered_for:
            self._remembered_for = info
            self._in_background(self._remember_info(info))
        return info

    async def namespace(self, options: EmbedOptions) -> Namespace:
        """The namespace (and so the collection) that vectors for ``options`` belong to."""
        if options.query is not None:  # a rerank's query is part of each key, not the namespace
            options = replace(options, query=None)
        info = await self.info()
        namespace = self._namespaces.get((info, options))
        if namespace is None:
            namespace = Namespace.of(info, options)
            self._namespaces[(info, options)] = namespace
        return self._moved.get(namespace, namespace)

    async def embed(
        self,
        texts: Sequence[str],
        options: EmbedOptions,
        *,
        read_cache: bool = True,
        write_cache: bool = True,
    ) -> EmbedResult:
        """Vectors for ``texts``, from the cache where possible; all or nothing.

        ``read_cache=False`` recomputes every text and refreshes its entry (HTTP's
        ``no-cache``); ``write_cache=False`` keeps nothing new anywhere, memory included
        (``no-store``).
        """
        gathered = await self._traced(texts, options, read_cache, write_cache, lists=False)
        return EmbedResult(_matrix(gathered), gathered.hits, len(gathered.vectors) - gathered.hits)

    async def embed_lists(
        self,
        texts: Sequence[str],
        options: EmbedOptions,
        *,
        read_cache: bool = True,
        write_cache: bool = True,
    ) -> EmbedLists:
        """:meth:`embed` as Python lists, without a round trip through numpy for what the
        store hands over as lists (its checksum is verified all the same)."""
        gathered = await self._traced(texts, options, read_cache, write_cache, lists=True)
        return EmbedLists(_lists(gathered), gathered.hits, len(gathered.vectors) - gathered.hits)

    async def _traced(
        self,
        texts: Sequence[str],
        options: EmbedOptions,
        read_cache: bool,
        write_cache: bool,
        *,
        lists: bool,
    ) -> _Gathered:
        with tracing.span("cached_tei.embed") as current:
            gathered = await self._on_one_model(
                lambda: self._embed(texts, options, read_cache, write_cache, lists)
            )
            current.set_attribute("cached_tei.texts", len(gathered.inverse))
            current.set_attribute("cached_tei.hits", gathered.hits)
            current.set_attribute("cached_tei.misses", len(gathered.vectors) - gathered.hits)
        return gathered

    async def _embed(
        self,
        texts: Sequence[str],
        options: EmbedOptions,
        read_cache: bool,
        write_cache: bool,
        lists: bool,
    ) -> _Gathered:
        self._flights.check_loop()
        pairs = options.query is not None  # a rerank's texts, each read with its query
        prepared = prepare_texts(texts, options.instruction, pairs=pairs)  # steps 1 and 2
        if not prepared:
            return _Gathered([], [], [], 0)
        namespace = await self.namespace(options)  # step 3
        call = _Call(
            namespace,
            namespace.collection(self.settings.collection_prefix),
            options,
            read_cache,
            write_cache,
            {} if lists else None,
        )
        self._start_expiry()
        unique, inverse = _deduplicate(prepared)  # step 4
        self.stats.duplicates += len(prepared) - len(unique)
        keys = point_ids(unique, options)
        vectors: list[np.ndarray | None] = [None] * len(unique)
        own, joined = self._claimable(call, keys, vectors)  # step 5 (memory), step 6
        store_hits = 0
        if own:  # steps 5 (the store), 7 and 8
            store_hits = await self._resolve_own(call, [unique[i] for i in own], keys, own, vectors)
        if joined:  # step 6: texts another call is computing
            waited = await self._flights.wait([((call.collection, keys[i]), f) for i, f in joined])
            for (index, _), vector in zip(joined, waited, strict=True):
                vectors[index] = vector
        memory_hits = len(unique) - len(own) - len(joined)
        hits = self._count(len(unique), memory_hits, store_hits, len(joined))
        return _Gathered(vectors, keys, inverse, hits, call.lists)  # step 9: see _matrix, _lists

    def _claimable(
        self, call: _Call, keys: list[str], vectors: list[np.ndarray | None]
    ) -> tuple[list[int], list[tuple[int, Flight[_Key, np.ndarray]]]]:
        """Fill ``vectors`` from memory; return the indexes this call computes itself and
        those it waits for from another call's flight."""
        if not call.read:
            return list(range(len(keys))), []
        own: list[int] = []
        joined: list[tuple[int, Flight[_Key, np.ndarray]]] = []
        for index, key in enumerate(keys):
            vector = self._from_memory(call.collection, key)
            if vector is not None:
                vectors[index] = vector
                continue
            flight = self._flights.pending((call.collection, key))
            if flight is None:
                own.append(index)
            else:
                joined.append((index, flight))
        return own, joined

    async def _resolve_own(
        self,
        call: _Call,
        texts: list[str],
        keys: list[str],
        own: list[int],
        vectors: list[np.ndarray | None],
    ) -> int:
        """Claim the texts at ``own``, resolve them (store, then TEI) as a flight of their own,
        and fill ``vectors``; returns the store hits."""
        flight = self._flights.claim([(call.collection, keys[i]) for i in own], shared=call.shares)
        store_hits = await self._flights.run(flight, self._resolve(call, texts, flight))
        for index, key in zip(own, flight.keys, strict=True):
            vectors[index] = flight.values[key]
        return store_hits

    def _count(self, unique: int, memory_hits: int, store_hits: int, coalesced: int) -> int:
        """Count the call; returns its hits."""
        hits = memory_hits + store_hits
        self.stats.hits += hits
        self.stats.memory_hits += memory_hits
        self.stats.misses += unique - hits
        self.stats.coalesced += coalesced
        return hits

    def _start_expiry(self) -> None:
        if self._expiry is None and self.settings.ttl is not None:
            self._expiry = asyncio.create_task(self._expire(), name="cached-tei-expiry")

    async def flush(self) -> None:
        """Wait until every vector computed so far is written to Qdrant."""
        self._flights.check_loop()
        await self._flights.drain()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._writer.flush()

    async def aclose(self) -> None:
        """Drain pending writes, then close the TEI and Qdrant clients."""
        self._flights.check_loop()
        if self._expiry is not None:
            self._expiry.cancel()
            await asyncio.gather(self._expiry, return_exceptions=True)
            self._expiry = None
        await self.flush()
        await self._writer.aclose()
        await self.tei.aclose()
        await self.store.aclose()

    async def entries(self, namespace: Namespace) -> int | None:
        """How many entries the namespace's collection holds; None when the store cannot say
        now (its breaker is open, or it failed or took longer than ``qdrant_timeout``)."""
        if self.breaker.state == "open":
            return None
        try:
            collections = await asyncio.wait_for(
                self.store.collections(), self.settings.qdrant_timeout
            )
        except (StoreConfigurationError, StoreUnavailable, asyncio.TimeoutError) as exc:
            log.warning("could not count cache entries: %r", exc)
            return None
        collection = namespace.collection(self.settings.collection_prefix)
        return next((c.count for c in collections if c.name == collection), 0)

    async def prune(self) -> int:
        """Delete entries older than the TTL; returns how many were removed (0 without TTL)."""
        if self.settings.ttl is None:
            return 0
        return await self.store.prune(int(time.time() - self.settings.ttl))

    async def _expire(self) -> None:
        """Delete expired entries every interval, off the request path, while the engine
        runs; on a shared server one process at a time does it."""
        assert self.settings.ttl is not None
        interval = self.settings.prune_interval or min(self.settings.ttl, 60.0)
        owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"  # in the prune lease
        while True:
            await asyncio.sleep(interval)
            if not self.breaker.allow():
                continue
            try:
                if await self.store.claim_prune(owner, interval):
                    removed = await self.prune()
                    self.stats.expired += removed
                    if removed:
                        log.info("deleted %d expired cache entries", removed)
            except StoreConfigurationError as exc:
                log.warning("expired cache entries cannot be deleted: %s", exc)
            except StoreUnavailable as exc:
                log.warning("deleting expired cache entries failed (%r); will try again", exc)

    # ------------------------------------------------------------------ internals
    def _in_background(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_consume_exception)  # its caller may have been cancelled
        return task

    async def _guarded(
        self, operation: Callable[[], Awaitable[T]], action: str
    ) -> tuple[Literal["done", "skipped", "failed"], T | None]:
        """Run a store operation under the breaker and ``qdrant_timeout``: the cache may
        fail, embedding must not. A StoreConfigurationError (permanent) is raised; a
        StoreUnavailable or a timeout (transient) is counted, logged and bypassed. The value
        is None unless the operation was done."""
        if not self.breaker.allow():
            return "skipped", None
        try:
            result = await _within(operation(), self.settings.qdrant_timeout)
        except StoreDiskFullError:  # the store declined (and logged it): no Qdrant failure
            self.stats.disk_full += 1
            return "skipped", None
        except (StoreUnavailable, asyncio.TimeoutError) as exc:
            self.breaker.record_failure()
            self.stats.cache_errors += 1
            log.warning("cache %s failed (%r); carrying on without the cache", action, exc)
            return "failed", None
        self.breaker.record_success()
        return "done", result

    async def _recall_info(self) -> TEIInfo | None:
        if self._remembered_info is None:
            _, raw = await self._guarded(
                lambda: self.store.recall_info(self.tei.url), "read of the remembered /info"
            )
            if raw is not None:
                self._remembered_info = TEIInfo.from_json(raw)
        return self._remembered_info

    async def _remember_info(self, info: TEIInfo) -> None:
        """Keep ``/info`` in the store (off the request path) unless it is there already."""
        remembered = await self._recall_info()
        if remembered is not None and remembered.raw == info.raw:
            return
        outcome, _ = await self._guarded(
            lambda: self.store.remember_info(self.tei.url, info.raw), "write of /info"
        )
        if outcome == "done":
            self._remembered_info = info

    def _from_memory(self, collection: str, key: str) -> np.ndarray | None:
        if self._memory is not None:
            vector = self._memory.get((collection, key))
            if vector is not None:
                return vector
        return self._writer.get(collection, key)

    def _keep_in_memory(self, collection: str, key: str, vector: np.ndarray) -> None:
        if self._memory is not None:
            self._memory[(collection, key)] = vector

    async def _resolve(
        self, call: _Call, texts: list[str], flight: Flight[_Key, np.ndarray]
    ) -> int:
        """Fill ``flight`` from the store, then TEI; returns the store hits."""
        ids = [key for _, key in flight.keys]
        found = await self._lookup(call.namespace, ids, call.lists) if call.read else {}
        for key, vector in found.items():
            flight.values[(call.collection, key)] = vector
            if call.write:
                self._keep_in_memory(call.collection, key, vector)
        missing = [index for index, key in enumerate(ids) if key not in found]
        if missing:
            await self._compute(
                call, [texts[i] for i in missing], [ids[i] for i in missing], flight
            )
        return len(found)

    async def _on_one_model(self, embed: Callable[[], Awaitable[T]]) -> T:
        """Run a call; if the model changed under it, run it once more in the new model's
        namespace, so that no answer mixes two models (a second change fails the call)."""
        try:
            return await embed()
        except ModelChangedError as exc:
            log.warning("%s; computing the call again", exc)
            return await embed()

    async def _check_model(
        self, namespace: Namespace, options: EmbedOptions, vectors: np.ndarray
    ) -> None:
        """Raise ModelChangedError unless ``vectors``, TEI's answer for a call in
        ``namespace``, came from that namespace's model: same ``/info`` and dimension."""
        dimension = int(vectors.shape[1]) if vectors.ndim == 2 else 0  # sparse: none
        expected = self._dimensions.get(namespace)
        if expected is None:
            _, stored = await self._guarded(
                lambda: self.store.dimension(namespace), "read of the dimension"
            )
            expected = self._dimensions.setdefault(namespace, stored or dimension)
        if dimension != expected:
            if not await self.tei.recheck_info():  # which model answered is unknown
                raise ModelChangedError(
                    self.tei.url,
                    _model_name(namespace, expected),
                    f"a model of {dimension} dimensions",
                    "TEI's /info could not be read again; try the call again",
                )
            base = Namespace.of(await self.info(), options)
            if replace(namespace, model_dimension=None) == base:  # same /info: moved in place
                moved = replace(base, model_dimension=dimension)
                self._moved[base] = base if self._dimensions.get(base) == dimension else moved
        current = await self.namespace(options)
        if current != namespace:
            raise ModelChangedError(
                self.tei.url,
                _model_name(namespace, expected),
                _model_name(current, dimension),
                "pin the model's revision on TEI (--revision) so that each model keeps its "
                "own cache, and try the call again",
            )

    async def _compute(
        self, call: _Call, texts: list[str], ids: list[str], flight: Flight[_Key, np.ndarray]
    ) -> None:
        """Send ``texts`` to TEI; each batch that lands fills ``flight``, memory and the store."""

        async def arrived(start: int, batch: np.ndarray) -> None:
            await self._check_model(call.namespace, call.options, batch)
            part = ids[start : start + len(batch)]
            for key, row in zip(part, batch, strict=True):
                row = _owned(row)
                flight.values[(call.collection, key)] = row
                if call.write:
                    self._keep_in_memory(call.collection, key, row)
            if call.write:
                kept = texts[start : start + len(batch)] if self.settings.store_text else None
                await self._save(call.namespace, call.collection, part, batch, kept)

        await self.tei.embed(texts, call.options, on_batch=arrived)

    async def _lookup(
        self, namespace: Namespace, keys: list[str], lists: dict[str, list[float]] | None = None
    ) -> dict[str, np.ndarray]:
        """The store's entries for ``keys`` that may be served: not expired, intact (and into
        ``lists``, the store's own lists of those, where it has them)."""
        with tracing.span("cached_tei.cache.lookup", keys=len(keys)) as current:
            outcome, rows = await self._guarded(
                lambda: self.store.lookup(namespace, keys, lists=lists is not None), "lookup"
            )
            found = self._servable(namespace, rows, lists) if rows is not None else {}
            current.set_attribute("cached_tei.outcome", outcome)
            current.set_attribute("cached_tei.hits", len(found))
        if outcome == "skipped":
            self.stats.cache_skipped += len(keys)
        return found

    def _servable(
        self, namespace: Namespace, rows: Rows, lists: dict[str, list[float]] | None = None
    ) -> dict[str, np.ndarray]:
        """Expiry and integrity, applied once: id -> a row of its own (so the memory cache
        never keeps a whole chunk alive); the served rows' lists go into ``lists``."""
        not_before = None if self.settings.ttl is None else int(time.time() - self.settings.ttl)
        checks = intact(rows.ids, rows.vectors, rows.checksums)
        found: dict[str, np.ndarray] = {}
        corrupt = 0
        for index, key in enumerate(rows.ids):
            if not checks[index]:
                corrupt += 1
            elif not_before is None or rows.created[index] >= not_before:
                found[key] = _owned(rows.vectors[index])
                if lists is not None and rows.lists is not None:
                    lists[key] = rows.lists[index]
        if corrupt:
            self._count_corrupt(namespace, corrupt)
        return found

    def _count_corrupt(self, namespace: Namespace, count: int) -> None:
        self.stats.corrupt += count
        collection = namespace.collection(self.settings.collection_prefix)
        if collection not in self._corrupt_logged:
            self._corrupt_logged.add(collection)
            log.error(
                "%d cache entries in %s (%s) do not match their checksum: they are recomputed "
                "and rewritten. Check the disk under %s; `cached-tei cache clear` starts afresh "
                "(logged once per collection, counted in stats.corrupt)",
                count,
                collection,
                namespace.model_id,
                self.store.location,
            )

    async def _save(
        self,
        namespace: Namespace,
        collection: str,
        ids: list[str],
        vectors: np.ndarray,
        texts: list[str] | None,
    ) -> None:
        if self.settings.write_through:
            await self._write(namespace, ids, vectors, texts)
        else:
            self._writer.put(namespace, collection, ids, vectors, texts)

    async def _write(
        self, namespace: Namespace, ids: list[str], vectors: np.ndarray, texts: list[str] | None
    ) -> None:
        """Store new vectors now; a failure is counted, never raised."""
        # Write-behind batches several calls' vectors: their span starts a trace of its own.
        root = not self.settings.write_through
        with tracing.span("cached_tei.cache.write", root=root, vectors=len(ids)) as current:
            outcome, written = await self._guarded(
                lambda: self.store.upsert(namespace, ids, vectors, texts), "write"
            )
            current.set_attribute("cached_tei.outcome", outcome)
        if outcome == "done":
            self.stats.writes += len(ids)
            self.stats.bytes_written += written or 0
        elif outcome == "failed":
            self.stats.write_errors += len(ids)
        else:
            self.stats.writes_dropped += len(ids)


def _matrix(gathered: _Gathered) -> np.ndarray:
    """The call's vectors stacked in input order."""
    if not gathered.vectors:
        return np.zeros((0, 0), dtype=np.float32)
    matrix = _stacked(gathered.vectors)
    if len(gathered.vectors) < len(gathered.inverse):
        matrix = matrix[gathered.inverse]
    return matrix


def _lists(gathered: _Gathered) -> list[list[float]]:
    """The call's vectors as lists in input order: the store's own where it gave lists, the
    others converted once; a repeated text gets a list of its own."""
    passed = gathered.lists or {}
    unique = [
        passed[key] if key in passed else vector.tolist()  # type: ignore[union-attr]
        for key, vector in zip(gathered.keys, gathered.vectors, strict=True)
    ]
    if len(unique) == len(gathered.inverse):
        return unique
    seen: set[int] = set()
    ordered = []
    for index in gathered.inverse:
        ordered.append(unique[index] if index not in seen else unique[index].copy())
        seen.add(index)
    return ordered


def _model_name(namespace: Namespace, dimension: int) -> str:
    revision = f" revision {namespace.model_sha}" if namespace.model_sha else ""
    return f"{namespace.model_id}{revision} ({dimension} dimensions)"


def _memory_cache(settings: CachedTEISettings) -> Cache[tuple[str, str], np.ndarray] | None:
    """The in-process LRU, bounded in bytes; with a TTL its entries also expire (at most one
    TTL after they were computed or read from the store)."""
    if not settings.lru_bytes:
        return None
    if settings.ttl is not None:
        return TTLCache(settings.lru_bytes, settings.ttl, getsizeof=_entry_size)
    return LRUCache(settings.lru_bytes, getsizeof=_entry_size)


def _entry_size(vector: Any) -> int:
    if isinstance(vector, np.ndarray):
        return int(vector.nbytes) + _ENTRY_OVERHEAD
    # A SparseVector: two lists of Python numbers (a pointer and a 24-32 byte object each).
    return len(vector.indices) * 2 * (8 + 28) + _ENTRY_OVERHEAD


def _owned(row: Any) -> Any:
    """A row of its own, so that the cache never keeps a whole batch alive (a SparseVector
    is its own already)."""
    return row.copy() if isinstance(row, np.ndarray) else row


def _stacked(rows: list[Any]) -> np.ndarray:
    """One call's rows as a float32 matrix (a copy: the rows may be the cache's own), or an
    object array of SparseVectors."""
    if isinstance(rows[0], np.ndarray):
        return np.array(rows)  # several times faster than np.stack, for 1 row or 4,000
    stacked = np.empty(len(rows), dtype=object)
    stacked[:] = rows
    return stacked


async def _within(operation: Awaitable[T], seconds: float) -> T:
    """``operation`` under a timeout that never swallows the caller's cancellation (Python
    3.11's ``wait_for`` does when the operation finishes as the caller is cancelled: then a
    write-behind task never ends, and neither does the ``asyncio.run`` around it)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await operation
    return await asyncio.wait_for(operation, seconds)


def _deduplicate(texts: list[str]) -> tuple[list[str], list[int]]:
    """The distinct texts in first-seen order, and each input's index among them."""
    positions: dict[str, int] = {}
    inverse = [positions.setdefault(text, len(positions)) for text in texts]
    return list(positions), inverse


def _consume_exception(future: asyncio.Future[Any]) -> None:
    # A background task's caller may be gone; mark its exception retrieved so asyncio does
    # not log "exception was never retrieved".
    if not future.cancelled():
        future.exception()
