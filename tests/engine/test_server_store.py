"""The server store against the Qdrant stand-in (real HTTP, validated against Qdrant 1.19's
API) and in qdrant-client's in-memory mode: exact raw rows (vectors, creation times,
checksums), missing ids, and how often it asks Qdrant whether a collection exists."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import numpy as np
import pytest

from cached_tei import CachedEmbedder, SparseVector
from cached_tei.integrity import checksums
from cached_tei.keys import Namespace
from cached_tei.settings import CachedTEISettings
from cached_tei.stores import server
from cached_tei.stores.base import CHUNK
from cached_tei.stores.server import QdrantServerStore, rest_base_url
from tests.faults.fake_qdrant import FakeQdrant
from tests.tei_emulator import EmulatorServer, expected_vector

pytestmark = pytest.mark.timeout(60)

NAMESPACE = Namespace("org/model", "abc123", True, False, "Right", None, None)
EXISTS = "GET /collections/{collection_name}/exists"
RETRIEVE = "POST /collections/{collection_name}/points"
CREATE = "PUT /collections/{collection_name}"


@pytest.fixture
def qdrant() -> Iterator[FakeQdrant]:
    with FakeQdrant() as q:
        yield q
        assert q.violations == []


def make_store(location: str, **settings: object) -> QdrantServerStore:
    return QdrantServerStore(CachedTEISettings(qdrant_url=location, **settings))


@pytest.fixture(params=["server", "memory"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[QdrantServerStore]:
    if request.param == "server":
        qdrant = request.getfixturevalue("qdrant")
        made = make_store(qdrant.url)
    else:
        made = make_store(":memory:")
    yield made
    await made.aclose()


def ids_of(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [str(uuid.UUID(bytes=rng.bytes(16))) for _ in range(count)]


def hard_vectors(count: int, dim: int) -> np.ndarray:
    """float32 vectors from random bit patterns (every exponent, subnormals, -0.0)."""
    bits = np.random.default_rng(dim).integers(0, 2**32, (count, dim), dtype=np.uint64)
    vectors = bits.astype(np.uint32).view(np.float32)
    vectors[~np.isfinite(vectors)] = 0.0  # JSON has no NaN or infinity
    vectors[0, :3] = [-0.0, np.float32(1e-45), np.float32(3.4028235e38)]
    return vectors


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.float32 and np.array_equal(a.view(np.uint32), b.view(np.uint32))


async def found(store: QdrantServerStore, ids: list[str]) -> dict[str, np.ndarray]:
    """id -> vector of the rows a lookup returns."""
    rows = await store.lookup(NAMESPACE, ids)
    return dict(zip(rows.ids, rows.vectors, strict=True))


async def test_lookup_round_trips_float32_exactly(store: QdrantServerStore) -> None:
    ids = ids_of(CHUNK * 2 + 5)  # three chunks
    vectors = hard_vectors(len(ids), 24)
    await store.upsert(NAMESPACE, ids, vectors)
    rows = await store.lookup(NAMESPACE, ids)
    assert rows.ids == ids
    assert same_bits(rows.vectors, vectors)


async def test_lookup_returns_creation_times_and_checksums_raw(store: QdrantServerStore) -> None:
    ids = ids_of(6)
    vectors = hard_vectors(6, 8)
    before = int(time.time())
    await store.upsert(NAMESPACE, ids[:4], vectors[:4])
    rows = await store.lookup(NAMESPACE, ids)
    assert rows.ids == ids[:4]  # missing ids left out
    assert same_bits(rows.vectors, vectors[:4])
    assert all(before <= created <= time.time() for created in rows.created)
    assert rows.checksums == checksums(ids[:4], vectors[:4])
    empty = await store.lookup(NAMESPACE, [])
    assert (empty.ids, empty.vectors.shape) == ([], (0, 0))


async def test_a_missing_collection_is_asked_about_once_per_interval(qdrant: FakeQdrant) -> None:
    store = make_store(qdrant.url)
    for _ in range(50):
        assert await found(store, ids_of(3)) == {}
    await store.aclose()
    assert qdrant.requests[EXISTS] == 1
    assert qdrant.requests[RETRIEVE] == 0


async def test_creating_the_collection_forgets_it_was_missing(qdrant: FakeQdrant) -> None:
    store = make_store(qdrant.url)
    ids, vectors = ids_of(3), hard_vectors(3, 8)
    assert await found(store, ids) == {}
    await store.upsert(NAMESPACE, ids, vectors)
    rows = await store.lookup(NAMESPACE, ids)  # within the interval
    await store.aclose()
    assert same_bits(rows.vectors, vectors)


class Clock:
    """Stands in for the store's ``time`` module: monotonic time moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return time.time()


async def test_a_collection_created_elsewhere_is_seen_after_the_interval(
    qdrant: FakeQdrant, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(server, "time", clock)
    reader, writer = make_store(qdrant.url), make_store(qdrant.url)
    ids, vectors = ids_of(3), hard_vectors(3, 8)
    assert await found(reader, ids) == {}
    await writer.upsert(NAMESPACE, ids, vectors)
    clock.now += server.MISSING_RECHECK_S * 0.9
    assert await found(reader, ids) == {}  # still remembered as missing
    clock.now += server.MISSING_RECHECK_S * 0.2
    rows = await reader.lookup(NAMESPACE, ids)
    await reader.aclose()
    await writer.aclose()
    assert same_bits(rows.vectors, vectors)
    assert qdrant.requests[EXISTS] == 3  # reader twice, writer once


async def test_a_collection_cleared_elsewhere_is_missing_then_recreated(
    qdrant: FakeQdrant,
) -> None:
    mine, other = make_store(qdrant.url), make_store(qdrant.url)
    ids, vectors = ids_of(3), hard_vectors(3, 8)
    await mine.upsert(NAMESPACE, ids, vectors)
    assert len(await found(mine, ids)) == 3
    assert await other.clear() == 3
    retrieves = qdrant.requests[RETRIEVE]
    assert await found(mine, ids) == {}  # Qdrant's 404
    assert await found(mine, ids) == {}  # remembered: not asked again
    assert qdrant.requests[RETRIEVE] == retrieves + 1
    await mine.upsert(NAMESPACE, ids, vectors)
    assert len(await found(mine, ids)) == 3
    await mine.aclose()
    await other.aclose()


async def test_workers_starting_cold_both_write(qdrant: FakeQdrant) -> None:
    """Two processes find the collection missing and both create it: the loser's 409 is not
    an error, its entries are written."""
    first, second = make_store(qdrant.url), make_store(qdrant.url)
    ids, vectors = ids_of(4), hard_vectors(4, 8)
    await asyncio.gather(
        first.upsert(NAMESPACE, ids[:2], vectors[:2]),
        second.upsert(NAMESPACE, ids[2:], vectors[2:]),
    )
    stored = await found(first, ids)
    await first.aclose()
    await second.aclose()
    assert qdrant.requests[CREATE] == 2
    assert same_bits(np.stack([stored[i] for i in ids]), vectors)


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
async def test_the_api_key_goes_with_every_request() -> None:
    with FakeQdrant(api_key="s3cret") as qdrant:
        store = make_store(qdrant.url, qdrant_api_key="s3cret")
        ids, vectors = ids_of(3), hard_vectors(3, 8)
        await store.upsert(NAMESPACE, ids, vectors)
        rows = await store.lookup(NAMESPACE, ids)
        await store.aclose()
        assert qdrant.violations == []
    assert same_bits(rows.vectors, vectors)


def grpc_store(qdrant: FakeQdrant) -> QdrantServerStore:
    """A store that looks up over gRPC on the stand-in's gRPC port (settings have no port: a
    real server listens on 6334)."""
    from qdrant_client import AsyncQdrantClient

    store = make_store(qdrant.url, qdrant_prefer_grpc=True)
    store._client = AsyncQdrantClient(
        url=qdrant.url, grpc_port=qdrant.grpc_port, prefer_grpc=True, check_compatibility=False
    )
    return store


async def test_lookups_over_grpc_read_packed_floats_exactly() -> None:
    ids = ids_of(CHUNK + 7)
    vectors = hard_vectors(len(ids), 16)
    unknown = ids_of(3, seed=1)
    with FakeQdrant(grpc=True) as qdrant:
        writer, reader = make_store(qdrant.url), grpc_store(qdrant)
        assert await found(reader, ids) == {}
        before = int(time.time())
        await writer.upsert(NAMESPACE, ids[:-1], vectors[:-1])
        reader._missing_until.clear()
        rows = await reader.lookup(NAMESPACE, unknown + ids)
        assert await writer.clear() == len(ids) - 1
        assert await found(reader, ids) == {}  # NOT_FOUND
        await reader.aclose()
        await writer.aclose()
        assert qdrant.requests["grpc Points/Get"] == 2 + 1
        assert qdrant.requests[RETRIEVE] == 0
    assert rows.ids == ids[:-1]
    assert same_bits(rows.vectors, vectors[:-1])
    assert all(before <= created <= time.time() for created in rows.created)
    assert rows.checksums == checksums(ids[:-1], vectors[:-1])


def test_grpc_answers_with_the_deprecated_flat_field_are_read() -> None:
    from qdrant_client import grpc

    vectors = hard_vectors(3, 8)
    points = []
    for i, vector in enumerate(vectors):
        point = grpc.RetrievedPoint(id=grpc.PointId(uuid=f"id-{i}"))
        point.payload["created"].integer_value = 100 + i
        if i == 1:
            point.vectors.vector.dense.data.extend(vector.tolist())
        else:
            point.vectors.vector.data.extend(vector.tolist())
        points.append(point)
    rows = server.grpc_rows(points)
    assert rows.ids == ["id-0", "id-1", "id-2"]
    assert same_bits(rows.vectors, vectors)
    assert (rows.created, rows.checksums) == ([100, 101, 102], [None, None, None])
    assert server.grpc_rows([]).vectors.shape == (0, 0)


@pytest.mark.parametrize(
    "url",
    [
        "http://qdrant",
        "http://qdrant:6333",
        "https://cloud.example:443",
        "http://127.0.0.1:7000/prefix",
        "http://qdrant/prefix/",
    ],
)
def test_lookups_go_where_qdrant_client_goes(url: str) -> None:
    from qdrant_client import AsyncQdrantClient

    client = AsyncQdrantClient(url=url, check_compatibility=False)
    assert rest_base_url(url) == client._client.rest_uri.rstrip("/")  # type: ignore[union-attr]


@pytest.mark.parametrize("ttl", [None, 3600])
def test_cached_vectors_come_back_exactly_from_a_server(
    tei: EmulatorServer, qdrant: FakeQdrant, ttl: int | None
) -> None:
    texts = [f"server text {i}" for i in range(40)]
    settings = {"tei_url": tei.url, "qdrant_url": qdrant.url, "lru_bytes": 0, "ttl": ttl}
    with CachedEmbedder(**settings) as first:
        first.embed(texts)
    with CachedEmbedder(**settings) as second:
        result = second.embed(texts)
    assert (result.hits, result.misses) == (40, 0)
    expected = np.stack([expected_vector(tei.config, t) for t in texts]).astype(np.float32)
    assert same_bits(result.vectors, expected)
    assert len(tei.requests) == 2  # /embed of the first embedder only (two batches)


def hard_sparse(count: int) -> np.ndarray:
    """SparseVectors with float32 values from random bit patterns and u32 indices up to 2^32-1."""
    rng = np.random.default_rng(count)
    rows = np.empty(count, dtype=object)
    for row in range(count):
        indices = np.unique(rng.integers(0, 2**32, 1 + row % 40, dtype=np.uint64)).tolist()
        values = hard_vectors(1, len(indices) + 3)[0, 3:]
        rows[row] = SparseVector(indices, values.tolist())
    return rows


async def test_sparse_entries_round_trip_exactly(store: QdrantServerStore) -> None:
    namespace = replace(NAMESPACE, kind="sparse")
    ids = ids_of(CHUNK + 3)
    vectors = hard_sparse(len(ids))
    await store.upsert(namespace, ids, vectors)
    rows = await store.lookup(namespace, [*ids, *ids_of(2, seed=9)])
    assert rows.ids == ids and rows.vectors.tolist() == vectors.tolist()
    assert rows.checksums == checksums(ids, vectors)
    assert await store.dimension(namespace) == 0
    kinds = {c.name: (c.namespace or {}).get("kind") for c in await store.collections()}
    assert kinds == {namespace.collection("cached_tei"): "sparse"}
