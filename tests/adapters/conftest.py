"""Fixtures for the adapter tests: TEI emulators (a dense model with prompts, a SPLADE model, a
reranker), isolated cache folders."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cached_tei import Rank, SparseVector
from tests.support.env import scrubbed_environ
from tests.tei_emulator import (
    EmulatorConfig,
    EmulatorServer,
    expected_score,
    expected_sparse,
    expected_vector,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# The prompts an e5-style model would ship in its Sentence Transformers config.
PROMPTS = {"query": "query: ", "passage": "passage: "}
ADAPTER_TEI_CONFIG = EmulatorConfig(prompts=PROMPTS, step_ms=1.0, per_text_ms=0.02)
SPLADE_CONFIG = EmulatorConfig(
    model_id="emulator/splade-v3", model_type="splade", step_ms=1.0, per_text_ms=0.02
)
# A small client batch, so that a rerank of a few texts takes several TEI requests.
RERANKER_CONFIG = EmulatorConfig(
    model_id="emulator/bge-reranker-base",
    model_type="reranker",
    max_client_batch_size=4,
    step_ms=1.0,
    per_text_ms=0.02,
)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    """One emulator per test module; tests call ``reset_log()`` before counting requests."""
    with EmulatorServer(ADAPTER_TEI_CONFIG) as server:
        yield server


@pytest.fixture(scope="module")
def splade() -> Iterator[EmulatorServer]:
    """A SPLADE model's TEI, one per test module."""
    with EmulatorServer(SPLADE_CONFIG) as server:
        yield server


@pytest.fixture(scope="module")
def reranker() -> Iterator[EmulatorServer]:
    """A reranker's TEI, one per test module."""
    with EmulatorServer(RERANKER_CONFIG) as server:
        yield server


@pytest.fixture
def make_face(
    emulator: EmulatorServer, splade: EmulatorServer, reranker: EmulatorServer, qdrant_path: Path
) -> Iterator[Callable[..., Any]]:
    """``make_face(cls, **fields)`` on the three emulators (dense, sparse, rerank) and the
    test's folder; closed afterwards. The emulators' logs are reset first."""
    made: list[Any] = []
    for server in (emulator, splade, reranker):
        server.reset_log()

    def make(cls: type, **fields: Any) -> Any:
        urls = {"tei_url": emulator.url, "sparse_url": splade.url, "rerank_url": reranker.url}
        face = cls(**{**urls, "qdrant_path": qdrant_path, **fields})
        made.append(face)
        return face

    yield make
    for face in made:
        face.close()


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


def expected_sparse_vector(text: str) -> SparseVector:
    """The exact sparse vector the adapters' SPLADE emulator returns for ``text``."""
    indices, values = expected_sparse(SPLADE_CONFIG, text)
    return SparseVector(indices, values.tolist())


def expected_ranks(query: str, texts: list[str], *, raw_scores: bool = False) -> list[Rank]:
    """The exact ranks the adapters' reranker emulator gives: by score, as TEI sorts (a
    stable sort, reversed)."""
    scores = [
        float(expected_score(RERANKER_CONFIG, query, t, raw_scores=raw_scores)) for t in texts
    ]
    order = sorted(range(len(texts)), key=lambda i: scores[i])[::-1]
    return [Rank(i, scores[i]) for i in order]


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
