"""The HTTP routes: translate between TEI's HTTP API and the engine, nothing more.

Handlers take a plain Starlette ``Request`` and return bytes built with orjson: no FastAPI
parameter parsing or pydantic models on the request path.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from ..engine import EmbedResult, Engine
from ..errors import CachedTEIError
from ..jsonio import JSONDecodeError, dumps, dumps_matrix, loads
from ..keys import EmbedOptions
from ..settings import CachedTEISettings
from .errors import APIError, error_response, from_engine, plain_response
from .metrics import CONTENT_TYPE_LATEST, ProxyMetrics
from .schemas import BadRequest, parse_embed, parse_openai
from .settings import ProxySettings

log = logging.getLogger(__name__)

JSON = "application/json"
EMBED_ROUTES = ("/embed", "/", "/v1/embeddings")
OWN_ROUTES = ("/info", "/health", "/metrics")
FORWARDED_ROUTES = (
    "/embed_all",
    "/embed_sparse",
    "/predict",
    "/rerank",
    "/similarity",
    "/tokenize",
    "/decode",
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
    mime = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return mime == JSON or (mime.startswith("application/") and mime.endswith("+json"))


def _ms(seconds: float) -> str:
    return str(int(seconds * 1000))


class Handlers:
    """The proxy's routes over one engine (created by the app's lifespan, on uvicorn's loop)."""

    def __init__(
        self, settings: CachedTEISettings, proxy: ProxySettings, metrics: ProxyMetrics | None = None
    ) -> None:
        self.settings = settings
        self.proxy = proxy
        self.metrics = metrics
        self.engine: Engine | None = None

    @property
    def _engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("the proxy's engine is not started; run the app with its lifespan")
        return self.engine

    # ------------------------------------------------------------------ embeddings
    async def embed(self, request: Request) -> Response:
        """``POST /embed`` and ``POST /``: TEI's 2-D list, from the cache where possible."""
        started = time.perf_counter()
        try:
            call = parse_embed(await self._read_json(request))
            if call.texts is None:
                return await self.forward(request)
            texts = self._checked(call.texts, call.is_batch)
            result = await self._engine.embed(texts, call.options)
        except BadRequest as exc:
            return plain_response(exc)
        except APIError as exc:
            return error_response(exc, openai=False)
        except CachedTEIError as exc:
            return error_response(from_engine(exc), openai=False)
        return Response(
            dumps_matrix(result.vectors), media_type=JSON, headers=_headers(started, texts, result)
        )

    async def openai(self, request: Request) -> Response:
        """``POST /v1/embeddings``: the OpenAI shape, floats or base64 of little-endian f32."""
        started = time.perf_counter()
        try:
            call = parse_openai(await self._read_json(request))
            if call.texts is None:
                return await self.forward(request)
            texts = self._checked(call.texts, call.is_batch)
            engine = self._engine
            result = await engine.embed(texts, call.options)
            info = await engine.info()
        except BadRequest as exc:
            return plain_response(exc)
        except APIError as exc:
            return error_response(exc, openai=True)
        except CachedTEIError as exc:
            return error_response(from_engine(exc), openai=True)
        vectors = result.vectors
        if call.base64:
            little = vectors.astype("<f4", copy=False)
            rows: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
        else:
            rows = list(vectors)
        # Cache hits never reach a tokenizer: usage counts whitespace-separated words.
        tokens = sum(len(text.split()) for text in texts)
        body = {
            "object": "list",
            "data": [
                {"object": "embedding", "embedding": row, "index": index}
                for index, row in enumerate(rows)
            ],
            "model": info.raw.get("served_model_name") or info.model_id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Response(dumps(body), media_type=JSON, headers=_headers(started, texts, result))

    async def _read_json(self, request: Request) -> Any:
        if not _is_json(request):
            raise _NOT_JSON
        try:
            return loads(await request.body())
        except JSONDecodeError as exc:
            raise BadRequest(400, f"Failed to parse the request body as JSON: {exc}") from None

    def _checked(self, texts: list[str], is_batch: bool) -> list[str]:
        """TEI's checks, in TEI's order, with the proxy's batch limit instead of TEI's."""
        if is_batch:
            if not texts:
                raise APIError("Empty", "`inputs` cannot be empty")
            if len(texts) > self.proxy.max_inputs:
                raise APIError(
                    "Validation",
                    f"batch size {len(texts)} > maximum allowed batch size {self.proxy.max_inputs}",
                )
        if "" in texts:
            raise APIError("Empty", "Input validation error: `inputs` cannot be empty")
        return texts

    # ------------------------------------------------------------------ the proxy's own
    async def info(self, request: Request) -> Response:
        """The upstream's ``/info``, with the proxy's batch limit, the cache's namespace and size."""
        engine = self._engine
        try:
            info = await engine.info()
            namespace = await engine.namespace(EmbedOptions())
        except CachedTEIError as exc:
            return error_response(from_engine(exc), openai=False)
        body = dict(info.raw)
        body["max_client_batch_size"] = self.proxy.max_inputs
        collection = namespace.collection(self.settings.collection_prefix)
        body["cache"] = {
            "namespace": namespace.descriptor(),
            "collection": collection,
            "entries": await self._entries(collection),
            "store": "embedded" if self.settings.qdrant_url is None else "server",
            "breaker": engine.breaker.state,
        }
        return Response(dumps(body), media_type=JSON)

    async def _entries(self, collection: str) -> int | None:
        """Entries in the default namespace's collection; None when the store cannot say."""
        engine = self._engine
        if engine.breaker.state == "open":
            return None
        try:
            collections = await asyncio.wait_for(
                engine.store.collections(), self.settings.qdrant_timeout
            )
        except Exception as exc:
            log.warning("could not count cache entries: %r", exc)
            return None
        return next((c.count for c in collections if c.name == collection), 0)

    async def health(self, request: Request) -> Response:
        """200 when the upstream is healthy; ``x-cache-store`` says ``ok`` or ``degraded``."""
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

    async def metrics_route(self, request: Request) -> Response:
        assert self.metrics is not None
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ forwarded
    async def forward(self, request: Request) -> Response:
        """Send the request to the upstream as is; its answer comes back as is."""
        if not _is_json(request):
            return plain_response(_NOT_JSON)
        body = await request.body()
        headers = {
            name: request.headers[name] for name in _FORWARD_HEADERS if name in request.headers
        }
        path = request.url.path
        if request.url.query:
            path = f"{path}?{request.url.query}"
        try:
            upstream = await self._engine.tei.request(
                request.method, path, content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            log.warning("forwarding %s failed: %r", path, exc)
            detail = str(exc) or type(exc).__name__
            return error_response(
                APIError("Unhealthy", f"upstream TEI is unavailable: {detail}"), openai=False
            )
        kept = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
        return Response(upstream.content, status_code=upstream.status_code, headers=kept)


def _headers(started: float, texts: list[str], result: EmbedResult) -> dict[str, str]:
    elapsed = _ms(time.perf_counter() - started)
    return {
        "x-compute-time": elapsed,
        "x-total-time": elapsed,
        "x-compute-characters": str(sum(map(len, texts))),
        "x-cache-hits": str(result.hits),
        "x-cache-misses": str(result.misses),
    }


async def not_found(request: Request, exc: Exception) -> Response:
    """axum's answer to an unknown route or method: the status with an empty body."""
    return Response(b"", status_code=getattr(exc, "status_code", 404))


__all__ = ["EMBED_ROUTES", "FORWARDED_ROUTES", "OWN_ROUTES", "Handlers", "not_found"]
