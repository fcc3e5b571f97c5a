"""The embedded folder's open shards: a bounded LRU, flushed in steps.

Each open qdrant-edge shard holds a thread, a file descriptor and a dozen memory maps until
it is closed; with one per namespace (tenants times request options) they would grow without
bound. The least recently used shard is closed when the cap is reached, and reopened from
disk when it is needed again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import qdrant_edge as edge

from .ledger import lost_entries, record

log = logging.getLogger(__name__)

# qdrant-edge holds the GIL in every call (0.9: no allow_threads), so the store calls it in
# steps that each hold it for a few milliseconds. Measured on a 2-core machine: an upsert
# costs ~15 us per point plus ~1.7 ns per vector byte, a flush ~0.6 ns per unflushed vector
# byte of CPU (plus its syncs).
_STEP_BYTES = 1 << 19
_MAX_STEP = 128
# Vector bytes after which a shard's pages are written back to disk in a thread (no GIL:
# qdrant-edge's own flush holds it through its syncs, ~100 ms on a busy disk), and after which
# it is flushed (~5 ms of CPU at 0.6 ns per byte), so that close has little left to do.
WRITE_BACK_BYTES = 4 << 20
FLUSH_BYTES = 8 << 20


def step_points(dimension: int) -> int:
    """Points per qdrant-edge call (upsert or retrieve) for vectors of ``dimension``."""
    return max(16, min(_MAX_STEP, _STEP_BYTES // (4 * dimension)))


class OpenShard:
    """An open shard in ``folder``: its vector size, the vector bytes written since its last
    flush, and the entries its id tracker lost before it was opened."""

    __slots__ = ("dimension", "folder", "lost", "shard", "unflushed", "unsynced")

    def __init__(self, shard: edge.EdgeShard, folder: Path, dimension: int) -> None:
        self.shard = shard
        self.folder = folder
        self.dimension = dimension
        self.unflushed = 0
        self.unsynced = 0
        self.lost = lost_entries(folder, self.count())

    def count(self) -> int:
        return int(self.shard.count(edge.CountRequest(exact=True)))

    def wrote(self, points: int) -> tuple[bool, bool]:
        """Count ``points`` written; whether a write-back, and a flush, are due."""
        written = points * 4 * self.dimension
        self.unflushed += written
        self.unsynced += written
        return self.unsynced >= WRITE_BACK_BYTES, self.unflushed >= FLUSH_BYTES

    def write_back(self) -> None:
        """Write the shard's dirty pages to disk, without the GIL (``os.fsync`` releases it):
        run in a thread, so that the syncs of ``flush`` and ``close``, which hold the GIL,
        find little left to do."""
        self.unsynced = 0
        for path in self.folder.rglob("*"):
            if path.is_file():
                try:
                    descriptor = os.open(path, os.O_RDONLY)
                except OSError:  # replaced meanwhile
                    continue
                try:
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)

    async def write_back_off_loop(self) -> None:
        """``write_back`` in a thread; inline once the interpreter is exiting (no threads)."""
        try:
            await asyncio.to_thread(self.write_back)
        except RuntimeError:  # "cannot schedule new futures after shutdown"
            self.write_back()

    def flush(self) -> None:
        """Persist the shard, and record how many entries it holds."""
        self.shard.flush()
        self.unflushed = 0
        record(self.folder, self.count())

    def close(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # a folder deleted under it: still close, and say so
            log.warning("cache collection %s could not be flushed: %s", self.folder, exc)
        self.shard.close()


class OpenShards:
    """Open shards by collection name, at most ``cap``; the least recently used close first."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: OrderedDict[str, OpenShard] = OrderedDict()

    def get(self, name: str) -> OpenShard | None:
        opened = self._open.get(name)
        if opened is not None:
            self._open.move_to_end(name)
        return opened

    def __getitem__(self, name: str) -> tuple[edge.EdgeShard, int]:
        opened = self._open[name]
        return opened.shard, opened.dimension

    def __contains__(self, name: object) -> bool:
        return name in self._open

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[str]:
        return iter(self._open)

    def add(self, folder: Path, shard: edge.EdgeShard, dimension: int) -> OpenShard:
        """Keep the shard of the collection in ``folder`` open, closing the least recently
        used ones beyond the cap."""
        while len(self._open) >= self.cap:
            oldest, idle = self._open.popitem(last=False)
            idle.close()
            log.debug("closed idle cache collection %s (%d open at most)", oldest, self.cap)
        opened = self._open[folder.name] = OpenShard(shard, folder, dimension)
        return opened

    def forget(self, name: str) -> None:
        """Close a shard whose folder is about to go, without a last flush."""
        opened = self._open.pop(name, None)
        if opened is not None:
            opened.shard.close()

    def pop_oldest(self) -> OpenShard | None:
        """Forget the least recently used shard and return it (to close), None if none is open."""
        return self._open.popitem(last=False)[1] if self._open else None
