"""Fixtures for the adapter tests: a TEI emulator with prompts, isolated cache folders."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.env import scrubbed_environ
from tests.tei_emulator import EmulatorConfig, EmulatorServer, expected_vector

REPO_ROOT = Path(__file__).resolve().parents[2]

# The prompts an e5-style model would ship in its Sentence Transformers config.
PROMPTS = {"query": "query: ", "passage": "passage: "}
ADAPTER_TEI_CONFIG = EmulatorConfig(prompts=PROMPTS, step_ms=1.0, per_text_ms=0.02)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    """One emulator per test module; tests call ``reset_log()`` before counting requests."""
    with EmulatorServer(ADAPTER_TEI_CONFIG) as server:
        yield server


@pytest.fixture
def make_adapter(emulator: EmulatorServer, qdrant_path: Path) -> Iterator[Callable[..., Any]]:
    """``make_adapter(cls, **fields)`` on the emulator and the test's folder; closed afterwards."""
    made: list[Any] = []

    def make(cls: type, **fields: Any) -> Any:
        fields = {"tei_url": emulator.url, "qdrant_path": qdrant_path, **fields}
        adapter = cls(**fields)
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.close()


def expected(text: str, **options: Any) -> np.ndarray:
    """The exact vector the adapters' emulator returns for ``text``."""
    return expected_vector(ADAPTER_TEI_CONFIG, text, **options)


def run_python(code: str, *, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    """Run ``code`` in a fresh interpreter from the repository root; return its stdout."""
    full_env = scrubbed_environ(
        PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"subprocess failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout
