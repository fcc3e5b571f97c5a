"""The app factory: routes, middleware (metrics, API keys, body limit) and the engine's lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ..engine import Engine
from ..redact import redact_url
from ..settings import CachedTEISettings
from .auth import APIKeyMiddleware
from .limits import BodyLimitMiddleware
from .metrics import MetricsMiddleware, ProxyMetrics
from .routes import EMBED_ROUTES, FORWARDED_ROUTES, OWN_ROUTES, Handlers, not_found
from .settings import ProxySettings

log = logging.getLogger(__name__)


def create_app(
    settings: CachedTEISettings | None = None, proxy: ProxySettings | None = None
) -> FastAPI:
    """A TEI-compatible app over a new engine. The engine starts and stops with the app's
    lifespan, on the server's event loop; stopping drains the cache's write-behind queue."""
    settings = settings if settings is not None else CachedTEISettings()
    proxy = proxy if proxy is not None else ProxySettings()
    handlers = Handlers(settings, proxy)
    metrics = ProxyMetrics(lambda: handlers.engine)
    handlers.metrics = metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        handlers.engine = Engine(settings)
        store = redact_url(settings.qdrant_url) if settings.qdrant_url else settings.qdrant_path
        log.info(
            "cached-tei proxy: upstream %s, cache %s, %s",
            redact_url(settings.tei_url),
            store,
            "API keys required" if proxy.keys() else "no API keys",
        )
        try:
            yield
        finally:
            engine, handlers.engine = handlers.engine, None
            pending = engine.stats.pending_writes
            try:
                await engine.aclose()
            except Exception:
                log.exception("closing the engine failed; some cache writes may be lost")
            else:
                log.info("cached-tei proxy stopped; drained %d pending cache writes", pending)

    app = FastAPI(
        title="cached-tei",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        exception_handlers={404: not_found, 405: not_found},
    )
    app.add_route("/embed", handlers.embed, methods=["POST"])
    app.add_route("/", handlers.embed, methods=["POST"])
    app.add_route("/v1/embeddings", handlers.openai, methods=["POST"])
    app.add_route("/info", handlers.info, methods=["GET"])
    app.add_route("/health", handlers.health, methods=["GET"])
    app.add_route("/metrics", handlers.metrics_route, methods=["GET"])
    for path in FORWARDED_ROUTES:
        app.add_route(path, handlers.forward, methods=["POST"])

    # Added innermost first: metrics see every answer, keys are checked before the body is read.
    app.add_middleware(BodyLimitMiddleware, max_bytes=proxy.max_body_bytes)
    keys = proxy.keys()
    if keys:
        app.add_middleware(APIKeyMiddleware, keys=keys)
    app.add_middleware(
        MetricsMiddleware, metrics=metrics, routes=(*EMBED_ROUTES, *OWN_ROUTES, *FORWARDED_ROUTES)
    )
    app.state.handlers = handlers
    app.state.metrics = metrics
    return app
