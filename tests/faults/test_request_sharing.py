"""Shared TEI requests behind the real nginx (issue 21): with nothing configured, the engine
learns how many requests keep every replica busy, and each caller gets exactly its vectors."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cached_tei import CachedTEISettings, Engine
from cached_tei.keys import EmbedOptions
from tests.tei_emulator import EmulatorConfig

from .conftest import Cluster, Tally

# Steps far longer than a loopback round trip: TEI, not this process, is the bottleneck.
SLOW_STEPS = EmulatorConfig(step_ms=100.0, per_text_ms=0.1)
REPLICAS = 3


def test_the_engine_learns_to_keep_every_replica_busy(tmp_path: Path, tally: Tally) -> None:
    with Cluster(tmp_path / "nginx", replicas=REPLICAS, config=SLOW_STEPS) as cluster:

        async def run() -> int:
            engine = Engine(CachedTEISettings(tei_url=cluster.url, qdrant_path=tmp_path / "q"))
            try:

                async def caller(worker: int) -> None:
                    for i in range(6):
                        texts = [f"caller {worker} text {i}"]
                        result = await engine.embed(texts, EmbedOptions())
                        tally.check(SLOW_STEPS, texts, result.vectors)

                await asyncio.gather(*(caller(worker) for worker in range(30)))
                assert engine.tei._pacer is not None
                return engine.tei._pacer.target
            finally:
                await engine.aclose()

        target = asyncio.run(run())
        served = cluster.served()
    tally.extra.update(target=target, served=served)
    assert tally.wrong == 0 and tally.sent == 180
    # The pacer starts at 2 in flight (1 replica assumed, plus one) and learns the rest.
    assert target >= REPLICAS
    assert all(served), served
