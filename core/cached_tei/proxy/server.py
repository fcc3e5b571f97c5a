"""Run the proxy with uvicorn: SIGTERM stops accepting, finishes in-flight requests, then the
app's lifespan drains the cache's write-behind queue."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
from collections.abc import Iterator
from types import FrameType

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
    server = uvicorn.Server(config)
    stopped = _Stopped()
    with stopped.installed():
        server.run()
    if stopped.signal is not None:
        log.info("stopped by %s after a graceful shutdown", signal.Signals(stopped.signal).name)


class _Stopped:
    """Uvicorn re-raises the stop signal once it has shut down gracefully; this handler takes
    it, so a graceful stop exits 0 instead of dying of SIGTERM or KeyboardInterrupt."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
