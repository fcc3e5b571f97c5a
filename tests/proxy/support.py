"""Helpers for the proxy tests: a fast emulator configuration, engine settings, the proxy on
loopback (``ProxyServer``: uvicorn in a thread) and runs of the ``cached-tei`` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from cached_tei import CachedTEISettings
from tests.conftest import sent_texts as texts_sent
from tests.support.env import scrubbed_environ
from tests.support.proxy import InThreadProxy as ProxyServer
from tests.tei_emulator import EmulatorConfig

__all__ = ["CLI", "FAST", "REPO", "ProxyServer", "engine_settings", "post", "run_cli", "texts_sent"]

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


def post(url: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, json=body, timeout=30.0, **kwargs)


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """The installed ``cached-tei`` entry point, in a subprocess."""
    return subprocess.run(
        [CLI, *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        env=scrubbed_environ(**(env or {})),
        cwd=str(REPO),
        timeout=timeout,
        check=False,
    )
