"""The caching proxy on loopback: ``create_app`` under uvicorn in a thread (its logs reach
caplog, its engine is reachable), or ``cached-tei serve`` as a child process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.tei_emulator.process import free_port

from .env import scrubbed_environ

if TYPE_CHECKING:
    from cached_tei import CachedTEISettings
    from cached_tei.proxy import ProxySettings


class InThreadProxy:
    """``create_app(settings, proxy)`` served by uvicorn on 127.0.0.1 in a daemon thread, with the
    HTTP protocol ``cached-tei serve`` uses."""

    def __init__(self, settings: CachedTEISettings, proxy: ProxySettings | None = None) -> None:
        import uvicorn

        from cached_tei.proxy import ProxySettings, create_app
        from cached_tei.proxy.server import http_protocol

        self.settings = settings
        self.proxy = proxy or ProxySettings()
        self.app = create_app(settings, self.proxy)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="on",
            server_header=False,
            timeout_graceful_shutdown=5,
            timeout_keep_alive=self.proxy.keep_alive_timeout,
            http=http_protocol(self.proxy),  # the deadlines for slow clients, as served
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def engine(self) -> Any:
        return self.app.state.handlers.engine

    def start(self) -> InThreadProxy:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the proxy did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(30)
            self._thread = None
        self._sock.close()

    def __enter__(self) -> InThreadProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ProxyProcess:
    """``cached-tei serve`` in a child process (``args`` appended, e.g. ``--workers 2``), with
    no inherited ``CACHED_TEI_*`` variable; its output goes to a log file under ``workdir``.

    The store defaults to an embedded folder under ``workdir``; ``env`` adds settings.
    ``program`` runs the CLI (default: this interpreter), e.g. another environment's
    ``bin/cached-tei``."""

    def __init__(
        self,
        workdir: Path,
        tei_url: str,
        *,
        qdrant_path: Path | None = None,
        args: tuple[str, ...] = (),
        program: tuple[str, ...] = (
            sys.executable,
            "-c",
            "import sys; from cached_tei.cli import main; sys.exit(main())",
        ),
        **env: str,
    ) -> None:
        self.workdir = workdir
        self.program = program
        self.port = free_port()
        self.args = args
        self.log_path = workdir / f"proxy-{self.port}.log"
        self.env = scrubbed_environ(
            CACHED_TEI_URL=tei_url,
            XDG_CACHE_HOME=str(workdir / "xdg"),
            CACHED_TEI_QDRANT_PATH=str(qdrant_path or workdir / "qdrant"),
            CACHED_TEI_PROXY_LOG_LEVEL="info",
            PYTHONUNBUFFERED="1",
        )
        self.env.update(env)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "start() the proxy first"
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> ProxyProcess:
        command = [
            *self.program,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.args,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                command, env=self.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                httpx.get(f"{self.url}/metrics", timeout=1)  # any answer means it listens
                return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"proxy did not listen within {timeout}s: {self.log()[-3000:]}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None, "start() the proxy first"
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
