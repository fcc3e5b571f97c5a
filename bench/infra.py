"""Loopback infrastructure for the benchmarks: TEI emulator replicas behind the stack's nginx.

Everything here is deterministic and needs no network: the replicas are
``tests.tei_emulator.EmulatorProcess`` children, nginx is Debian's binary running the
configuration that ``stack/generate.py`` renders for the stack (``render_nginx_conf`` with
loopback upstreams and a writable runtime folder, exactly as tests/stack/ does).
"""

from __future__ import annotations

import importlib.util
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.tei_emulator import EmulatorConfig, EmulatorProcess  # noqa: E402

STEP_MS = 20.0
PER_TEXT_MS = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_binary() -> str:
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if Path(candidate).exists():
            return candidate
    raise SystemExit("nginx not found: install Debian's nginx (apt-get install nginx-light)")


def load_generator():
    name = "cached_tei_stack_generate"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "stack" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def stack_settings(replicas: int):
    """The stack's settings from the committed .env.example, as a CPU deployment of N replicas."""
    gen = load_generator()
    env = gen.parse_dotenv((REPO / "stack" / ".env.example").read_text(encoding="utf-8"))
    env.update(TEI_VARIANT="cpu", GPU_IDS="", TEI_REPLICAS=str(replicas))
    return gen.Settings.from_env(env)


class Nginx:
    """The real nginx running the stack's generated configuration."""

    def __init__(self, upstreams: list[str], prefix: Path, replicas: int) -> None:
        gen = load_generator()
        self.prefix = prefix
        prefix.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf_text = gen.render_nginx_conf(
            stack_settings(replicas),
            upstreams=upstreams,
            listen=f"127.0.0.1:{self.port}",
            runtime_dir=prefix,
        )
        # Access logging is part of the stack's config; it stays on (it costs nginx CPU, as
        # it would in production). Nothing else is changed.
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(self.conf_text)
        self.proc = subprocess.Popen(
            [
                nginx_binary(),
                "-p",
                str(prefix),
                "-c",
                str(self.conf),
                "-e",
                str(prefix / "startup-error.log"),
                "-g",
                "daemon off;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.error_log()}")
            try:
                if httpx.get(self.url + "/nginx-health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx did not come up: {self.error_log()}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def error_log(self) -> str:
        logs = [self.prefix / "error.log", self.prefix / "startup-error.log"]
        return "\n".join(p.read_text() for p in logs if p.exists())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Cluster:
    """N emulator replicas (subprocesses) behind one nginx."""

    def __init__(self, workdir: Path, replicas: int = 4, dim: int = 384) -> None:
        self.replicas_n, self.dim = replicas, dim
        self.config = EmulatorConfig(dim=dim, step_ms=STEP_MS, per_text_ms=PER_TEXT_MS)
        self.replicas = [EmulatorProcess(self.config, port=0) for _ in range(replicas)]
        self.workdir = workdir / f"nginx-{replicas}x{dim}"
        self.nginx: Nginx | None = None

    def start(self) -> Cluster:
        for r in self.replicas:
            r.start()
        self.nginx = Nginx(
            [f"127.0.0.1:{r.port}" for r in self.replicas], self.workdir, self.replicas_n
        )
        return self

    @property
    def url(self) -> str:
        assert self.nginx is not None
        return self.nginx.url

    def pids(self) -> list[int]:
        pids = [r.pid for r in self.replicas if r.pid]
        if self.nginx is not None:
            pids.append(self.nginx.pid)
        return pids

    def texts_computed(self) -> int:
        return sum(r.embed_texts_computed for r in self.replicas)

    def reset(self) -> None:
        for r in self.replicas:
            r.reset_log()

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for r in self.replicas:
            r.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def theoretical_capacity(
    replicas: int, batch_tokens: int = 16384, tokens_per_text: int = 20
) -> float:
    """Texts/s the replicas' cost model allows at best: full steps (max_batch_tokens) back to back."""
    texts = batch_tokens // tokens_per_text
    return replicas * texts / ((STEP_MS + PER_TEXT_MS * texts) / 1000.0)


def step_capacity(replicas: int, texts_per_step: int) -> float:
    """Texts/s when each step carries ``texts_per_step`` texts (e.g. concurrency x batch / replicas)."""
    return replicas * texts_per_step / ((STEP_MS + PER_TEXT_MS * texts_per_step) / 1000.0)


# ----------------------------------------------------------------------------- the corpus
_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ren",
    "tas",
    "vor",
    "ul",
    "pe",
    "ri",
    "son",
    "dra",
    "bel",
    "quo",
    "nix",
    "ta",
    "el",
    "fi",
    "gor",
    "hu",
    "jin",
    "lak",
    "mor",
    "ne",
    "os",
    "pra",
    "sul",
    "tri",
    "ve",
]


def _vocabulary(size: int = 5000, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def make_texts(n: int, words: int = 20, seed: int = 0, prefix: str = "") -> list[str]:
    """n unique ~``words``-word texts, the same for the same arguments."""
    vocab = _vocabulary()
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        count = rng.randint(words - 3, words + 3)
        text = prefix + " ".join(rng.choice(vocab) for _ in range(count))
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out
