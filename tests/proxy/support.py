"""Helpers for the proxy tests: the proxy on loopback (uvicorn in a thread), and CLI runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from cached_tei import CachedTEISettings
from cached_tei.proxy import ProxySettings, create_app
from tests.tei_emulator import EmulatorConfig

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("cached-tei"))

# Fast emulator: the proxy tests care about behaviour, not GPU timing.
FAST = EmulatorConfig(
    dim=32,
    step_ms=1.0,
    per_text_ms=0.01,
    max_input_length=16,
    prompts={"query": "query: "},
)


def engine_settings(tei_url: str, qdrant_path: Path, **overrides: Any) -> CachedTEISettings:
    """Engine settings for a test: its own embedded store, quick retries."""
    values: dict[str, Any] = {
        "tei_url": tei_url,
        "qdrant_path": qdrant_path,
        "retry_deadline": 2.0,
        "max_retries": 2,
        "timeout": 10.0,
    }
    values.update(overrides)
    return CachedTEISettings(**values)


class ProxyServer:
    """``create_app`` served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, settings: CachedTEISettings, proxy: ProxySettings | None = None) -> None:
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
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def engine(self):
        return self.app.state.handlers.engine

    def start(self) -> ProxyServer:
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

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def texts_sent(emulator) -> list[str]:
    """Every text the emulator was asked to embed, in order."""
    return [text for request in emulator.requests for text in request.texts]


def post(url: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, json=body, timeout=30.0, **kwargs)


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """The installed ``cached-tei`` entry point, in a subprocess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CACHED_TEI_")}
    full_env.update(env or {})
    return subprocess.run(
        [CLI, *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=str(REPO),
        timeout=timeout,
        check=False,
    )
