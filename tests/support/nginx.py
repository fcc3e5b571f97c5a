"""Debian's nginx running the configuration ``stack/generate.py`` renders for the stack,
with loopback upstreams and a writable runtime folder."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from tests.tei_emulator.process import free_port

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "stack"
_GENERATOR = "cached_tei_stack_generate"


def nginx_binary() -> str | None:
    """The nginx executable, or None where it is not installed."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if Path(candidate).exists():
            return candidate
    return None


def stack_generator() -> ModuleType:
    """``stack/generate.py`` as a module (it is a script, not part of a package)."""
    if _GENERATOR in sys.modules:
        return sys.modules[_GENERATOR]
    spec = importlib.util.spec_from_file_location(_GENERATOR, STACK / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_GENERATOR] = module
    spec.loader.exec_module(module)
    return module


def example_env() -> dict[str, str]:
    """The committed ``stack/.env.example``, parsed as the generator parses it."""
    text = (STACK / ".env.example").read_text(encoding="utf-8")
    return dict(stack_generator().parse_dotenv(text))


def stack_settings(replicas: int, **overrides: str) -> Any:
    """The stack's settings from ``.env.example`` as a CPU deployment of ``replicas`` replicas."""
    env = example_env()
    env.update(TEI_VARIANT="cpu", GPU_IDS="", TEI_REPLICAS=str(replicas))
    env.update(overrides)
    return stack_generator().Settings.from_env(env)


class Nginx:
    """nginx in the foreground with ``conf_text`` as its configuration, listening on ``port``
    (and on ``pool_ports``, the sparse and rerank pools' by kind); ready once
    ``/nginx-health`` answers."""

    def __init__(
        self,
        binary: str,
        conf_text: str,
        prefix: Path,
        port: int,
        pool_ports: Mapping[str, int] | None = None,
    ) -> None:
        self.prefix, self.port = prefix, port
        self.pool_ports = dict(pool_ports or {})
        prefix.mkdir(parents=True, exist_ok=True)
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(conf_text)
        with open(prefix / "nginx.out", "ab") as out:
            self.proc = subprocess.Popen(
                [binary, "-p", str(prefix), "-c", str(self.conf)]
                + ["-e", str(prefix / "startup-error.log"), "-g", "daemon off;"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.error_log()}")
            try:
                if httpx.get(f"{self.url}/nginx-health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not come up: {self.error_log()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pool_url(self, kind: str) -> str:
        """The URL of the sparse or rerank pool's upstream."""
        return f"http://127.0.0.1:{self.pool_ports[kind]}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def error_log(self) -> str:
        logs = ("error.log", "startup-error.log", "nginx.out")
        return "\n".join(p.read_text() for p in (self.prefix / n for n in logs) if p.exists())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: fast shutdown of this master and its workers only
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_nginx(
    upstreams: list[str],
    prefix: Path,
    settings: Any,
    binary: str,
    pools: Mapping[str, list[str]] | None = None,
) -> Nginx:
    """The stack's nginx.conf for ``settings`` in front of ``upstreams`` (host:port), on a free
    loopback port (tried three times: a probed port may be taken before nginx binds it).
    ``pools``: the upstreams of the sparse and rerank pools ``settings`` enables, by kind,
    each served on a free loopback port of its own."""
    gen = stack_generator()
    last: RuntimeError | None = None
    for _ in range(3):
        port = free_port()
        ports = {kind: free_port() for kind in pools or {}}
        routes = {
            kind: gen.Route(servers, f"127.0.0.1:{ports[kind]}")
            for kind, servers in (pools or {}).items()
        }
        conf = gen.render_nginx_conf(
            settings,
            upstreams=upstreams,
            listen=f"127.0.0.1:{port}",
            runtime_dir=prefix,
            routes=routes if pools is not None else None,
        )
        try:
            return Nginx(binary, conf, prefix, port, ports)
        except RuntimeError as exc:
            last = exc
    raise RuntimeError(f"nginx did not start: {last}")
