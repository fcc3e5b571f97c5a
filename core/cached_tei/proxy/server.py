"""Run the proxy with uvicorn: SIGTERM stops accepting, finishes in-flight requests, then the
app's lifespan drains the cache's write-behind queue."""

from __future__ import annotations

import logging
import math

from ..settings import CachedTEISettings
from .settings import ProxySettings

log = logging.getLogger(__name__)


def serve(settings: CachedTEISettings, proxy: ProxySettings) -> None:
    """Serve until SIGTERM or SIGINT. Logging is the caller's (uvicorn's loggers propagate)."""
    import uvicorn

    from .app import create_app

    config = uvicorn.Config(
        create_app(settings, proxy),
        host=proxy.host,
        port=proxy.port,
        log_config=None,
        log_level=proxy.log_level,
        access_log=proxy.access_log,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, math.ceil(proxy.graceful_timeout)),
    )
    uvicorn.Server(config).run()
