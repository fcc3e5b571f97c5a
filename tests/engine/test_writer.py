"""The write-behind queue on its own: batching, serving pending vectors, bounds, failures."""

from __future__ import annotations

import asyncio

import numpy as np

from cached_tei.keys import Namespace
from cached_tei.stats import Stats
from cached_tei.writer import WriteBehind

FIRST = Namespace("org/a", None, True, False, "Right", None, None)
SECOND = Namespace("org/b", None, True, False, "Right", None, None)


class Store:
    """Records every write; ``gate`` holds writes back until set; ``fail`` raises."""

    def __init__(self) -> None:
        self.writes: list[tuple[Namespace, list[str], np.ndarray, list[str] | None]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def write(
        self, namespace: Namespace, ids: list[str], vectors: np.ndarray, texts: list[str] | None
    ) -> None:
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.writes.append((namespace, ids, vectors, texts))


def rows(count: int, start: int = 0) -> tuple[list[str], np.ndarray]:
    ids = [f"id-{i}" for i in range(start, start + count)]
    return ids, np.arange(start, start + count, dtype=np.float32).reshape(count, 1)


async def test_puts_return_at_once_and_are_written_in_one_batch() -> None:
    store, stats = Store(), Stats()
    writer = WriteBehind(store.write, stats, capacity=100, batch_size=10)
    for start in (0, 3, 6):
        ids, vectors = rows(3, start)
        writer.put(FIRST, "c", ids, vectors, None)
    await writer.flush()
    [(namespace, ids, vectors, texts)] = store.writes
    assert (namespace, ids, texts) == (FIRST, [f"id-{i}" for i in range(9)], None)
    assert vectors.ravel().tolist() == list(range(9))
    await writer.aclose()


async def test_pending_vectors_are_served_until_written() -> None:
    store, stats = Store(), Stats()
    store.gate.clear()
    writer = WriteBehind(store.write, stats, capacity=100, batch_size=10)
    ids, vectors = rows(2)
    writer.put(FIRST, "c", ids, vectors, None)
    pending = writer.get("c", "id-1")
    assert pending is not None and pending.tolist() == [1.0]
    assert writer.get("other", "id-1") is None
    assert stats.pending_writes == 2
    store.gate.set()
    await writer.flush()
    assert writer.get("c", "id-1") is None
    assert stats.pending_writes == 0
    await writer.aclose()


async def test_a_full_queue_drops_new_vectors_and_counts_them() -> None:
    store, stats = Store(), Stats()
    store.gate.clear()
    writer = WriteBehind(store.write, stats, capacity=4, batch_size=10)
    writer.put(FIRST, "c", *rows(3), None)
    writer.put(FIRST, "c", *rows(2, 3), None)  # 3 + 2 > 4: not cached
    assert stats.writes_dropped == 2
    assert writer.get("c", "id-3") is None
    store.gate.set()
    await writer.flush()
    assert [ids for _, ids, _, _ in store.writes] == [["id-0", "id-1", "id-2"]]
    await writer.aclose()


async def test_namespaces_are_written_separately() -> None:
    store, stats = Store(), Stats()
    store.gate.clear()
    writer = WriteBehind(store.write, stats, capacity=100, batch_size=10)
    writer.put(FIRST, "a", *rows(1), ["one"])
    writer.put(SECOND, "b", *rows(1, 1), ["two"])
    store.gate.set()
    await writer.flush()
    assert [(n, ids, texts) for n, ids, _, texts in store.writes] == [
        (FIRST, ["id-0"], ["one"]),
        (SECOND, ["id-1"], ["two"]),
    ]
    await writer.aclose()


async def test_a_failed_write_is_counted_and_the_queue_goes_on() -> None:
    store, stats = Store(), Stats()
    writer = WriteBehind(store.write, stats, capacity=100, batch_size=10)
    store.fail = RuntimeError("collection refused")
    writer.put(FIRST, "c", *rows(2), None)
    await writer.flush()
    assert stats.write_errors == 2
    store.fail = None
    writer.put(FIRST, "c", *rows(1, 2), None)
    await writer.flush()
    assert [ids for _, ids, _, _ in store.writes] == [["id-2"]]
    assert stats.pending_writes == 0
    await writer.aclose()
