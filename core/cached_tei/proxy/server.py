"""Run the proxy with uvicorn: SIGTERM stops accepting, finishes in-flight requests, then the
app's lifespan drains the cache's write-behind queue. Several workers share one socket."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

from ..errors import StoreConfigurationError
from ..logs import LogFormat, configure_logging
from ..settings import CachedTEISettings
from .settings import ProxySettings

if TYPE_CHECKING:
    from starlette.applications import Starlette

log = logging.getLogger(__name__)


def serve(
    settings: CachedTEISettings, proxy: ProxySettings, log_format: LogFormat = "text"
) -> None:
    """Serve until SIGTERM or SIGINT. Logging is the caller's (uvicorn's loggers propagate);
    spawned workers configure it again, at ``proxy.log_level`` in ``log_format``.

    Raises :class:`StoreConfigurationError` for several workers over an embedded folder.
    """
    workers = proxy.worker_count()
    if workers > 1 and settings.qdrant_url is None:
        raise StoreConfigurationError(
            f"{workers} proxy workers need a Qdrant server: the embedded cache folder "
            f"{settings.qdrant_path} can be opened by one process only. Set "
            "CACHED_TEI_QDRANT_URL (--qdrant-url), or run one worker (CACHED_TEI_PROXY_WORKERS=1)"
        )
    import uvicorn

    config = uvicorn.Config(
        functools.partial(_worker_app, settings, proxy, log_format),
        factory=True,
        workers=workers,
        host=proxy.host,
        port=proxy.port,
        log_config=None,
        log_level=proxy.log_level,
        access_log=proxy.access_log,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, math.ceil(proxy.graceful_timeout)),
    )
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        log.info("cached-tei proxy: %d workers on %s:%d", workers, proxy.host, proxy.port)
        # The supervisor handles SIGINT/SIGTERM: each worker stops gracefully, then it returns.
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    server = uvicorn.Server(config)
    stopped = _Stopped()
    with stopped.installed():
        server.run()
    if stopped.signal is not None:
        log.info("stopped by %s after a graceful shutdown", signal.Signals(stopped.signal).name)


def _worker_app(
    settings: CachedTEISettings, proxy: ProxySettings, log_format: LogFormat
) -> Starlette:
    """The app, built in the process serving it: a spawned worker sets up logging again."""
    from .app import create_app

    if not logging.getLogger().handlers:
        configure_logging(proxy.log_level.upper(), log_format)
    return create_app(settings, proxy)


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
