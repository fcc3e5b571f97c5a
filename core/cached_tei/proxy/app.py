"""The app factory: routes, middleware (request context, metrics, API keys, body limit) and
the engine's lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from ..engine import Engine
from ..redact import redact_url
from ..settings import CachedTEISettings
from .auth import APIKeyMiddleware, tenant_id
from .context import RequestContextMiddleware
from .limits import BodyLimitMiddleware
from .metrics import MetricsMiddleware
from .routes import ROUTES, DirectRoutes, EmbedEndpoint, Handlers, not_found
from .settings import ProxySettings
from .shutdown import STOP_CLOCK, ShutdownMiddleware, StopClock
from .tracing import TracingMiddleware

log = logging.getLogger(__name__)


def create_app(
    settings: CachedTEISettings | None = None, proxy: ProxySettings | None = None
) -> Starlette:
    """A TEI-compatible app over a new engine. The engine starts and stops with the app's
    lifespan, on the server's event loop; stopping drains the cache's write-behind queue."""
    settings = settings if settings is not None else CachedTEISettings()
    proxy = proxy if proxy is not None else ProxySettings()
    handlers = Handlers(settings, proxy)
    metrics = handlers.metrics
    keys = proxy.keys()
    separate = len(keys) > 1 and not proxy.share_cache

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, StopClock]]:
        engine = handlers.engine = Engine(settings)
        if settings.sparse_url is not None:
            handlers.sparse_engine = Engine(settings, "sparse")
        if settings.rerank_url is not None:
            handlers.rerank_engine = Engine(settings, "rerank")
        others = [e for e in (handlers.sparse_engine, handlers.rerank_engine) if e is not None]
        log.info(
            "cached-tei proxy: upstream %s, cache %s, %s",
            redact_url(settings.tei_url),
            settings.cache_location,
            f"{len(keys)} API keys, {'a cache namespace each' if separate else 'one cache'}"
            if keys
            else "no API keys",
        )
        clock = StopClock()
        async with metrics.publishing(engine):
            try:
                yield {STOP_CLOCK: clock}
            finally:
                handlers.engine = handlers.sparse_engine = handlers.rerank_engine = None
                # The whole stop fits in graceful_timeout; the drain gets at least a second.
                await asyncio.gather(
                    *(
                        _close(e, max(1.0, clock.left(proxy.graceful_timeout)))
                        for e in (engine, *others)
                    )
                )

    # Outermost first: every log line of a request carries its id, metrics see every answer,
    # keys are checked before the body is read; the embed routes are served innermost.
    paths = [r.path for r in ROUTES]
    middleware = [
        Middleware(TracingMiddleware, routes=paths),
        Middleware(RequestContextMiddleware),
        Middleware(MetricsMiddleware, metrics=metrics, routes=paths),
        Middleware(ShutdownMiddleware, openai_path="/v1/embeddings"),
    ]
    if keys:
        tenants = {key: tenant_id(key) if separate else None for key in keys}
        public = frozenset(r.path for r in ROUTES if r.public)
        middleware.append(Middleware(APIKeyMiddleware, tenants=tenants, public=public))
    middleware.append(Middleware(BodyLimitMiddleware, max_bytes=proxy.max_body_bytes))
    endpoints: dict[tuple[str, str], EmbedEndpoint] = {
        (r.method, r.path): endpoint
        for r in ROUTES
        if isinstance(endpoint := getattr(handlers, r.handler), EmbedEndpoint)
    }
    middleware.append(Middleware(DirectRoutes, endpoints=endpoints))
    app = Starlette(
        routes=[Route(r.path, getattr(handlers, r.handler), methods=[r.method]) for r in ROUTES],
        middleware=middleware,
        exception_handlers={404: not_found, 405: not_found},
        lifespan=lifespan,
    )
    app.state.handlers = handlers
    app.state.metrics = metrics
    return app


async def _close(engine: Engine, seconds: float) -> None:
    """Drain the cache's writes and close the engine, waiting at most ``seconds``: a hung TEI
    call must not hold the stop (what is still unfinished then is lost, and said so)."""
    pending = engine.stats.pending_writes
    closing = asyncio.ensure_future(engine.aclose())
    done, _ = await asyncio.wait({closing}, timeout=seconds)
    if not done:
        log.warning(
            "cached-tei proxy stopped at the end of its graceful timeout "
            "(CACHED_TEI_PROXY_GRACEFUL_TIMEOUT) with TEI calls or cache writes unfinished: "
            "%d cache writes were not drained",
            engine.stats.pending_writes,
        )
    elif closing.exception() is not None:
        log.error(
            "closing the engine failed; some cache writes may be lost",
            exc_info=closing.exception(),
        )
    else:
        log.info("cached-tei proxy stopped; drained %d pending cache writes", pending)
