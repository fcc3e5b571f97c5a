"""Fixtures for the fault suite: a tally of every scenario, real nginx in front of TEI
emulator processes, a fake Qdrant server, and the proxy as a subprocess.

Each scenario records what it sent, what failed, how often the engine retried and how many
vectors were wrong (every vector is compared with ``expected_vector``). The figures are
printed at the end of the run and, if ``CACHED_TEI_FAULTS_REPORT`` names a file, written
there as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.tei_emulator import EmulatorConfig, EmulatorProcess, expected_vector

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "tests" / "reference" / "tei-1.9.3-openapi.json"

FAST_TEI = EmulatorConfig(step_ms=2.0, per_text_ms=0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- the tally
@dataclass
class Tally:
    """What one scenario did. ``sent``: calls (or HTTP requests) made; ``failed``: those that
    raised or answered an error; ``retried``: TEI retries the engine made; ``wrong``: vectors
    that differ from the emulator's oracle, plus short or missing results."""

    scenario: str
    sent: int = 0
    failed: int = 0
    retried: int = 0
    wrong: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check(
        self, config: EmulatorConfig, texts: Sequence[str], vectors: Any, **options: Any
    ) -> int:
        """Count one successful call; compare every vector with the oracle. Returns wrong ones."""
        rows = list(vectors)
        bad = abs(len(rows) - len(texts))
        for text, row in zip(texts, rows):
            if not np.array_equal(
                np.asarray(row, dtype=np.float32), expected_vector(config, text, **options)
            ):
                bad += 1
        with self._lock:
            self.sent += 1
            self.wrong += bad
        return bad

    def fail(self, n: int = 1) -> None:
        with self._lock:
            self.sent += n
            self.failed += n

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "sent": self.sent,
            "failed": self.failed,
            "retried": self.retried,
            "wrong": self.wrong,
            "extra": dict(self.extra),
        }


_TALLIES: list[Tally] = []


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Tally:
    t = Tally(request.node.name)
    _TALLIES.append(t)
    return t


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _TALLIES:
        return
    tr = terminalreporter
    tr.section("fault scenarios: requests sent / failed / retried / wrong")
    for t in _TALLIES:
        extra = " ".join(f"{k}={v}" for k, v in t.extra.items())
        tr.write_line(
            f"{t.scenario:70s} sent={t.sent} failed={t.failed} retried={t.retried} wrong={t.wrong} {extra}"
        )
    target = os.environ.get("CACHED_TEI_FAULTS_REPORT")
    if target:
        Path(target).write_text(json.dumps([t.as_dict() for t in _TALLIES], indent=2, default=str))


# ---------------------------------------------------------------------------- nginx + replicas
def nginx_binary() -> str | None:
    from tests.stack.conftest import nginx_binary as find

    return find()


class Cluster:
    """Real nginx (the generated nginx.conf) in front of TEI emulator processes."""

    def __init__(
        self, tmp: Path, replicas: int = 3, config: EmulatorConfig = FAST_TEI, **env: str
    ) -> None:
        from tests.stack.conftest import _load_generator
        from tests.stack.test_nginx import Nginx

        binary = nginx_binary()
        if binary is None:
            pytest.skip("nginx binary not found (install Debian's nginx)")
        tmp.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.replicas = [EmulatorProcess(config).start() for _ in range(replicas)]
        gen = _load_generator()
        values = gen.parse_dotenv((REPO / "stack" / ".env.example").read_text(encoding="utf-8"))
        values.update(
            TEI_VARIANT="cpu", GPU_IDS="", TEI_REPLICAS=str(replicas), NGINX_FAIL_TIMEOUT="2s"
        )
        values.update(env)
        settings = gen.Settings.from_env(values)
        self.nginx = None
        last: Exception | None = None
        for _ in range(3):
            port = free_port()
            conf = gen.render_nginx_conf(
                settings,
                upstreams=[f"127.0.0.1:{r.port}" for r in self.replicas],
                listen=f"127.0.0.1:{port}",
                runtime_dir=tmp,
            )
            try:
                self.nginx = Nginx(binary, conf, tmp, port)
                break
            except RuntimeError as exc:
                last = exc
        if self.nginx is None:
            self.close()
            raise RuntimeError(f"nginx did not start: {last}")

    @property
    def url(self) -> str:
        assert self.nginx is not None
        return self.nginx.url

    def served(self) -> list[int]:
        """Embed requests each replica answered with 200 (0 for a dead one)."""
        out = []
        for r in self.replicas:
            try:
                out.append(sum(1 for q in r.requests() if q.status == 200))
            except (httpx.HTTPError, AttributeError):
                out.append(0)
        return out

    def statuses(self) -> list[int]:
        out: list[int] = []
        for r in self.replicas:
            try:
                out.extend(q.status for q in r.requests())
            except httpx.HTTPError:
                pass
        return out

    def close(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for r in self.replicas:
            r.kill()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "nginx")
    try:
        yield c
    finally:
        c.close()


# ---------------------------------------------------------------------------- the proxy
def proxy_available() -> bool:
    import importlib.util

    try:
        return (
            importlib.util.find_spec("cached_tei.cli") is not None
            and importlib.util.find_spec("cached_tei.proxy.app") is not None
        )
    except ImportError:
        return False


needs_proxy = pytest.mark.skipif(
    not proxy_available(), reason="the proxy (cached_tei.cli) is not there yet"
)


class ProxyProcess:
    """``cached-tei serve`` in a subprocess; its output goes to a log file the test can read."""

    def __init__(
        self, tmp: Path, tei_url: str, *, qdrant_path: Path | None = None, **env: str
    ) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.log_path = tmp / f"proxy-{self.port}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CACHED_TEI_")}
        self.env.update(
            CACHED_TEI_URL=tei_url,
            XDG_CACHE_HOME=str(tmp / "xdg"),
            CACHED_TEI_QDRANT_PATH=str(qdrant_path or tmp / "qdrant"),
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
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> ProxyProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from cached_tei.cli import main; sys.exit(main())",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=self.env,
            cwd=self.tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                # any answer (even 401 or 503) means it listens
                httpx.get(f"{self.url}/metrics", timeout=1)
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
        assert self.proc is not None
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


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[Any]:
    made: list[ProxyProcess] = []

    def start(tei_url: str, **kwargs: Any) -> ProxyProcess:
        p = ProxyProcess(tmp_path, tei_url, **kwargs).start()
        made.append(p)
        return p

    yield start
    for p in made:
        p.close()


# ---------------------------------------------------------------------------- store inspection
def embedded_points(qdrant_path: Path) -> dict[str, tuple[list[float], dict[str, Any]]]:
    """Every point of every collection in a closed embedded store: id -> (vector, payload)."""
    import qdrant_edge as edge

    out: dict[str, tuple[list[float], dict[str, Any]]] = {}
    if not qdrant_path.exists():
        return out
    for folder in sorted(qdrant_path.iterdir()):
        if not (folder / "namespace.json").exists():
            continue
        shard = edge.EdgeShard.load(str(folder / "shard"))
        try:
            offset = None
            while True:
                records, offset = shard.scroll(
                    edge.ScrollRequest(
                        offset=offset, limit=1000, with_payload=True, with_vector=True
                    )
                )
                for r in records:
                    vector = r.vector
                    if isinstance(vector, dict):  # named vectors: the default one
                        vector = next(iter(vector.values()))
                    out[str(r.id)] = (list(vector), dict(r.payload or {}))
                if offset is None:
                    break
        finally:
            shard.close()
    return out


def check_points(
    points: dict[str, Any], config: EmulatorConfig, candidates: Sequence[str]
) -> tuple[int, int]:
    """(stored entries whose text is known, wrong ones among them): every stored vector must
    equal the oracle's vector for the text its id is derived from."""
    from cached_tei.keys import point_id

    by_id = {point_id(t): t for t in candidates}
    known = wrong = 0
    for pid, value in points.items():
        vector = value[0] if isinstance(value, tuple) else value
        text = by_id.get(pid)
        if text is None:
            continue
        known += 1
        if not np.array_equal(np.asarray(vector, dtype=np.float32), expected_vector(config, text)):
            wrong += 1
    return known, wrong


# ---------------------------------------------------------------------------- the proxy in a thread
class InThreadProxy:
    """``create_app`` served by uvicorn on loopback in a daemon thread (logs reach caplog)."""

    def __init__(self, settings: Any, proxy: Any) -> None:
        import uvicorn

        from cached_tei.proxy import create_app

        self.app = create_app(settings, proxy)
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                log_config=None,
                access_log=False,
                lifespan="on",
                server_header=False,
                timeout_graceful_shutdown=5,
            )
        )
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def engine(self) -> Any:
        return self.app.state.handlers.engine

    def __enter__(self) -> InThreadProxy:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the proxy did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._sock.close()
