"""The cache in a Qdrant server (REST or gRPC), or in qdrant-client's in-memory mode.

Lookups skip qdrant-client's record models, which cost more than the read itself
(``bench/server_reads.py``): over REST the documented ``POST /collections/{name}/points``
answer is read with orjson straight into one float32 matrix per chunk; over gRPC the raw
``Get`` answer's packed floats fill the matrix. Everything else, and lookups in memory, go
through qdrant-client, which is imported when the store is first used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from ..errors import StoreUnavailable
from ..keys import Namespace
from ..settings import CachedTEISettings
from ..values import SparseVector
from .base import (
    CHECKSUM,
    CHUNK,
    CREATED,
    READ_FIELDS,
    SPARSE,
    CollectionInfo,
    Rows,
    Texts,
    dimension_mismatch,
    entry_payloads,
    namespace_mismatch,
    sparse_bytes,
    store_contract,
    url_key,
)

if TYPE_CHECKING:
    import httpx
    from qdrant_client import AsyncQdrantClient, grpc

log = logging.getLogger(__name__)

IN_MEMORY = ":memory:"
# Qdrant's REST port, which qdrant-client also assumes when the URL names none.
REST_PORT = 6333
# A collection found missing is taken as missing for this long, so that lookups before the
# first write do not each ask Qdrant. A collection that another process creates meanwhile is
# seen at most this late: its entries are recomputed until then, never wrong or lost.
MISSING_RECHECK_S = 1.0


def rest_base_url(qdrant_url: str) -> str:
    """The REST address qdrant-client derives from ``qdrant_url`` (port 6333 when none)."""
    parts = urlsplit(qdrant_url)
    netloc = parts.netloc if parts.port is not None else f"{parts.netloc}:{REST_PORT}"
    return f"{parts.scheme}://{netloc}{parts.path}".rstrip("/")


def grpc_rows(points: Sequence[grpc.RetrievedPoint]) -> Rows:
    """The rows of a gRPC ``Get`` answer, its packed floats read into one float32 matrix."""
    matrix = np.empty((len(points), len(_dense(points[0]) if points else ())), dtype=np.float32)
    for row, point in enumerate(points):
        matrix[row] = _dense(point)
    ids = [point.id.uuid or str(point.id.num) for point in points]
    created = [_integer(point, CREATED) or 0 for point in points]
    return Rows(ids, matrix, created, [_integer(point, CHECKSUM) for point in points])


def _integer(point: grpc.RetrievedPoint, field: str) -> int | None:
    value = point.payload.get(field)
    return int(value.integer_value) if value is not None else None


def _dense(point: grpc.RetrievedPoint) -> Sequence[float]:
    # Servers fill the dense oneof, or only the deprecated flat field (as official clients read).
    output = point.vectors.vector
    data: Sequence[float] = output.dense.data if output.HasField("dense") else output.data
    return data


def rest_rows(records: Sequence[dict[str, Any]]) -> Rows:
    """The rows of a REST ``POST /collections/{name}/points`` answer."""
    ids = [str(r["id"]) for r in records]
    matrix = np.array([r["vector"] for r in records], dtype=np.float32)
    return Rows.of(ids, matrix, (r.get("payload") for r in records))


@store_contract
class QdrantServerStore:
    """Cache entries in a Qdrant server at ``qdrant_url`` (``":memory:"``: in this process only).

    Collections are created when the first vector (and so its dimension) is known:
    DOT distance (COSINE would normalise stored vectors), float32, HNSW ``m=0`` (id lookups
    need no graph), payload ``created`` (unix seconds, indexed on a server) and ``crc32``.
    The read path (in memory, gRPC or REST) is chosen once, here.
    """

    def __init__(self, settings: CachedTEISettings) -> None:
        self._settings = settings
        self._client: AsyncQdrantClient | None = None
        self._http: httpx.AsyncClient | None = None
        self._dimensions: dict[str, int] = {}
        self._missing_until: dict[str, float] = {}
        self._info_collection_ready = False
        self._in_memory = settings.qdrant_url == IN_MEMORY
        self._read: Callable[[str, list[str]], Awaitable[Rows | None]]
        if self._in_memory:
            self._read = self._read_memory
        elif settings.qdrant_prefer_grpc:
            self._read = self._read_grpc
        else:
            self._read = self._read_rest

    @property
    def location(self) -> str:
        """The server's URL (``:memory:`` for the in-process mode)."""
        return str(self._settings.qdrant_url)

    def client(self) -> AsyncQdrantClient:
        """The qdrant-client instance, created on first use."""
        if self._client is None:
            from qdrant_client import AsyncQdrantClient

            settings = self._settings
            if self._in_memory:
                self._client = AsyncQdrantClient(location=IN_MEMORY)
            else:
                api_key = settings.qdrant_api_key
                self._client = AsyncQdrantClient(
                    url=settings.qdrant_url,
                    api_key=api_key.get_secret_value() if api_key else None,
                    prefer_grpc=settings.qdrant_prefer_grpc,
                    timeout=max(1, round(settings.qdrant_timeout)),
                    check_compatibility=False,
                )
        return self._client

    def _rest(self) -> httpx.AsyncClient:
        """The HTTP client for REST lookups, created on first use."""
        if self._http is None:
            import httpx

            settings = self._settings
            headers = {"content-type": "application/json"}
            if settings.qdrant_api_key is not None:
                headers["api-key"] = settings.qdrant_api_key.get_secret_value()
            self._http = httpx.AsyncClient(
                base_url=rest_base_url(str(settings.qdrant_url)),
                headers=headers,
                timeout=settings.qdrant_timeout,
            )
        return self._http

    async def aclose(self) -> None:
        """Close the clients (the server keeps everything written)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _name(self, namespace: Namespace) -> str:
        return namespace.collection(self._settings.collection_prefix)

    @property
    def _info_collection(self) -> str:
        # A hyphen keeps it out of the "<prefix>_" cache collections.
        return f"{self._settings.collection_prefix}-tei-info"

    async def _ensure_info_collection(self) -> None:
        from qdrant_client import models

        if self._info_collection_ready:
            return
        client = self.client()
        if not await client.collection_exists(self._info_collection):
            await client.create_collection(
                self._info_collection,
                vectors_config=models.VectorParams(size=1, distance=models.Distance.DOT),
            )
        self._info_collection_ready = True

    async def remember_info(self, tei_url: str, info: dict[str, Any]) -> None:
        """Keep the ``/info`` last read from ``tei_url`` in the info collection."""
        from qdrant_client import models

        await self._ensure_info_collection()
        await self.client().upsert(
            self._info_collection,
            points=[
                models.PointStruct(
                    id=url_key(tei_url), vector=[0.0], payload={"tei_url": tei_url, "info": info}
                )
            ],
        )

    async def recall_info(self, tei_url: str) -> dict[str, Any] | None:
        """The ``/info`` last read from ``tei_url``, or None."""
        client = self.client()
        if not await client.collection_exists(self._info_collection):
            return None
        self._info_collection_ready = True
        records = await client.retrieve(
            self._info_collection, [url_key(tei_url)], with_payload=True
        )
        payload = records[0].payload if records else None
        info = (payload or {}).get("info")
        return info if isinstance(info, dict) else None

    async def claim_prune(self, owner: str, seconds: float) -> bool:
        """Whether ``owner`` should delete expired entries now: a lease kept in the info
        collection, taken by a process when the last holder's has run out, renewed by its
        holder at each of its prunes."""
        from qdrant_client import models

        client = self.client()
        key = url_key("cached-tei:prune")
        await self._ensure_info_collection()
        records = await client.retrieve(self._info_collection, [key], with_payload=True)
        lease = (records[0].payload or {}) if records else {}
        if lease.get("owner") not in (None, owner) and lease.get("until", 0) > time.time():
            return False
        until = time.time() + 1.5 * seconds
        await client.upsert(
            self._info_collection,
            points=[
                models.PointStruct(id=key, vector=[0.0], payload={"owner": owner, "until": until})
            ],
        )
        return True

    async def dimension(self, namespace: Namespace) -> int | None:
        """The vector size of the namespace's collection, or None if it does not exist yet.

        A missing collection is remembered for ``MISSING_RECHECK_S`` seconds. Raises
        StoreConfigurationError when the collection holds another namespace.
        """
        name = self._name(namespace)
        known = self._dimensions.get(name)
        if known is not None:
            return known
        if self._missing_until.get(name, 0.0) > time.monotonic():
            return None
        return await self._describe(namespace, name)

    async def _describe(self, namespace: Namespace, name: str) -> int | None:
        """Ask Qdrant for the collection: its vector size once its namespace is checked."""
        from qdrant_client import models

        client = self.client()
        if not await client.collection_exists(name):
            self._missing_until[name] = time.monotonic() + MISSING_RECHECK_S
            return None
        self._missing_until.pop(name, None)
        info = await client.get_collection(name)
        stored = (info.config.metadata or {}).get("namespace")
        if stored is not None and stored != namespace.descriptor():
            raise namespace_mismatch(name, stored, namespace)
        vectors = info.config.params.vectors
        size = vectors.size if isinstance(vectors, models.VectorParams) else 0  # sparse: none
        self._dimensions[name] = size
        return size

    async def ensure_collection(self, namespace: Namespace, dimension: int) -> None:
        """Create the namespace's collection for vectors of ``dimension`` if it is missing."""
        name = self._name(namespace)
        # A write always asks Qdrant rather than trusting a remembered "missing".
        existing = self._dimensions.get(name) or await self._describe(namespace, name)
        if existing is None:
            try:
                await self._create(namespace, name, dimension)
                return
            except Exception:
                # Another process may have created it first (many workers start cold).
                existing = await self._describe(namespace, name)
                if existing is None:
                    raise
        if existing != dimension:
            raise dimension_mismatch(name, existing, dimension)

    async def _create(self, namespace: Namespace, name: str, dimension: int) -> None:
        from qdrant_client import models

        client = self.client()
        sparse = namespace.kind == "sparse"
        await client.create_collection(
            name,
            vectors_config={}
            if sparse
            else models.VectorParams(
                size=dimension,
                distance=models.Distance.DOT,
                datatype=None if self._in_memory else models.Datatype.FLOAT32,
            ),
            sparse_vectors_config={SPARSE: models.SparseVectorParams()} if sparse else None,
            hnsw_config=models.HnswConfigDiff(m=0),
            shard_number=self._settings.qdrant_shards,
            replication_factor=self._settings.qdrant_replication_factor,
            metadata={"namespace": namespace.descriptor()},
        )
        if not self._in_memory:
            await client.create_payload_index(
                name, CREATED, field_schema=models.PayloadSchemaType.INTEGER
            )
        log.info(
            "created cache collection %s (%d dimensions) in %s", name, dimension, self.location
        )
        self._dimensions[name] = dimension
        self._missing_until.pop(name, None)

    async def lookup(
        self, namespace: Namespace, ids: Sequence[str], *, lists: bool = False
    ) -> Rows:
        """The entries stored under ``ids``, raw (the engine filters), chunk by chunk; never as
        lists (JSON's floats are not guaranteed to be float32 values)."""
        if not ids or await self.dimension(namespace) is None:
            return Rows.empty()
        name = self._name(namespace)
        parts = []
        read = self._read_sparse if namespace.kind == "sparse" else self._read
        for start in range(0, len(ids), CHUNK):
            rows = await read(name, list(ids[start : start + CHUNK]))
            if rows is None:  # deleted meanwhile (cache clear in another process)
                self._dimensions.pop(name, None)
                self._missing_until[name] = time.monotonic() + MISSING_RECHECK_S
                return Rows.empty()
            parts.append(rows)
        return Rows.join(parts)

    async def _read_rest(self, name: str, ids: list[str]) -> Rows | None:
        """One chunk over REST, or None when the collection does not exist."""
        import orjson

        body = {"ids": ids, "with_vector": True, "with_payload": READ_FIELDS}
        response = await self._rest().post(
            f"/collections/{name}/points", content=orjson.dumps(body)
        )
        if response.status_code == 404:
            return None
        if response.is_error:
            raise StoreUnavailable(
                f"Qdrant answered {response.status_code} to a lookup in {name}: {response.text}"
            )
        return rest_rows(orjson.loads(response.content)["result"])

    async def _read_grpc(self, name: str, ids: list[str]) -> Rows | None:
        """One chunk over gRPC, or None when the collection does not exist."""
        import grpc as grpcio  # type: ignore[import-untyped]
        from qdrant_client import grpc

        request = grpc.GetPoints(
            collection_name=name,
            ids=[grpc.PointId(uuid=i) for i in ids],
            with_vectors=grpc.WithVectorsSelector(enable=True),
            with_payload=grpc.WithPayloadSelector(
                include=grpc.PayloadIncludeSelector(fields=READ_FIELDS)
            ),
        )
        try:
            response = await self.client().grpc_points.Get(
                request, timeout=self._settings.qdrant_timeout
            )
        except grpcio.aio.AioRpcError as exc:
            if exc.code() == grpcio.StatusCode.NOT_FOUND:
                return None
            raise
        return grpc_rows(response.result)

    async def _read_memory(self, name: str, ids: list[str]) -> Rows:
        """One chunk from qdrant-client's in-memory engine."""
        records = await self.client().retrieve(
            name, ids=ids, with_vectors=True, with_payload=READ_FIELDS
        )
        matrix = np.array([r.vector for r in records], dtype=np.float32)
        return Rows.of([str(r.id) for r in records], matrix, (r.payload for r in records))

    async def upsert(
        self, namespace: Namespace, ids: Sequence[str], vectors: np.ndarray, texts: Texts = None
    ) -> int:
        """Write entries (created now); returns the bytes of vector data written."""
        from qdrant_client import models

        if namespace.kind == "sparse":
            return await self._upsert_sparse(namespace, ids, vectors, texts)
        await self.ensure_collection(namespace, int(vectors.shape[1]))
        name = self._name(namespace)
        payloads = entry_payloads(ids, vectors, texts)
        for start in range(0, len(ids), CHUNK):
            part = slice(start, start + CHUNK)
            await self.client().upsert(
                name,
                points=models.Batch(
                    ids=list(ids[part]), vectors=vectors[part].tolist(), payloads=payloads[part]
                ),
                wait=True,
            )
        return int(vectors.nbytes)

    # Sparse (SPLADE) collections: one named sparse vector per point, through qdrant-client.
    async def _read_sparse(self, name: str, ids: list[str]) -> Rows | None:
        """One chunk of a sparse collection, or None when the collection does not exist."""
        from qdrant_client import models
        from qdrant_client.http.exceptions import UnexpectedResponse

        try:
            records = await self.client().retrieve(
                name, ids=ids, with_vectors=True, with_payload=READ_FIELDS
            )
        except UnexpectedResponse as exc:
            if exc.status_code == 404:
                return None
            raise
        rows = np.empty(len(records), dtype=object)
        for position, record in enumerate(records):
            assert isinstance(record.vector, dict)
            stored = record.vector[SPARSE]
            assert isinstance(stored, models.SparseVector)
            # Over REST the values arrive as the shortest decimals of their float32s.
            values = np.asarray(stored.values, dtype=np.float32).tolist()
            rows[position] = SparseVector(list(stored.indices), values)
        return Rows.of([str(r.id) for r in records], rows, (r.payload for r in records))

    async def _upsert_sparse(
        self, namespace: Namespace, ids: Sequence[str], vectors: np.ndarray, texts: Texts
    ) -> int:
        from qdrant_client import models

        await self.ensure_collection(namespace, 0)
        name = self._name(namespace)
        payloads = entry_payloads(ids, vectors, texts)
        for start in range(0, len(ids), CHUNK):
            points = [
                models.PointStruct(
                    id=ids[i],
                    vector={SPARSE: models.SparseVector(indices=v.indices, values=v.values)},
                    payload=payloads[i],
                )
                for i, v in enumerate(vectors[start : start + CHUNK], start)
            ]
            await self.client().upsert(name, points=points, wait=True)
        return sparse_bytes(vectors)

    async def collections(self) -> list[CollectionInfo]:
        """Every cache collection under this prefix."""
        from qdrant_client import models

        client = self.client()
        prefix = f"{self._settings.collection_prefix}_"
        result = []
        for description in (await client.get_collections()).collections:
            if not description.name.startswith(prefix):
                continue
            info = await client.get_collection(description.name)
            vectors = info.config.params.vectors
            count = (await client.count(description.name, exact=True)).count
            result.append(
                CollectionInfo(
                    name=description.name,
                    namespace=(info.config.metadata or {}).get("namespace"),
                    dimension=vectors.size if isinstance(vectors, models.VectorParams) else 0,
                    count=count,
                )
            )
        return result

    async def prune(self, older_than: int) -> int:
        """Delete entries created before ``older_than`` (unix seconds); returns how many."""
        from qdrant_client import models

        client = self.client()
        expired = models.Filter(
            must=[models.FieldCondition(key=CREATED, range=models.Range(lt=older_than))]
        )
        removed = 0
        for collection in await self.collections():
            removed += (await client.count(collection.name, count_filter=expired, exact=True)).count
            await client.delete(
                collection.name, points_selector=models.FilterSelector(filter=expired)
            )
        return removed

    async def clear(self) -> int:
        """Delete every cache collection under this prefix; returns how many entries went."""
        removed = 0
        for collection in await self.collections():
            removed += collection.count or 0
            await self.client().delete_collection(collection.name)
            self._dimensions.pop(collection.name, None)
        return removed
