"""The write-behind queue: new vectors reach Qdrant in batches, off the request path."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .keys import Namespace
from .stats import Stats

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    namespace: Namespace
    collection: str
    ids: list[str]
    vectors: np.ndarray
    texts: list[str] | None


Write = Callable[[Namespace, list[str], np.ndarray, "list[str] | None"], Awaitable[None]]


class WriteBehind:
    """Holds new vectors until ``write`` has stored them; bounded to ``capacity`` vectors.

    Vectors waiting here are served by ``get`` so a text is never computed twice while its
    write is pending. Writes never hold up a caller: when the queue is full, new vectors are
    dropped from the cache and counted (``writes_dropped``). ``write`` handles (and counts)
    the store's failures.
    """

    def __init__(self, write: Write, stats: Stats, *, capacity: int, batch_size: int) -> None:
        self._write_batch = write
        self._stats = stats
        self._capacity = capacity
        self._batch_size = batch_size
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._waiting: dict[tuple[str, str], np.ndarray] = {}
        self._queued = 0

    def get(self, collection: str, point_id: str) -> np.ndarray | None:
        return self._waiting.get((collection, point_id))

    def put(
        self,
        namespace: Namespace,
        collection: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        texts: Sequence[str] | None,
    ) -> None:
        """Queue new vectors for writing; returns at once."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(), name="cached-tei-write-behind")
        count = len(ids)
        if self._queued and self._queued + count > self._capacity:
            # Never make a caller wait for the cache: a full queue means Qdrant is slower
            # than TEI right now, and these vectors are simply not cached.
            self._stats.writes_dropped += count
            log.warning(
                "write-behind queue full (%d vectors waiting): %d vectors not cached; "
                "raise CACHED_TEI_WRITE_QUEUE_SIZE or speed up Qdrant",
                self._queued,
                count,
            )
            return
        self._queued += count
        self._stats.pending_writes = self._queued
        for point_id, vector in zip(ids, vectors, strict=True):
            self._waiting[(collection, point_id)] = vector
        self._queue.put_nowait(
            _Pending(
                namespace,
                collection,
                list(ids),
                vectors,
                list(texts) if texts is not None else None,
            )
        )

    async def flush(self) -> None:
        """Return once everything queued so far is written (or has failed and been counted)."""
        if self._queue is not None:
            await self._queue.join()

    async def aclose(self) -> None:
        await self.flush()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
            self._queue = None

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].ids)
            while size < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                size += len(batch[-1].ids)
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()
                self._release(batch)

    async def _write(self, batch: list[_Pending]) -> None:
        by_namespace: dict[Namespace, list[_Pending]] = {}
        for item in batch:
            by_namespace.setdefault(item.namespace, []).append(item)
        for namespace, items in by_namespace.items():
            ids = [point_id for item in items for point_id in item.ids]
            vectors = np.concatenate([item.vectors for item in items])
            texts = None
            if all(item.texts is not None for item in items):
                texts = [text for item in items for text in item.texts or []]
            try:
                await self._write_batch(namespace, ids, vectors, texts)
            except Exception as exc:  # a refused collection (StoreConfigurationError)
                self._stats.write_errors += len(ids)
                log.error("could not write %d vectors to the cache: %s", len(ids), exc)

    def _release(self, batch: list[_Pending]) -> None:
        for item in batch:
            for point_id in item.ids:
                self._waiting.pop((item.collection, point_id), None)
            self._queued -= len(item.ids)
        self._stats.pending_writes = self._queued
