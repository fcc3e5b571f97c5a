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
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
from cachetools import Cache, LRUCache, TTLCache

from . import tracing
from .breaker import CircuitBreaker
from .errors import (
    CachedTEIError,
    InputError,
    StoreConfigurationError,
    StoreDiskFullError,
    TEIError,
)
from .keys import EmbedOptions, Namespace, point_id
from .settings import CachedTEISettings
from .stats import Stats
from .stores import CacheStore, open_store
from .tei import TEIClient, TEIInfo
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

    ``hits`` and ``misses`` count distinct texts: ``hits`` came from the cache, ``misses`` were
    computed by TEI (for this call or a concurrent one).
    """

    vectors: np.ndarray
    hits: int
    misses: int


def prepare_texts(texts: Sequence[str], instruction: str = "") -> list[str]:
    """Check the texts and return them as TEI will see them; raises InputError naming the index."""
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
        if not text:
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
    engine directly inside one event loop (as the proxy does).
    """

    def __init__(self, settings: CachedTEISettings) -> None:
        tracing.configure()
        self.settings = settings
        self.stats = Stats()
        self.tei = TEIClient(settings, self.stats)
        self.store: CacheStore = open_store(settings)
        self.breaker = CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown)
        self._writer = WriteBehind(
            self._write,
            self.stats,
            capacity=settings.write_queue_size,
            batch_size=settings.write_batch_size,
        )
        self._memory = _memory_cache(settings)
        self._inflight: dict[tuple[str, str], _Flight] = {}
        self._namespaces: dict[tuple[TEIInfo, EmbedOptions], Namespace] = {}
        self._remembered_info: TEIInfo | None = None
        self._probe_after = 0.0
        self._remembering: asyncio.Task[None] | None = None
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
        if self._remembering is None:
            self._remembering = self._in_background(self._remember_info(info))
        return info

    async def namespace(self, options: EmbedOptions) -> Namespace:
        """The namespace (and so the collection) that vectors for ``options`` belong to."""
        info = await self.info()
        namespace = self._namespaces.get((info, options))
        if namespace is None:
            namespace = Namespace.of(info, options)
            self._namespaces[(info, options)] = namespace
        return namespace

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
        with tracing.span("cached_tei.embed") as current:
            result = await self._embed(texts, options, read_cache, write_cache)
            current.set_attribute("cached_tei.texts", len(result.vectors))
            current.set_attribute("cached_tei.hits", result.hits)
            current.set_attribute("cached_tei.misses", result.misses)
        return result

    async def _embed(
        self, texts: Sequence[str], options: EmbedOptions, read_cache: bool, write_cache: bool
    ) -> EmbedResult:
        prepared = prepare_texts(texts, options.instruction)
        if not prepared:
            return EmbedResult(np.zeros((0, 0), dtype=np.float32), 0, 0)
        namespace = await self.namespace(options)
        collection = namespace.collection(self.settings.collection_prefix)
        if self._expiry is None and self.settings.ttl is not None:
            self._expiry = asyncio.create_task(self._expire(), name="cached-tei-expiry")

        positions: dict[str, int] = {}
        inverse = [positions.setdefault(text, len(positions)) for text in prepared]
        unique = list(positions)
        self.stats.duplicates += len(prepared) - len(unique)
        keys = [point_id(text) for text in unique]

        vectors: list[np.ndarray | None] = [None] * len(unique)
        joined: list[tuple[int, _Flight]] = []
        own: list[int] = []
        memory_hits = 0
        if read_cache:
            for index, key in enumerate(keys):
                vector = self._from_memory(collection, key)
                if vector is not None:
                    vectors[index] = vector
                    memory_hits += 1
                    continue
                flight = self._inflight.get((collection, key))
                if flight is None:
                    own.append(index)
                else:
                    joined.append((index, flight))
        else:
            own = list(range(len(unique)))

        store_hits = 0
        if own:
            flight = _Flight([keys[index] for index in own])
            # Only a call that reads and writes the cache computes texts for others.
            if read_cache and write_cache:
                for key in flight.keys:
                    self._inflight[(collection, key)] = flight
            # The work runs as its own task so that a cancelled caller never strands other
            # calls waiting on the same texts.
            texts_owned = [unique[i] for i in own]
            work = self._resolve(
                namespace, collection, options, texts_owned, flight, read_cache, write_cache
            )
            store_hits = await asyncio.shield(self._in_background(work))
            for index, key in zip(own, flight.keys, strict=True):
                vectors[index] = flight.vectors[key]
        if joined:  # texts another call is computing
            flights = {id(flight): flight.done for _, flight in joined}
            await asyncio.wait(flights.values())
            for index, flight in joined:
                flight.done.result()  # the other call's error, if it failed
                vectors[index] = flight.vectors[keys[index]]

        hits = memory_hits + store_hits
        self.stats.hits += hits
        self.stats.memory_hits += memory_hits
        self.stats.misses += len(unique) - hits
        self.stats.coalesced += len(joined)
        matrix = np.stack(vectors)  # type: ignore[arg-type]
        if len(unique) < len(prepared):
            matrix = matrix[inverse]
        return EmbedResult(matrix, hits, len(unique) - hits)

    async def flush(self) -> None:
        """Wait until every vector computed so far is written to Qdrant."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._writer.flush()

    async def aclose(self) -> None:
        """Drain pending writes, then close the TEI and Qdrant clients."""
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
        except Exception as exc:
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
            except Exception as exc:
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
        fail, embedding must not. The value is None unless the operation was done."""
        if not self.breaker.allow():
            return "skipped", None
        try:
            result = await asyncio.wait_for(operation(), self.settings.qdrant_timeout)
        except StoreDiskFullError:  # the store declined (and logged it): no Qdrant failure
            self.stats.disk_full += 1
            return "skipped", None
        except StoreConfigurationError:
            raise
        except Exception as exc:
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
        self,
        namespace: Namespace,
        collection: str,
        options: EmbedOptions,
        texts: list[str],
        flight: _Flight,
        read_cache: bool,
        write_cache: bool,
    ) -> int:
        """Fill ``flight`` from Qdrant, then TEI, and settle it; returns the store hits."""
        try:
            found = await self._lookup(namespace, flight.keys) if read_cache else {}
            flight.vectors.update(found)
            if write_cache:
                for key, vector in found.items():
                    self._keep_in_memory(collection, key, vector)
            missing = [index for index, key in enumerate(flight.keys) if key not in found]
            if missing:
                await self._compute(
                    namespace,
                    collection,
                    options,
                    [texts[index] for index in missing],
                    [flight.keys[index] for index in missing],
                    flight,
                    write_cache,
                )
            flight.done.set_result(None)
            return len(found)
        except Exception as exc:
            flight.done.set_exception(exc)
            raise
        except BaseException:  # cancelled (the engine is closing): never strand the waiters
            flight.done.set_exception(
                CachedTEIError("the call computing these texts was cancelled; try again")
            )
            raise
        finally:
            for key in flight.keys:
                if self._inflight.get((collection, key)) is flight:
                    del self._inflight[(collection, key)]

    async def _compute(
        self,
        namespace: Namespace,
        collection: str,
        options: EmbedOptions,
        texts: list[str],
        keys: list[str],
        flight: _Flight,
        write_cache: bool,
    ) -> None:
        async def arrived(start: int, batch: np.ndarray) -> None:
            part = keys[start : start + len(batch)]
            for key, row in zip(part, batch, strict=True):
                row = row.copy()  # a row of its own, so the cache holds no whole batch
                flight.vectors[key] = row
                if write_cache:
                    self._keep_in_memory(collection, key, row)
            if write_cache:
                kept = texts[start : start + len(batch)] if self.settings.store_text else None
                await self._save(namespace, collection, part, batch, kept)

        await self.tei.embed(texts, options, on_batch=arrived)

    async def _lookup(self, namespace: Namespace, keys: list[str]) -> dict[str, np.ndarray]:
        not_before = None if self.settings.ttl is None else int(time.time() - self.settings.ttl)
        with tracing.span("cached_tei.cache.lookup", keys=len(keys)) as current:
            outcome, found = await self._guarded(
                lambda: self.store.lookup(namespace, keys, not_before), "lookup"
            )
            current.set_attribute("cached_tei.outcome", outcome)
            current.set_attribute("cached_tei.hits", len(found or ()))
        if outcome == "skipped":
            self.stats.cache_skipped += len(keys)
        return found or {}

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


def _memory_cache(settings: CachedTEISettings) -> Cache[tuple[str, str], np.ndarray] | None:
    """The in-process LRU, bounded in bytes; with a TTL its entries also expire (at most one
    TTL after they were computed or read from the store)."""
    if not settings.lru_bytes:
        return None
    if settings.ttl is not None:
        return TTLCache(settings.lru_bytes, settings.ttl, getsizeof=_entry_size)
    return LRUCache(settings.lru_bytes, getsizeof=_entry_size)


def _entry_size(vector: np.ndarray) -> int:
    return int(vector.nbytes) + _ENTRY_OVERHEAD


class _Flight:
    """Texts one call is resolving; concurrent calls that need them wait on ``done``."""

    __slots__ = ("done", "keys", "vectors")

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.vectors: dict[str, np.ndarray] = {}
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done.add_done_callback(_consume_exception)


def _consume_exception(future: asyncio.Future[Any]) -> None:
    # Several calls may wait on one flight (or none, when its caller was cancelled); mark
    # its exception retrieved so asyncio does not log "exception was never retrieved".
    if not future.cancelled():
        future.exception()
