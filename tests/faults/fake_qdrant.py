"""A Qdrant REST server on loopback, for fault tests: real semantics, injectable failures.

There is no Qdrant server on the test machines. ``FakeQdrant`` answers the REST routes that
cached-tei's server store uses (collection exists/get/create, payload index, upsert, retrieve,
count, list, delete) by delegating to qdrant-client's own in-process engine (``:memory:``),
so what it stores and returns is what Qdrant's local mode stores and returns. Its ``mode``
injects faults at any time:

- ``"ok"``: answers normally;
- ``"down"``: every route answers HTTP 500 (a Qdrant that fails);
- ``"slow"``: every route waits ``delay`` seconds first (a Qdrant that is slow);
- ``"fail_writes"``: reads work, creating collections and upserting answer HTTP 500;
- ``"slow_writes"``: reads work, writes wait ``delay`` seconds first.

``Blackhole`` is a TCP port that accepts connections and never answers (a hung server).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import threading
from typing import Any

from aiohttp import web
from qdrant_client import QdrantClient, models


def _ok(result: Any) -> web.Response:
    return web.json_response({"result": result, "status": "ok", "time": 0.0})


class FakeQdrant:
    """A Qdrant REST API backed by qdrant-client's in-memory engine, in a daemon thread."""

    def __init__(self) -> None:
        self.backend = QdrantClient(":memory:")
        self.mode = "ok"
        self.delay = 0.0
        self.calls: collections.Counter[str] = collections.Counter()
        self.failed: collections.Counter[str] = collections.Counter()
        self.host = "127.0.0.1"
        self.port = 0
        self._lock = threading.Lock()  # the backend is not thread-safe; requests run one at a time
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ fault injection
    @web.middleware
    async def _faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        write = request.method == "PUT" or request.path.endswith(("/index", "/delete"))
        route = f"{request.method} {'write' if write else 'read'}"
        self.calls[route] += 1
        mode = self.mode
        if mode == "slow" or (mode == "slow_writes" and write):
            await asyncio.sleep(self.delay)
        if mode == "down" or (mode == "fail_writes" and write):
            self.failed[route] += 1
            return web.json_response(
                {"status": {"error": "injected fault"}, "time": 0.0}, status=500
            )
        return await handler(request)

    # ------------------------------------------------------------------ routes
    async def _exists(self, request: web.Request) -> web.Response:
        with self._lock:
            return _ok({"exists": self.backend.collection_exists(request.match_info["name"])})

    async def _get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        with self._lock:
            if not self.backend.collection_exists(name):
                return web.json_response(
                    {"status": {"error": f"Not found: Collection `{name}` doesn't exist!"}},
                    status=404,
                )
            info = self.backend.get_collection(name)
        return _ok(info.model_dump(mode="json", exclude_none=True))

    async def _create(self, request: web.Request) -> web.Response:
        body = models.CreateCollection(**(await request.json()))
        with self._lock:
            self.backend.create_collection(
                request.match_info["name"],
                vectors_config=body.vectors,
                hnsw_config=body.hnsw_config,
                metadata=body.metadata,
            )
        return _ok(True)

    async def _delete(self, request: web.Request) -> web.Response:
        with self._lock:
            return _ok(self.backend.delete_collection(request.match_info["name"]))

    async def _index(self, request: web.Request) -> web.Response:
        return _ok({"operation_id": 0, "status": "completed"})

    async def _upsert(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "batch" in body:
            points: Any = models.Batch(**body["batch"])
        else:
            points = [models.PointStruct(**p) for p in body["points"]]
        with self._lock:
            self.backend.upsert(request.match_info["name"], points=points)
        return _ok({"operation_id": 0, "status": "completed"})

    async def _retrieve(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            records = self.backend.retrieve(
                request.match_info["name"],
                ids=body["ids"],
                with_payload=body.get("with_payload", True),
                with_vectors=body.get("with_vector", False),
            )
        return _ok([r.model_dump(mode="json") for r in records])

    async def _count(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        selected = models.Filter(**body["filter"]) if body.get("filter") else None
        with self._lock:
            count = self.backend.count(
                request.match_info["name"], count_filter=selected, exact=True
            ).count
        return _ok({"count": count})

    async def _delete_points(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self.backend.delete(
                request.match_info["name"],
                points_selector=models.FilterSelector(filter=models.Filter(**body["filter"])),
            )
        return _ok({"operation_id": 0, "status": "completed"})

    async def _list(self, request: web.Request) -> web.Response:
        with self._lock:
            names = [c.name for c in self.backend.get_collections().collections]
        return _ok({"collections": [{"name": n} for n in names]})

    # ------------------------------------------------------------------ inspection
    def payloads(self) -> list[dict[str, Any]]:
        """Every cache entry's payload, across the cache collections."""
        out: list[dict[str, Any]] = []
        with self._lock:
            for c in self._cache_collections():
                points, _ = self.backend.scroll(c.name, limit=1_000_000, with_payload=True)
                out.extend(p.payload or {} for p in points)
        return out

    def _cache_collections(self) -> list[Any]:
        # "cached_tei_<hash>" holds entries; "cached_tei-tei-info" holds each URL's last /info.
        return [
            c
            for c in self.backend.get_collections().collections
            if c.name.startswith("cached_tei_")
        ]

    def points(self) -> dict[str, list[float]]:
        """Every cache entry's id -> vector, across the cache collections."""
        out: dict[str, list[float]] = {}
        with self._lock:
            for c in self._cache_collections():
                points, _ = self.backend.scroll(c.name, limit=1_000_000, with_vectors=True)
                out.update({str(p.id): p.vector for p in points})  # type: ignore[misc]
        return out

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeQdrant:
        app = web.Application(middlewares=[self._faults], client_max_size=64 * 2**20)
        r = app.router
        r.add_get("/collections", self._list)
        r.add_get("/collections/{name}/exists", self._exists)
        r.add_get("/collections/{name}", self._get)
        r.add_put("/collections/{name}", self._create)
        r.add_delete("/collections/{name}", self._delete)
        r.add_put("/collections/{name}/index", self._index)
        r.add_put("/collections/{name}/points", self._upsert)
        r.add_post("/collections/{name}/points", self._retrieve)
        r.add_post("/collections/{name}/points/count", self._count)
        r.add_post("/collections/{name}/points/delete", self._delete_points)
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def setup() -> None:
            self._runner = web.AppRunner(
                app, access_log=None, handle_signals=False, shutdown_timeout=0.2
            )
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
            await site.start()
            self.port = self._runner.addresses[0][1]

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(setup())
            ready.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="fake-qdrant", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake Qdrant did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        loop = self._loop
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> FakeQdrant:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Blackhole:
    """A TCP port that accepts every connection and never sends a byte."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="blackhole", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self._held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self._sock.close()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
