"""The emulator in a subprocess (benchmarks, kill/restart tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from ._core import EmulatorConfig, Fault, RecordedRequest

_REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmulatorProcess:
    """`python -m tests.tei_emulator` as a child process; control through /_emulator/*."""

    def __init__(self, config: EmulatorConfig | None = None, port: int = 0) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 20.0) -> EmulatorProcess:
        if self.proc is not None and self.proc.poll() is None:
            return self
        env = dict(os.environ)
        env["PYTHONPATH"] = str(_REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.tei_emulator",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--config-json",
                self.config.to_json(),
            ],
            cwd=str(_REPO_ROOT),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self.proc = None
                raise RuntimeError(f"tei emulator exited during start-up:\n{err}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(
                    f"tei emulator did not answer /health on {self.url} within {timeout}s"
                )
            time.sleep(0.05)

    def _end(self, sig: int, timeout: float) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL and wait."""
        self._end(signal.SIGKILL, 10.0)

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- control through the private routes ----
    def _call(self, method: str, path: str, json: Any = None) -> Any:
        r = httpx.request(method, self.url + path, json=json, timeout=10.0)
        r.raise_for_status()
        return r.json()

    def requests(self) -> list[RecordedRequest]:
        return [RecordedRequest(**d) for d in self._call("GET", "/_emulator/log")]

    def stats(self) -> dict[str, Any]:
        """{"steps", "step_sizes", "embed_texts_computed", "permits_in_use", "pending_faults",
        "healthy"}"""
        return self._call("GET", "/_emulator/stats")

    @property
    def embed_texts_computed(self) -> int:
        return self.stats()["embed_texts_computed"]

    def inject(self, *faults: Fault) -> None:
        self._call(
            "POST",
            "/_emulator/faults",
            [
                {"kind": f.kind, "status": f.status, "seconds": f.seconds, "count": f.count}
                for f in faults
            ],
        )

    def clear_faults(self) -> None:
        self._call("DELETE", "/_emulator/faults")

    def reset_log(self) -> None:
        self._call("POST", "/_emulator/reset")

    def set_healthy(self, healthy: bool) -> None:
        self._call("POST", "/_emulator/health", {"healthy": healthy})
