"""Free disk space for the embedded store: it stops writing before the disk fills.

qdrant-edge memory-maps its files; a page it cannot allocate on a full disk kills the
process with SIGBUS (no exception, no log line). Two things allocate: writes, and, on tmpfs,
loading a shard (it reads its vector files whole, and reading a hole allocates it there). So
a write needs its own growth plus a margin free, and opening a shard needs the holes in its
vector files plus a little free.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import StoreDiskFullError
from .shards import step_points

log = logging.getLogger(__name__)

# Bytes one stored point can take beyond its vector: WAL record, id tracker, payload page.
_POINT_OVERHEAD = 1024
# Vector bytes land three times: the vector file, the WAL, the WAL's next segment.
_VECTOR_COPIES = 3
# Metadata qdrant-edge writes when it opens or flushes a shard (configs, versions, WAL heads).
_OPEN_SLACK = 1 << 20
_DEFAULT_SLACK = 8 << 20


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged process may still write on the filesystem holding ``path``."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def write_growth(points: int, dimension: int) -> int:
    """A generous estimate of what writing ``points`` vectors of ``dimension`` takes on disk."""
    return points * (_VECTOR_COPIES * 4 * dimension + _POINT_OVERHEAD)


def unallocated_bytes(shard: Path) -> int:
    """Bytes of the shard's vector files that are holes: loading can allocate them (tmpfs)."""
    holes = 0
    for segment in (shard / "segments").glob("*/vector_storage"):
        for path in segment.rglob("*"):
            if path.is_file():
                stat = path.stat()
                holes += max(0, stat.st_size - stat.st_blocks * 512)
    return holes


class DiskGuard:
    """Checks free space before the store writes or opens a shard; logs once per episode.

    ``min_free`` (``min_free_disk_bytes``) is the margin kept free; None sizes it to the
    store's next growth: one write step of the collection's vectors, plus 8 MiB.
    """

    def __init__(self, root: Path, min_free: int | None) -> None:
        self._root = root
        self._min_free = min_free
        self._refused: set[str] = set()  # what is refused now: "write" or a shard's name

    @property
    def full(self) -> bool:
        """Whether writes are refused now."""
        return "write" in self._refused

    def margin(self, dimension: int) -> int:
        if self._min_free is not None:
            return self._min_free
        return write_growth(step_points(dimension), dimension) + _DEFAULT_SLACK

    def check_write(self, points: int, dimension: int) -> None:
        """Raise StoreDiskFullError unless ``points`` new vectors leave the margin free."""
        needed = write_growth(points, dimension) + self.margin(dimension)
        self._check("write", needed, f"writing {points} vectors")

    def check_open(self, shard: Path) -> None:
        """Raise StoreDiskFullError unless loading ``shard`` cannot run out of disk."""
        name = shard.parent.name
        self._check(name, unallocated_bytes(shard) + _OPEN_SLACK, f"opening {name}")

    def _check(self, what: str, needed: int, action: str) -> None:
        free = free_bytes(self._root)
        refused = what in self._refused
        # Once refused, twice the space is needed again: no flapping with every write's size.
        if free >= (2 * needed if refused else needed):
            if refused:
                self._refused.discard(what)
                log.warning(
                    "%.1f MiB free again at %s: %s resumes", free / 2**20, self._root, action
                )
            return
        error = StoreDiskFullError(str(self._root), free, needed, action)
        if what not in self._refused:
            self._refused.add(what)
            log.error("%s", error)
        raise error
