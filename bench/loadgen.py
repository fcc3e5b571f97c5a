"""Closed-loop HTTP load in a fresh process: ``python bench/loadgen.py '<json spec>'`` ->
``RESULT {...}``.

Each request carries ``batch`` texts taken in order from a deterministic pool (``pool`` texts
from ``seed``; ``cycle`` reuses the pool, for all-hit runs; otherwise the pool must be large
enough that no text repeats, for all-miss runs). The load itself is
``tests.support.load.closed_loop`` (aiohttp); the result adds ``texts_per_s``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infra import make_texts

from tests.support.load import closed_loop


def main() -> None:
    spec = json.loads(sys.argv[1])
    batch = spec["batch"]
    pool = make_texts(spec["pool"], seed=spec["seed"], prefix=spec.get("prefix", ""))
    bodies = [
        json.dumps({"inputs": pool[s] if batch == 1 else pool[s : s + batch]}).encode()
        for s in range(0, len(pool) - batch + 1, batch)
    ]
    result = asyncio.run(
        closed_loop(
            spec["url"].rstrip("/") + spec.get("route", "/embed"),
            bodies,
            concurrency=spec["concurrency"],
            seconds=spec["seconds"],
            warmup=spec.get("warmup", 0.5),
            cycle=spec.get("cycle", False),
        )
    )
    result["texts_per_s"] = result["rps"] * batch
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
