"""Run the proxy with uvicorn: SIGTERM stops accepting, finishes in-flight requests, then the
app's lifespan drains the cache's write-behind queue. Several workers share one socket."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import math
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..errors import StoreConfigurationError
from ..logs import LogFormat, configure_logging
from ..settings import CachedTEISettings
from ..stores.server import IN_MEMORY
from .settings import ProxySettings

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette
    from uvicorn.supervisors import Multiprocess

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
    if workers > 1 and settings.qdrant_url == IN_MEMORY:
        raise StoreConfigurationError(
            f"{workers} proxy workers cannot share an in-memory cache "
            f"(CACHED_TEI_QDRANT_URL={IN_MEMORY}): each would keep its own. Set "
            "CACHED_TEI_QDRANT_URL to a Qdrant server, or run one worker "
            "(CACHED_TEI_PROXY_WORKERS=1)"
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
        timeout_keep_alive=proxy.keep_alive_timeout,
        http=http_protocol(proxy),
    )
    if workers > 1:
        log.info("cached-tei proxy: %d workers on %s:%d", workers, proxy.host, proxy.port)
        with _shared_metrics_folder() as folder:
            # The supervisor handles SIGINT/SIGTERM: each worker stops gracefully, then it
            # returns.
            _supervisor(config, folder).run()
        return
    server = uvicorn.Server(config)
    stopped = _Stopped()
    with stopped.installed():
        server.run()
    if stopped.signal is not None:
        log.info("stopped by %s after a graceful shutdown", signal.Signals(stopped.signal).name)


def http_protocol(proxy: ProxySettings) -> Any:
    """Uvicorn's httptools protocol with the slow-client deadlines, for ``uvicorn.Config``'s
    ``http`` (picklable, for spawned workers)."""
    from .protocol import SlowClientProtocol

    return functools.partial(
        SlowClientProtocol,
        header_timeout=proxy.header_timeout,
        body_timeout=proxy.body_timeout,
        send_timeout=proxy.send_timeout,
    )


def _worker_app(
    settings: CachedTEISettings, proxy: ProxySettings, log_format: LogFormat
) -> Starlette:
    """The app, built in the process serving it: a spawned worker sets up logging again."""
    from .access import redact_access_log
    from .app import create_app

    if not logging.getLogger().handlers:
        configure_logging(proxy.log_level.upper(), log_format)
    redact_access_log()
    app = create_app(settings, proxy)
    _settle_garbage_collector()
    return app


def _settle_garbage_collector() -> None:
    """A serving process's garbage collector: what is loaded by now (modules, the app) is
    moved out of its sight for good, and it runs about 30 times less often than Python's
    default (every 700 new containers), which took about a tenth of the CPU of a cache miss
    under load (perf, ``bench/``). Each request makes garbage, but few cycles."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


@contextlib.contextmanager
def _shared_metrics_folder() -> Iterator[Path]:
    """A fresh folder for prometheus_client's multiprocess files, in the environment the
    workers inherit (set before they spawn), removed when the supervisor returns."""
    from .metrics import SHARED_FOLDER

    previous = os.environ.get(SHARED_FOLDER)
    with tempfile.TemporaryDirectory(prefix="cached-tei-metrics-") as folder:
        os.environ[SHARED_FOLDER] = folder
        try:
            yield Path(folder)
        finally:
            if previous is None:
                del os.environ[SHARED_FOLDER]
            else:
                os.environ[SHARED_FOLDER] = previous


def _supervisor(config: uvicorn.Config, folder: Path) -> Multiprocess:
    """Uvicorn's supervisor, which marks every worker that ends (restarted after dying, on
    SIGHUP, removed on SIGTTOU) dead in ``folder``: its levels leave the sums, its counts stay."""
    from prometheus_client.multiprocess import mark_process_dead
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        def keep_subprocess_alive(self) -> None:
            self._marking_ended(super().keep_subprocess_alive)

        def handle_signals(self) -> None:
            self._marking_ended(super().handle_signals)

        def _marking_ended(self, step: Callable[[], None]) -> None:
            before = {process.pid for process in self.processes}
            step()
            for pid in before - {process.pid for process in self.processes}:
                mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]

    return Supervisor(config, sockets=[config.bind_socket()])


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
