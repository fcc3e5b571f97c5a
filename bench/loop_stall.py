"""The caller's largest event-loop stall while the engine writes 20,000 new texts to the
embedded store, and while it closes (issue 18, item 15).

qdrant-edge holds the GIL in every call, so a long upsert, flush or close freezes the event
loop the engine shares with its caller (the proxy's requests, a notebook's tasks). A ticker
task wakes every millisecond; the largest gap between its wakes, beyond that millisecond, is
the stall. TEI is an emulator process (fast: 1 ms + 0.01 ms per text), so the store's calls
dominate; a second scenario drives the store alone (write-behind batches of 512, then close).
Wall-clock stalls include the waits for a CPU on a busy machine and qdrant-edge's fsyncs
(held with the GIL); the CPU figures are what the loop's thread itself ran. Run it on the
code under test, or on another checkout through PYTHONPATH:

    python bench/loop_stall.py                                   # this checkout
    git archive BASE core | tar -x -C /tmp/base && \\
        PYTHONPATH=/tmp/base/core python bench/loop_stall.py      # BASE, for "before"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from infra import make_texts

import cached_tei
from cached_tei import EmbedOptions, point_id
from cached_tei.engine import Engine
from cached_tei.keys import Namespace
from cached_tei.settings import CachedTEISettings
from cached_tei.stores import open_store
from tests.tei_emulator import EmulatorConfig
from tests.tei_emulator.process import EmulatorProcess

TICK = 0.001


class StallMeter:
    """The largest gap between a ticker's wakes since ``reset``: in wall time beyond its own
    sleep, and in the CPU time the loop's thread spent meanwhile (what the loop itself ran,
    without the waits for a CPU that other processes on a shared machine cause)."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self._running = True

    def reset(self) -> tuple[float, float]:
        worst, self.wall, self.cpu = (self.wall, self.cpu), 0.0, 0.0
        return worst

    async def run(self) -> None:
        while self._running:
            start, start_cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(TICK)
            self.wall = max(self.wall, time.perf_counter() - start - TICK)
            self.cpu = max(self.cpu, time.thread_time() - start_cpu)

    def stop(self) -> None:
        self._running = False


async def measure_store(folder: Path, count: int, batch: int) -> dict[str, float]:
    """The store alone: ``count`` new vectors upserted in write-behind batches, then closed."""
    settings = CachedTEISettings(qdrant_path=folder)
    store = open_store(settings)
    namespace = Namespace("bench/model", None, True, True, "Right", None, None)
    vectors = np.random.default_rng(0).standard_normal((count, 384), dtype=np.float32)
    ids = [point_id(text) for text in make_texts(count, prefix="store ")]
    meter = StallMeter()
    ticker = asyncio.create_task(meter.run())
    await asyncio.sleep(2 * TICK)
    for start in range(0, count, batch):
        await store.upsert(namespace, ids[start : start + batch], vectors[start : start + batch])
        await asyncio.sleep(0)  # the write-behind task awaits its queue between batches
    write = meter.reset()
    await store.aclose()
    await asyncio.sleep(2 * TICK)
    close = meter.reset()
    meter.stop()
    await ticker
    return {
        "store_write_stall_ms": write[0] * 1e3,
        "store_write_stall_cpu_ms": write[1] * 1e3,
        "store_close_stall_ms": close[0] * 1e3,
        "store_close_stall_cpu_ms": close[1] * 1e3,
    }


async def measure(tei_url: str, folder: Path, count: int, per_call: int) -> dict[str, float]:
    engine = Engine(CachedTEISettings(tei_url=tei_url, qdrant_path=folder, lru_bytes=0))
    texts = make_texts(count, prefix="stall ")
    meter = StallMeter()
    ticker = asyncio.create_task(meter.run())
    await engine.embed(["warm up"], EmbedOptions())
    await engine.flush()
    meter.reset()
    for start in range(0, count, per_call):
        await engine.embed(texts[start : start + per_call], EmbedOptions())
    await engine.flush()
    write = meter.reset()
    await engine.aclose()
    await asyncio.sleep(2 * TICK)
    close = meter.reset()
    meter.stop()
    await ticker
    return {
        "write_stall_ms": write[0] * 1e3,
        "write_stall_cpu_ms": write[1] * 1e3,
        "close_stall_ms": close[0] * 1e3,
        "close_stall_cpu_ms": close[1] * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--per-call", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--under", default=None, help="where the store goes (default: the system's temp folder)"
    )
    args = parser.parse_args()
    with EmulatorProcess(EmulatorConfig(step_ms=1.0, per_text_ms=0.01)) as tei:
        runs = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(dir=args.under) as folder:
                run = asyncio.run(measure(tei.url, Path(folder), args.texts, args.per_call))
            with tempfile.TemporaryDirectory(dir=args.under) as folder:
                run.update(asyncio.run(measure_store(Path(folder), args.texts, 512)))
            runs.append(run)
    result: dict[str, object] = {
        "code": str(Path(cached_tei.__file__).parent),
        "store_under": args.under or tempfile.gettempdir(),
        "texts": args.texts,
        "runs": runs,
    }
    for key in runs[0]:
        result[f"{key}_median"] = round(sorted(r[key] for r in runs)[len(runs) // 2], 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
