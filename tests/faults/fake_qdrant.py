"""A Qdrant REST server on loopback, for fault tests: real semantics, injectable failures.

There is no Qdrant server on the test machines. ``FakeQdrant`` answers the REST routes that
cached-tei's server store uses (collection exists/get/create/delete, payload index, upsert,
retrieve, count, delete by filter, list) by delegating to qdrant-client's own in-process engine
(``:memory:``), so what it stores and returns is what Qdrant's local mode stores and returns.

It is also a contract test of what the store sends: every request's body and query parameters
are checked against the pinned server's API (``tests/reference/qdrant-1.19-openapi.json``,
Qdrant's own spec), where any field the spec does not define is refused with HTTP 400 in
Qdrant's error shape and recorded in ``violations`` (a real server before 1.16 ignores unknown
fields silently, which is how an ignored ``metadata`` went unnoticed). ``requests`` counts
requests per route (``"GET /collections/{collection_name}/exists"``). As Qdrant does, it answers
404 for a missing collection, 409 for creating an existing one, 401 without the ``api_key``
it was given, and writes vectors as float32 in their shortest form. With ``grpc=True`` it also
answers the gRPC calls of a lookup (collection exists and info, ``Points/Get``) on
``grpc_port``. ``GET /metrics`` (no key needed, never failed by ``mode``) answers Qdrant's
response counters, ``rest_responses_total{method,endpoint,status}`` and
``grpc_responses_total{endpoint,status}`` (the gRPC status code), for the endpoints Qdrant
itself reports.

Its ``mode`` injects faults at any time:

- ``"ok"``: answers normally;
- ``"down"``: every route answers HTTP 500, and ``Points/Get`` gRPC INTERNAL (a Qdrant that
  fails);
- ``"slow"``: every route waits ``delay`` seconds first (a Qdrant that is slow);
- ``"fail_writes"``: reads work, creating collections and upserting answer HTTP 500;
- ``"slow_writes"``: reads work, writes wait ``delay`` seconds first.

``Blackhole`` is a TCP port that accepts connections and never answers (a hung server).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
from aiohttp import web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from qdrant_client import QdrantClient, models
from qdrant_client import grpc as qgrpc
from qdrant_client.conversions.conversion import GrpcToRest, RestToGrpc, json_to_value
from referencing import Registry
from referencing.jsonschema import DRAFT202012

SPEC = Path(__file__).parents[1] / "reference" / "qdrant-1.19-openapi.json"
_SPEC_URI = "urn:qdrant-openapi"
# Schema words that only describe: a schema made of these alone accepts anything.
_ANNOTATIONS = {"description", "example", "default", "deprecated", "title", "format"}
_ONE = "/collections/{collection_name}"
# The stand-in's routes that Qdrant's /metrics reports (its REST and gRPC whitelists).
_REPORTED_REST = {_ONE + p for p in ("/index", "/points", "/points/count", "/points/delete")}
_POINTS_GET = "/qdrant.Points/Get"


def _ok(result: Any) -> web.Response:
    return web.json_response({"result": result, "status": "ok", "time": 0.0})


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"status": {"error": message}, "time": 0.0}, status=status)


def _missing(name: str) -> web.Response:
    return _error(404, f"Not found: Collection `{name}` doesn't exist!")


def _strict(schema: Any) -> Any:
    """An OpenAPI 3.0 schema as strict JSON Schema: objects refuse undeclared fields, and
    ``nullable: true`` means "or null" (alone, as in ``anyOf: [{...}, {nullable: true}]``,
    it would otherwise accept anything)."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for word in ("properties", "patternProperties"):
        if word in out:
            out[word] = {k: _strict(v) for k, v in out[word].items()}
    for word in ("anyOf", "oneOf", "allOf"):
        if word in out:
            out[word] = [_strict(v) for v in out[word]]
    for word in ("items", "not", "additionalProperties"):
        if isinstance(out.get(word), dict):
            out[word] = _strict(out[word])
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if out.pop("nullable", False):
        if set(out) <= _ANNOTATIONS:
            return {"type": "null"}
        return {"anyOf": [out, {"type": "null"}]}
    return out


class QdrantContract:
    """What Qdrant 1.19's REST API accepts, per operation: body schema and query parameters."""

    def __init__(self, spec_path: Path = SPEC) -> None:
        spec = json.loads(spec_path.read_text())
        schemas = {name: _strict(schema) for name, schema in spec["components"]["schemas"].items()}
        components = {"components": {"schemas": schemas}}
        self._registry: Registry[Any] = Registry().with_resource(
            _SPEC_URI, DRAFT202012.create_resource(components)
        )
        self._operations: dict[tuple[str, str], dict[str, Any]] = {
            (method.upper(), path): operation
            for path, item in spec["paths"].items()
            for method, operation in item.items()
        }

    @functools.cache  # noqa: B019 - one contract per process, kept for its lifetime
    def _validator(self, method: str, path: str) -> Draft202012Validator | None:
        content = self._operations[(method, path)].get("requestBody", {}).get("content", {})
        schema = content.get("application/json", {}).get("schema")
        if schema is None:
            return None
        ref = {"$ref": _SPEC_URI + schema["$ref"]} if "$ref" in schema else _strict(schema)
        return Draft202012Validator(ref, registry=self._registry)

    def violations(
        self, method: str, path: str, query: Mapping[str, str], body: Any | None
    ) -> list[str]:
        """Why Qdrant 1.19 would not accept this request as sent ([] when it would)."""
        operation = self._operations.get((method, path))
        if operation is None:
            return [f"{method} {path} is not a Qdrant 1.19 route"]
        known = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        problems = [f"unknown query parameter {name!r}" for name in query if name not in known]
        validator = self._validator(method, path)
        if body is not None:
            if validator is None:
                problems.append(f"{method} {path} takes no body")
            else:
                error = best_match(validator.iter_errors(body))
                if error is not None:
                    where = "/".join(str(p) for p in error.absolute_path) or "body"
                    problems.append(f"{where}: {error.message}")
        return problems


class FakeQdrant:
    """A Qdrant REST API backed by qdrant-client's in-memory engine, in a daemon thread."""

    def __init__(
        self, *, validate: bool = True, api_key: str | None = None, grpc: bool = False
    ) -> None:
        self.backend = QdrantClient(":memory:")
        self.api_key = api_key
        self.serve_grpc = grpc
        self.grpc_port = 0
        self._grpc_server: Any = None
        self.mode = "ok"
        self.delay = 0.0
        self.calls: collections.Counter[str] = collections.Counter()
        self.requests: collections.Counter[str] = collections.Counter()
        self.failed: collections.Counter[str] = collections.Counter()
        # (method, endpoint, HTTP status) and (gRPC endpoint, status code) -> responses
        self.rest_responses: collections.Counter[tuple[str, str, int]] = collections.Counter()
        self.grpc_responses: collections.Counter[tuple[str, int]] = collections.Counter()
        self.violations: list[str] = []
        self.contract = QdrantContract() if validate else None
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
    async def _tally(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Counts each answer by status, as Qdrant's /metrics does; /metrics always answers."""
        if request.path == "/metrics":
            return await self._metrics()
        response = await handler(request)
        path = request.match_info.route.resource.canonical  # type: ignore[union-attr]
        if path in _REPORTED_REST:
            self.rest_responses[(request.method, path, response.status)] += 1
        return response

    @web.middleware
    async def _faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        write = request.method == "PUT" or request.path.endswith(("/index", "/delete"))
        route = f"{request.method} {'write' if write else 'read'}"
        self.calls[route] += 1
        path = request.match_info.route.resource.canonical  # type: ignore[union-attr]
        self.requests[f"{request.method} {path}"] += 1
        if self.api_key is not None and request.headers.get("api-key") != self.api_key:
            return _error(401, "Must provide an API key or an Authorization bearer token")
        if self.contract is not None:
            body = await request.json() if request.can_read_body else None
            problems = self.contract.violations(request.method, path, request.query, body)
            if problems:
                self.violations.extend(f"{request.method} {path}: {p}" for p in problems)
                return _error(400, "Format error in JSON body: " + "; ".join(problems))
        mode = self.mode
        if mode == "slow" or (mode == "slow_writes" and write):
            await asyncio.sleep(self.delay)
        if mode == "down" or (mode == "fail_writes" and write):
            self.failed[route] += 1
            return _error(500, "injected fault")
        name = request.match_info.get("collection_name")
        if name is not None and path.startswith("/collections/{collection_name}/"):
            with self._lock:
                exists = self.backend.collection_exists(name)
            if not exists and not path.endswith("/exists"):
                return _missing(name)
        return await handler(request)

    # ------------------------------------------------------------------ routes
    async def _metrics(self) -> web.Response:
        registry = CollectorRegistry()
        registry.register(_ResponseCounters(self))
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    async def _exists(self, request: web.Request) -> web.Response:
        with self._lock:
            return _ok(
                {"exists": self.backend.collection_exists(request.match_info["collection_name"])}
            )

    async def _get(self, request: web.Request) -> web.Response:
        name = request.match_info["collection_name"]
        with self._lock:
            if not self.backend.collection_exists(name):
                return _missing(name)
            info = self.backend.get_collection(name)
        return _ok(info.model_dump(mode="json", exclude_none=True))

    async def _create(self, request: web.Request) -> web.Response:
        body = models.CreateCollection(**(await request.json()))
        name = request.match_info["collection_name"]
        with self._lock:
            if self.backend.collection_exists(name):
                return _error(409, f"Wrong input: Collection `{name}` already exists!")
            self.backend.create_collection(
                name,
                vectors_config=body.vectors,
                sparse_vectors_config=body.sparse_vectors,
                hnsw_config=body.hnsw_config,
                metadata=body.metadata,
            )
        return _ok(True)

    async def _delete(self, request: web.Request) -> web.Response:
        with self._lock:
            return _ok(self.backend.delete_collection(request.match_info["collection_name"]))

    async def _index(self, request: web.Request) -> web.Response:
        return _ok({"operation_id": 0, "status": "completed"})

    async def _upsert(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "batch" in body:
            points: Any = models.Batch(**body["batch"])
        else:
            points = [models.PointStruct(**p) for p in body["points"]]
        with self._lock:
            self.backend.upsert(request.match_info["collection_name"], points=points)
        return _ok({"operation_id": 0, "status": "completed"})

    async def _retrieve(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            records = self.backend.retrieve(
                request.match_info["collection_name"],
                ids=body["ids"],
                with_payload=body.get("with_payload", True),
                with_vectors=body.get("with_vector", False),
            )
        # As Qdrant writes them: vectors as float32 in their shortest form ("0.34558418"),
        # not as the 17 digits of the float64 that the local engine hands back.
        points = []
        for r in records:
            point: dict[str, Any] = {"id": r.id, "payload": r.payload}
            if isinstance(r.vector, dict):  # named (sparse) vectors: values as float32 too
                point["vector"] = {
                    name: {"indices": v.indices, "values": np.asarray(v.values, dtype=np.float32)}
                    for name, v in r.vector.items()
                }
            elif r.vector is not None:
                point["vector"] = np.asarray(r.vector, dtype=np.float32)
            points.append(point)
        body = {"result": points, "status": "ok", "time": 0.0}
        return web.Response(
            body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
            content_type="application/json",
        )

    async def _count(self, request: web.Request) -> web.Response:
        body = await request.json()
        only = models.Filter(**body["filter"]) if body.get("filter") else None
        with self._lock:
            count = self.backend.count(
                request.match_info["collection_name"], count_filter=only, exact=True
            ).count
        return _ok({"count": count})

    async def _delete_points(self, request: web.Request) -> web.Response:
        body = await request.json()
        selector: Any = (
            models.FilterSelector(filter=models.Filter(**body["filter"]))
            if "filter" in body
            else models.PointIdsList(points=body["points"])
        )
        with self._lock:
            self.backend.delete(request.match_info["collection_name"], points_selector=selector)
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

    def overwrite(
        self,
        point_id: str,
        *,
        vector: list[float] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        """Change a stored entry behind the client's back (a vector, or its whole payload),
        as a disk or a bug on the server could."""
        with self._lock:
            for c in self._cache_collections():
                if not self.backend.retrieve(c.name, [point_id]):
                    continue
                if vector is not None:
                    self.backend.update_vectors(
                        c.name, points=[models.PointVectors(id=point_id, vector=vector)]
                    )
                if payload is not None:
                    self.backend.overwrite_payload(c.name, payload=payload, points=[point_id])

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeQdrant:
        app = web.Application(middlewares=[self._tally, self._faults], client_max_size=64 * 2**20)
        r = app.router
        # The paths are the spec's own, so that a route's canonical name finds its operation.
        r.add_get("/collections", self._list)
        r.add_get(_ONE + "/exists", self._exists)
        r.add_get(_ONE, self._get)
        r.add_put(_ONE, self._create)
        r.add_delete(_ONE, self._delete)
        r.add_put(_ONE + "/index", self._index)
        r.add_put(_ONE + "/points", self._upsert)
        r.add_post(_ONE + "/points", self._retrieve)
        r.add_post(_ONE + "/points/count", self._count)
        r.add_post(_ONE + "/points/delete", self._delete_points)
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
            if self.serve_grpc:
                self._grpc_server = grpc.aio.server()
                qgrpc.add_CollectionsServicer_to_server(_GrpcCollections(self), self._grpc_server)
                qgrpc.add_PointsServicer_to_server(_GrpcPoints(self), self._grpc_server)
                self.grpc_port = self._grpc_server.add_insecure_port(f"{self.host}:0")
                await self._grpc_server.start()

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
        if self._grpc_server is not None:
            asyncio.run_coroutine_threadsafe(self._grpc_server.stop(0), loop).result(10)
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> FakeQdrant:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _GrpcCollections(qgrpc.CollectionsServicer):
    """The two collection calls a gRPC lookup makes, on the stand-in's engine."""

    def __init__(self, fake: FakeQdrant) -> None:
        self._fake = fake

    async def CollectionExists(self, request: Any, context: Any) -> Any:
        self._fake.requests["grpc Collections/CollectionExists"] += 1
        with self._fake._lock:
            exists = self._fake.backend.collection_exists(request.collection_name)
        return qgrpc.CollectionExistsResponse(result=qgrpc.CollectionExists(exists=exists))

    async def Get(self, request: Any, context: Any) -> Any:
        self._fake.requests["grpc Collections/Get"] += 1
        with self._fake._lock:
            info = self._fake.backend.get_collection(request.collection_name)
        return qgrpc.GetCollectionInfoResponse(result=RestToGrpc.convert_collection_info(info))


class _GrpcPoints(qgrpc.PointsServicer):
    """``Points/Get`` as Qdrant answers it: dense vectors as packed float32, NOT_FOUND for a
    missing collection."""

    def __init__(self, fake: FakeQdrant) -> None:
        self._fake = fake

    async def Get(self, request: Any, context: Any) -> Any:
        self._fake.requests["grpc Points/Get"] += 1
        name = request.collection_name
        if self._fake.mode == "down":
            await self._abort(context, grpc.StatusCode.INTERNAL, "injected fault")
        with self._fake._lock:
            if not self._fake.backend.collection_exists(name):
                await self._abort(
                    context,
                    grpc.StatusCode.NOT_FOUND,
                    f"Not found: Collection `{name}` doesn't exist!",
                )
            records = self._fake.backend.retrieve(
                name,
                ids=[GrpcToRest.convert_point_id(i) for i in request.ids],
                with_payload=GrpcToRest.convert_with_payload_selector(request.with_payload),
                with_vectors=GrpcToRest.convert_with_vectors_selector(request.with_vectors),
            )
        response = qgrpc.GetResponse()
        for record in records:
            point = response.result.add()
            point.id.CopyFrom(RestToGrpc.convert_extended_point_id(record.id))
            for key, value in (record.payload or {}).items():
                point.payload[key].CopyFrom(json_to_value(value))
            if record.vector is not None:
                point.vectors.vector.dense.data.extend(record.vector)
        self._fake.grpc_responses[(_POINTS_GET, grpc.StatusCode.OK.value[0])] += 1
        return response

    async def _abort(self, context: Any, code: grpc.StatusCode, message: str) -> None:
        self._fake.grpc_responses[(_POINTS_GET, code.value[0])] += 1
        await context.abort(code, message)


class _ResponseCounters(Collector):
    """A stand-in's response counts as Qdrant names them."""

    def __init__(self, fake: FakeQdrant) -> None:
        self._fake = fake

    def collect(self) -> Any:
        rest = CounterMetricFamily(
            "rest_responses", "total number of responses", labels=["method", "endpoint", "status"]
        )
        for (method, endpoint, status), count in sorted(self._fake.rest_responses.items()):
            rest.add_metric([method, endpoint, str(status)], count)
        grpc_ = CounterMetricFamily(
            "grpc_responses", "total number of responses", labels=["endpoint", "status"]
        )
        for (endpoint, code), count in sorted(self._fake.grpc_responses.items()):
            grpc_.add_metric([endpoint, str(code)], count)
        yield rest
        yield grpc_


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
