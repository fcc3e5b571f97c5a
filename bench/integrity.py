#!/usr/bin/env python
"""What checksums cost on warm reads: every text cached, none in memory.

A warm read is ``Engine.embed`` over N cached texts in calls of 1,000, with the in-process LRU
off, so every vector comes from the embedded store (qdrant-edge) and is checked. Two ways:

  verified   : as shipped: each lookup also reads the payload (creation time, CRC32) and the
               engine checks each vector's CRC32 against it
  unverified : the lookup reads vectors only (no payload, as before checksums) and nothing
               is checked

The TEI emulator answers ``/info`` only (every text is cached before timing). Figures are
ratios verified / unverified of the least CPU time of the reading thread over the repeats,
interleaved.

Usage:  python bench/integrity.py [--sizes 2000,20000] [--dims 384,1024] [--repeat 5]
Target: <= 1.15.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from cached_tei import CachedTEISettings, EmbedOptions, Engine  # noqa: E402
from tests.tei_emulator import EmulatorConfig, EmulatorServer  # noqa: E402

CALL = 1000


class _VectorsOnly:
    """A shard whose retrieve never reads payloads (the read before checksums)."""

    def __init__(self, shard: Any) -> None:
        self._shard = shard

    def retrieve(self, **kwargs: Any) -> Any:
        return self._shard.retrieve(**{**kwargs, "with_payload": False})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shard, name)


@contextmanager
def unverified(engine: Engine) -> Iterator[None]:
    """Lookups of ``engine`` without payloads: no checksum read, none checked."""
    shards = engine.store._use().shards  # type: ignore[attr-defined]
    originals = dict(shards)
    for name, (shard, dimension) in originals.items():
        shards[name] = (_VectorsOnly(shard), dimension)
    try:
        yield
    finally:
        shards.update(originals)


async def warm_read(engine: Engine, texts: list[str]) -> float:
    """CPU seconds of this thread (the engine's loop, and qdrant-edge's calls on it) for
    reading every text: steadier than wall time on a shared machine."""
    start = time.thread_time()
    for i in range(0, len(texts), CALL):
        result = await engine.embed(texts[i : i + CALL], EmbedOptions())
        assert result.misses == 0, "every text must be cached"
    return time.thread_time() - start


async def measure(size: int, dim: int, repeat: int) -> dict[str, Any]:
    config = EmulatorConfig(dim=dim, step_ms=0.0, per_text_ms=0.0, max_client_batch_size=512)
    texts = [f"integrity bench text {i} " + "lorem ipsum " * 8 for i in range(size)]
    with EmulatorServer(config) as tei, tempfile.TemporaryDirectory() as folder:
        settings = CachedTEISettings(
            tei_url=tei.url, qdrant_path=folder, lru_bytes=0, write_through=True
        )
        engine = Engine(settings)
        await engine.embed(texts, EmbedOptions())  # fill the cache
        times: dict[str, list[float]] = {"verified": [], "unverified": []}
        for round_ in range(repeat):  # interleaved, each way first in turn
            for name in ("verified", "unverified") if round_ % 2 else ("unverified", "verified"):
                if name == "verified":
                    times[name].append(await warm_read(engine, texts))
                    continue
                with unverified(engine):
                    times[name].append(await warm_read(engine, texts))
        assert engine.stats.corrupt == 0
        await engine.aclose()
    best = {name: min(values) for name, values in times.items()}
    return {
        "texts": size,
        "dim": dim,
        "verified_s": round(best["verified"], 4),
        "unverified_s": round(best["unverified"], 4),
        "ratio": round(best["verified"] / best["unverified"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000")
    parser.add_argument("--dims", default="384,1024")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    rows = [
        asyncio.run(measure(size, dim, args.repeat))
        for size in map(int, args.sizes.split(","))
        for dim in map(int, args.dims.split(","))
    ]
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
