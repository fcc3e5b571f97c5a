"""The cache in a Qdrant server (REST or gRPC), or in qdrant-client's in-memory mode."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from qdrant_client import AsyncQdrantClient, models

from ..keys import Namespace
from ..settings import CachedTEISettings
from .base import (
    CHUNK,
    CREATED,
    CollectionInfo,
    dimension_mismatch,
    entry_payloads,
    fresh_vectors,
    namespace_mismatch,
    url_key,
)

log = logging.getLogger(__name__)

IN_MEMORY = ":memory:"


class QdrantServerStore:
    """Cache entries in a Qdrant server at ``qdrant_url`` (``":memory:"``: in this process only).

    Collections are created when the first vector (and so its dimension) is known:
    DOT distance (COSINE would normalise stored vectors), float32, HNSW ``m=0`` (id lookups
    need no graph), payload ``created`` (unix seconds, indexed on a server). Every method
    may raise; the engine decides how a failure is handled.
    """

    def __init__(self, settings: CachedTEISettings) -> None:
        self._settings = settings
        self._client: AsyncQdrantClient | None = None
        self._dimensions: dict[str, int | None] = {}

    @property
    def location(self) -> str:
        return str(self._settings.qdrant_url)

    @property
    def _in_memory(self) -> bool:
        return self._settings.qdrant_url == IN_MEMORY

    def client(self) -> AsyncQdrantClient:
        """The qdrant-client instance, created on first use."""
        if self._client is None:
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

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def _info_collection(self) -> str:
        # A hyphen keeps it out of the "<prefix>_" cache collections.
        return f"{self._settings.collection_prefix}-tei-info"

    async def remember_info(self, tei_url: str, info: dict[str, Any]) -> None:
        client = self.client()
        if not await client.collection_exists(self._info_collection):
            await client.create_collection(
                self._info_collection,
                vectors_config=models.VectorParams(size=1, distance=models.Distance.DOT),
            )
        await client.upsert(
            self._info_collection,
            points=[
                models.PointStruct(
                    id=url_key(tei_url), vector=[0.0], payload={"tei_url": tei_url, "info": info}
                )
            ],
        )

    async def recall_info(self, tei_url: str) -> dict[str, Any] | None:
        client = self.client()
        if not await client.collection_exists(self._info_collection):
            return None
        records = await client.retrieve(
            self._info_collection, [url_key(tei_url)], with_payload=True
        )
        return records[0].payload["info"] if records and records[0].payload else None

    async def claim_prune(self, owner: str, seconds: float) -> bool:
        """A lease kept in the info collection: taken by a process when the last holder's
        has run out, renewed by its holder at each of its prunes."""
        client = self.client()
        key = url_key("cached-tei:prune")
        if await client.collection_exists(self._info_collection):
            records = await client.retrieve(self._info_collection, [key], with_payload=True)
            lease = (records[0].payload or {}) if records else {}
            if lease.get("owner") not in (None, owner) and lease.get("until", 0) > time.time():
                return False
        else:
            await client.create_collection(
                self._info_collection,
                vectors_config=models.VectorParams(size=1, distance=models.Distance.DOT),
            )
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

        Raises StoreConfigurationError when the collection holds another namespace.
        """
        name = namespace.collection(self._settings.collection_prefix)
        if self._dimensions.get(name) is not None:
            return self._dimensions[name]
        client = self.client()
        if not await client.collection_exists(name):
            self._dimensions[name] = None
            return None
        info = await client.get_collection(name)
        stored = (info.config.metadata or {}).get("namespace")
        if stored is not None and stored != namespace.descriptor():
            raise namespace_mismatch(name, stored, namespace)
        vectors = info.config.params.vectors
        assert isinstance(vectors, models.VectorParams)
        self._dimensions[name] = vectors.size
        return vectors.size

    async def ensure_collection(self, namespace: Namespace, dimension: int) -> None:
        """Create the namespace's collection for vectors of ``dimension`` if it is missing."""
        existing = await self.dimension(namespace)
        name = namespace.collection(self._settings.collection_prefix)
        if existing is None:
            client = self.client()
            await client.create_collection(
                name,
                vectors_config=models.VectorParams(
                    size=dimension,
                    distance=models.Distance.DOT,
                    datatype=None if self._in_memory else models.Datatype.FLOAT32,
                ),
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
        elif existing != dimension:
            raise dimension_mismatch(name, existing, dimension)

    async def lookup(
        self, namespace: Namespace, ids: Sequence[str], not_before: int | None
    ) -> dict[str, np.ndarray]:
        """Vectors stored under ``ids``; entries created before ``not_before`` are left out."""
        name = namespace.collection(self._settings.collection_prefix)
        if not ids or await self.dimension(namespace) is None:
            return {}
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(ids), CHUNK):
            records = await self.client().retrieve(
                name,
                ids=list(ids[start : start + CHUNK]),
                with_vectors=True,
                with_payload=[CREATED] if not_before is not None else False,
            )
            found.update(fresh_vectors(records, not_before))
        return found

    async def upsert(
        self,
        namespace: Namespace,
        ids: Sequence[str],
        vectors: np.ndarray,
        texts: Sequence[str] | None = None,
    ) -> int:
        """Write entries (created now); returns the bytes of vector data written."""
        await self.ensure_collection(namespace, int(vectors.shape[1]))
        name = namespace.collection(self._settings.collection_prefix)
        payloads = entry_payloads(len(ids), texts)
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

    async def collections(self) -> list[CollectionInfo]:
        """Every cache collection under this prefix."""
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
