"""The HTTP routes: translate between TEI's HTTP API and the engine, nothing more.

``ROUTES`` is the one list of what the proxy serves: the app, the metrics' route labels and
the API key rules are derived from it. Handlers take a plain Starlette ``Request`` and return
bytes built with orjson: no parameter parsing framework or pydantic models on the request path.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import numpy as np
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..engine import EmbedResult, Engine
from ..errors import CachedTEIError, StoreLockedError
from ..jsonio import JSONDecodeError, dumps, dumps_matrix, loads
from ..keys import EmbedOptions
from ..reranker import ranks
from ..settings import CachedTEISettings
from ..stores.embedded import EmbeddedStore
from ..stores.server import IN_MEMORY
from ..values import SparseVector
from .access import redact_target
from .auth import TENANT, bearer_matches
from .errors import APIError, error_response, from_engine, plain_response
from .metrics import CONTENT_TYPE_LATEST, ProxyMetrics
from .schemas import (
    BadRequest,
    OpenAICall,
    parse_embed,
    parse_openai,
    parse_rerank,
    parse_sparse,
)
from .settings import ProxySettings

log = logging.getLogger(__name__)

JSON = "application/json"
HandlerName = Literal[
    "embed", "openai", "embed_sparse", "rerank", "info", "health", "prometheus", "forward"
]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One route: its path and method, the ``Handlers`` method serving it, and whether it
    is served without an API key."""

    path: str
    method: Literal["GET", "POST"]
    handler: HandlerName
    public: bool = False


_FORWARDED = (
    "/embed_all",
    "/predict",
    "/similarity",
    "/tokenize",
    "/decode",
)
ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("/embed", "POST", "embed"),
    RouteSpec("/", "POST", "embed"),
    RouteSpec("/v1/embeddings", "POST", "openai"),
    RouteSpec("/embed_sparse", "POST", "embed_sparse"),
    RouteSpec("/rerank", "POST", "rerank"),
    RouteSpec("/info", "GET", "info"),
    RouteSpec("/health", "GET", "health", public=True),
    RouteSpec("/metrics", "GET", "prometheus", public=True),
    *(RouteSpec(path, "POST", "forward") for path in _FORWARDED),
)

# Request headers a forwarded request keeps; the client's Authorization is the proxy's key.
_FORWARD_HEADERS = ("content-type", "accept", "traceparent", "tracestate")
# Response headers of the upstream that are not passed back.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "date",
        "server",
    }
)
_UNHEALTHY = b'{"error":"unhealthy","error_type":"Unhealthy"}'
_NOT_JSON = BadRequest(415, "Expected request with `Content-Type: application/json`")


def _is_json(request: Request) -> bool:
    # The raw header, as the ASGI server gives it (names are lowercase): cheaper than
    # Starlette's Headers on the hot path.
    value = next((v for n, v in request.scope["headers"] if n == b"content-type"), b"")
    mime = value.split(b";", 1)[0].strip().lower()
    return mime == b"application/json" or (
        mime.startswith(b"application/") and mime.endswith(b"+json")
    )


_Headers = list[tuple[bytes, bytes]]


async def _read_body(receive: Receive) -> bytes:
    """The request's whole body, read straight from ASGI (Starlette's ``Request.body()``
    costs a generator per request); ``ClientDisconnect`` if the client leaves first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class EmbedEndpoint:
    """An embed route as a plain ASGI app: a success (the hot path) is two ASGI messages,
    without Starlette's request/response wrapping; everything else is a ``Response``."""

    def __init__(self, handlers: Handlers, openai: bool) -> None:
        self._handlers = handlers
        self._openai = openai

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = await self._handlers.embedding(Request(scope, receive), self._openai)
        if isinstance(answer, Response):
            await answer(scope, receive, send)
            return
        content, headers = answer
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})


class DirectRoutes:
    """The embed routes reached by one dict lookup, past Starlette's router (its matching and
    its exception layer cost 3 of a cache hit's 42 microseconds in the app); every other
    request, and an embed path with another method, goes on to the router."""

    def __init__(self, app: ASGIApp, endpoints: Mapping[tuple[str, str], EmbedEndpoint]) -> None:
        """``endpoints`` maps (method, path) to its endpoint."""
        self.app = app
        self._endpoints = dict(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self._endpoints.get((scope["method"], scope["path"]))
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Handlers:
    """The proxy's routes over one engine (created by the app's lifespan, on uvicorn's loop)."""

    def __init__(self, settings: CachedTEISettings, proxy: ProxySettings) -> None:
        self.settings = settings
        self.proxy = proxy
        self.engine: Engine | None = None
        self.metrics = ProxyMetrics(lambda: self.engine)
        # The engines of the other kinds, when their URLs are set (else their routes forward).
        self.sparse_engine: Engine | None = None
        self.rerank_engine: Engine | None = None
        self.embed = EmbedEndpoint(self, openai=False)
        """``POST /embed`` and ``POST /``: TEI's 2-D list, from the cache where possible."""
        self.openai = EmbedEndpoint(self, openai=True)
        """``POST /v1/embeddings``: the OpenAI shape, floats or base64 of little-endian f32."""

    @property
    def _engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("the proxy's engine is not started; run the app with its lifespan")
        return self.engine

    # ------------------------------------------------------------------ embeddings
    async def embedding(self, request: Request, openai: bool) -> Response | tuple[bytes, _Headers]:
        """Both embed routes: one path from the body to the vectors, one for errors. A
        success is its body and headers."""
        started = time.perf_counter()
        try:
            raw, body = await self._read_json(request)
            tenant: str | None = request.scope.get(TENANT)
            call = parse_openai(body, tenant) if openai else parse_embed(body, tenant)
            if call.texts is None:
                return await self.forward(request, body=raw)
            texts = self._checked(call.texts, call.is_batch)
            read_cache, write_cache = self._cache_control(request)
            result = await self._engine.embed(
                texts, call.options, read_cache=read_cache, write_cache=write_cache
            )
            if isinstance(call, OpenAICall):
                content = await self._openai_body(call, texts, result)
            else:
                content = dumps_matrix(result.vectors)
        except BadRequest as exc:
            return plain_response(exc)
        except APIError as exc:
            return error_response(exc, openai=openai)
        except CachedTEIError as exc:
            return error_response(from_engine(exc), openai=openai)
        return content, _headers(started, texts, result, len(content))

    async def _openai_body(self, call: OpenAICall, texts: list[str], result: EmbedResult) -> bytes:
        info = await self._engine.info()
        vectors = result.vectors
        if call.base64:
            little = vectors.astype("<f4", copy=False)
            rows: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
        else:
            rows = list(vectors)
        # Cache hits never reach a tokenizer: usage counts whitespace-separated words.
        tokens = sum(len(text.split()) for text in texts)
        return dumps(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "embedding": row, "index": index}
                    for index, row in enumerate(rows)
                ],
                "model": info.raw.get("served_model_name") or info.model_id,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _read_json(self, request: Request) -> tuple[bytes, Any]:
        """The body as it came (to forward) and as JSON."""
        if not _is_json(request):
            raise _NOT_JSON
        raw = await _read_body(request.receive)
        try:
            return raw, loads(raw)
        except JSONDecodeError as exc:
            raise BadRequest(400, f"Failed to parse the request body as JSON: {exc}") from None

    def _checked(self, texts: list[str], is_batch: bool, field: str = "inputs") -> list[str]:
        """TEI's checks, in TEI's order, with the proxy's batch limit instead of TEI's; a
        rerank's ``texts`` may hold empty strings (TEI reads each with its query)."""
        if is_batch:
            if not texts:
                raise APIError("Empty", f"`{field}` cannot be empty")
            if len(texts) > self.proxy.max_inputs:
                raise APIError(
                    "Validation",
                    f"batch size {len(texts)} > maximum allowed batch size {self.proxy.max_inputs}",
                )
        if field == "inputs" and "" in texts:
            raise APIError("Empty", "Input validation error: `inputs` cannot be empty")
        return texts

    def _cache_control(self, request: Request) -> tuple[bool, bool]:
        """(read the cache, write the cache) from ``Cache-Control: no-cache`` / ``no-store``;
        repeated header lines are one list (RFC 9110, 5.3)."""
        lines = [v for n, v in request.scope["headers"] if n == b"cache-control"]
        if not lines:
            return True, True
        header = b",".join(lines).decode("latin-1")
        directives = {part.split("=", 1)[0].strip().lower() for part in header.split(",")}
        no_cache, no_store = "no-cache" in directives, "no-store" in directives
        if no_cache:
            self.metrics.cache_control("no-cache")
        if no_store:
            self.metrics.cache_control("no-store")
        return not no_cache, not no_store

    # ------------------------------------------------------------------ sparse and rerank
    async def embed_sparse(self, request: Request) -> Response:
        """``POST /embed_sparse``: TEI's ``[[{"index", "value"}...]...]``, cached when
        CACHED_TEI_SPARSE_URL is set (else forwarded to CACHED_TEI_URL)."""
        engine = self.sparse_engine
        if engine is None:
            return await self.forward(request)
        started = time.perf_counter()
        try:
            raw, body = await self._read_json(request)
            call = parse_sparse(body, request.scope.get(TENANT))
            if call.texts is None:
                return await self.forward(request, engine, body=raw)
            texts = self._checked(call.texts, call.is_batch)
            read_cache, write_cache = self._cache_control(request)
            result = await engine.embed(
                texts, call.options, read_cache=read_cache, write_cache=write_cache
            )
            content = dumps([_sparse_entries(vector) for vector in result.vectors])
            self.metrics.texts("/embed_sparse", result.hits, result.misses)
        except BadRequest as exc:
            return plain_response(exc)
        except APIError as exc:
            return error_response(exc, openai=False)
        except CachedTEIError as exc:
            return error_response(from_engine(exc), openai=False)
        return _answer(content, _headers(started, texts, result, len(content)))

    async def rerank(self, request: Request) -> Response:
        """``POST /rerank``: TEI's ranks, best first, each pair's score cached when
        CACHED_TEI_RERANK_URL is set (else forwarded to CACHED_TEI_URL)."""
        engine = self.rerank_engine
        if engine is None:
            return await self.forward(request)
        started = time.perf_counter()
        try:
            call = parse_rerank((await self._read_json(request))[1], request.scope.get(TENANT))
            query = call.options.query or ""  # TEI reads it with each text (and counts it so)
            texts = self._checked(call.texts, True, field="texts")
            read_cache, write_cache = self._cache_control(request)
            result = await engine.embed(
                texts, call.options, read_cache=read_cache, write_cache=write_cache
            )
            self.metrics.texts("/rerank", result.hits, result.misses)
            scores = result.vectors[:, 0]
            body: list[dict[str, Any]] = []
            for rank in ranks(result, texts, None, call.return_text):
                entry: dict[str, Any] = {"index": rank.index, "score": scores[rank.index]}
                if rank.text is not None:
                    entry["text"] = rank.text
                body.append(entry)
            content = dumps(body)
        except BadRequest as exc:
            return plain_response(exc)
        except APIError as exc:
            return error_response(exc, openai=False)
        except CachedTEIError as exc:
            return error_response(from_engine(exc), openai=False)
        return _answer(
            content, _headers(started, [*texts, *[query] * len(texts)], result, len(content))
        )

    # ------------------------------------------------------------------ the proxy's own
    async def info(self, request: Request) -> Response:
        """The upstream's ``/info`` with the proxy's batch limit, and the caller's own cache
        namespace and size (never another tenant's)."""
        engine = self._engine
        try:
            await engine.tei.recheck_info()  # the model now behind the URL, not the last seen
            info = await engine.info()
            namespace = await engine.namespace(EmbedOptions(tenant=request.scope.get(TENANT)))
        except CachedTEIError as exc:
            return error_response(from_engine(exc), openai=False)
        body = dict(info.raw)
        body["max_client_batch_size"] = self.proxy.max_inputs
        collection = namespace.collection(self.settings.collection_prefix)
        body["cache"] = {
            "namespace": namespace.descriptor(),
            "collection": collection,
            "entries": await engine.entries(namespace),
            "store": store_kind(self.settings),
            "breaker": engine.breaker.state,
        }
        return Response(dumps(body), media_type=JSON)

    async def health(self, request: Request) -> Response:
        """200 when the upstream is healthy; ``x-cache-store`` says ``ok`` or ``degraded``.
        503 (``x-cache-store: locked``) while another process holds the embedded folder: every
        embedding would fail."""
        held = self._held_elsewhere()
        if held is not None:
            response = error_response(APIError("Unhealthy", str(held)), openai=False)
            response.headers["x-cache-store"] = "locked"
            return response
        try:
            upstream = await asyncio.wait_for(
                self._engine.tei.request("GET", "/health"), self.proxy.health_timeout
            )
            healthy = upstream.status_code == 200
        except (httpx.HTTPError, asyncio.TimeoutError) as exc:
            log.warning("health: upstream unreachable: %r", exc)
            healthy = False
        if not healthy:
            return Response(_UNHEALTHY, status_code=503, media_type=JSON)
        store = "ok" if self._engine.breaker.state == "closed" else "degraded"
        return Response(b"", headers={"x-cache-store": store})

    def _held_elsewhere(self) -> StoreLockedError | None:
        store = self._engine.store
        if not isinstance(store, EmbeddedStore):
            return None
        holder = store.holder()
        # This process holding it (any of its engines) is the normal case.
        if holder is None or holder.startswith("this process"):
            return None
        return StoreLockedError(store.location, holder)

    async def prometheus(self, request: Request) -> Response:
        """The metrics in Prometheus' text format; with a metrics key, only for its holder
        (TEI's 401 with an empty body otherwise)."""
        keys = self.proxy.metrics_keys()
        if keys and not bearer_matches(request.headers.get("authorization", "").encode(), keys):
            return Response(b"", status_code=401)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ forwarded
    async def forward(
        self, request: Request, engine: Engine | None = None, body: bytes | None = None
    ) -> Response:
        """Send the request to the upstream (``engine``'s, by default the dense one's) as is;
        its answer comes back as is. ``body``: the request's, when already read."""
        if body is None:
            if not _is_json(request):
                return plain_response(_NOT_JSON)
            body = await _read_body(request.receive)
        headers = {
            name: request.headers[name] for name in _FORWARD_HEADERS if name in request.headers
        }
        path = request.url.path
        if request.url.query:
            path = f"{path}?{request.url.query}"
        try:
            upstream = await (engine or self._engine).tei.request(
                request.method, path, content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            log.warning("forwarding %s failed: %r", redact_target(path), exc)
            detail = str(exc) or type(exc).__name__
            return error_response(
                APIError("Unhealthy", f"upstream TEI is unavailable: {detail}"), openai=False
            )
        kept = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
        return Response(upstream.content, status_code=upstream.status_code, headers=kept)


def store_kind(settings: CachedTEISettings) -> Literal["embedded", "memory", "server"]:
    """Where the cache lives: an embedded folder, this process's memory, or a Qdrant server."""
    if settings.qdrant_url is None:
        return "embedded"
    return "memory" if settings.qdrant_url == IN_MEMORY else "server"


def _headers(started: float, texts: list[str], result: EmbedResult, length: int) -> _Headers:
    """The headers of a cached answer: TEI's timing and size headers, and the cache's."""
    elapsed = str(int((time.perf_counter() - started) * 1000)).encode()
    return [
        (b"content-length", str(length).encode()),
        (b"content-type", b"application/json"),
        (b"x-compute-time", elapsed),
        (b"x-total-time", elapsed),
        (b"x-compute-characters", str(sum(map(len, texts))).encode()),
        (b"x-cache-hits", str(result.hits).encode()),
        (b"x-cache-misses", str(result.misses).encode()),
    ]


def _answer(content: bytes, headers: _Headers) -> Response:
    response = Response(content)
    response.raw_headers = headers
    return response


def _sparse_entries(vector: SparseVector) -> list[dict[str, Any]]:
    """One sparse vector as TEI writes it, its values as float32 (TEI's exact digits)."""
    values = np.asarray(vector.values, dtype=np.float32)
    return [{"index": i, "value": v} for i, v in zip(vector.indices, values, strict=True)]


async def not_found(request: Request, exc: Exception) -> Response:
    """axum's answer to an unknown route or method: the status with an empty body."""
    return Response(b"", status_code=getattr(exc, "status_code", 404))


__all__ = ["ROUTES", "DirectRoutes", "Handlers", "RouteSpec", "not_found"]
