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
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.cluster import EmulatorCluster as Cluster
from tests.support.nginx import nginx_binary
from tests.support.proxy import InThreadProxy, ProxyProcess
from tests.tei_emulator import EmulatorConfig, expected_vector
from tests.tei_emulator.process import free_port

# Names the fault tests import from here.
__all__ = ["Cluster", "InThreadProxy", "free_port"]

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "tests" / "reference" / "tei-1.9.3-openapi.json"

FAST_TEI = EmulatorConfig(step_ms=2.0, per_text_ms=0.05)


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
        for text, row in zip(texts, rows, strict=False):  # a short result counts above
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
            f"{t.scenario:70s} sent={t.sent} failed={t.failed} retried={t.retried} "
            f"wrong={t.wrong} {extra}"
        )
    target = os.environ.get("CACHED_TEI_FAULTS_REPORT")
    if target:
        Path(target).write_text(json.dumps([t.as_dict() for t in _TALLIES], indent=2, default=str))


# ---------------------------------------------------------------------------- nginx + replicas
@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three emulator processes behind the real nginx (passive health resting 2 s)."""
    if nginx_binary() is None:
        pytest.skip("nginx binary not found (install Debian's nginx)")
    with Cluster(tmp_path / "nginx", replicas=3, config=FAST_TEI, NGINX_FAIL_TIMEOUT="2s") as c:
        yield c


# ---------------------------------------------------------------------------- the proxy
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
