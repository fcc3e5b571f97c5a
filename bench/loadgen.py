"""Closed-loop HTTP load generator: ``python bench/loadgen.py '<json spec>'`` -> ``RESULT {...}``.

``concurrency`` workers each send ``POST /embed`` requests back to back for ``seconds``
(after ``warmup`` seconds that are not counted). Each request carries ``batch`` texts taken
in order from a deterministic pool (``pool`` texts from ``seed``; ``cycle`` reuses the pool,
for all-hit runs; otherwise the pool must be large enough that no text repeats, for
all-miss runs). Reports requests/s, texts/s, p50/p90/p99 latency and errors.

aiohttp is used because it costs the client less CPU per request than httpx: on two cores
the load generator competes with what it measures, and the same generator is used for the
proxy and for nginx directly.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infra import make_texts


async def run(spec: dict) -> dict:
    import aiohttp

    url = spec["url"].rstrip("/") + spec.get("route", "/embed")
    batch, conc = spec["batch"], spec["concurrency"]
    pool = make_texts(spec["pool"], seed=spec["seed"], prefix=spec.get("prefix", ""))
    cycle = spec.get("cycle", False)
    bodies: list[bytes] = []
    for s in range(0, len(pool) - batch + 1, batch):
        inputs = pool[s] if batch == 1 and spec.get("single_string", True) else pool[s : s + batch]
        bodies.append(json.dumps({"inputs": inputs}).encode())
    next_body = 0
    latencies: list[float] = []
    errors = 0
    error_sample = ""
    exhausted = False
    counting = False
    stop = False

    def take() -> bytes | None:
        nonlocal next_body, exhausted
        if next_body >= len(bodies):
            if not cycle:
                exhausted = True
                return None
            next_body = 0
        body = bodies[next_body]
        next_body += 1
        return body

    connector = aiohttp.TCPConnector(limit=conc, force_close=False)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            nonlocal errors, error_sample
            while not stop:
                body = take()
                if body is None:
                    return
                t0 = time.perf_counter()
                async with session.post(url, data=body) as r:
                    payload = await r.read()
                    ok = r.status == 200
                dt = time.perf_counter() - t0
                if counting and not stop:
                    if ok:
                        latencies.append(dt)
                    else:
                        errors += 1
                        error_sample = error_sample or f"{r.status} {payload[:200]!r}"

        tasks = [asyncio.create_task(worker()) for _ in range(conc)]
        await asyncio.sleep(spec.get("warmup", 0.5))
        counting = True
        t_start = time.perf_counter()
        cpu0 = time.process_time()
        deadline = t_start + spec["seconds"]
        while time.perf_counter() < deadline and not exhausted:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - t_start
        cpu = time.process_time() - cpu0
        stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
    lat = np.asarray(latencies) * 1000.0
    done = len(latencies)
    return {
        "requests": done,
        "errors": errors,
        "error_sample": error_sample,
        "seconds": elapsed,
        "rps": done / elapsed if elapsed else 0.0,
        "texts_per_s": done * batch / elapsed if elapsed else 0.0,
        "p50_ms": float(np.percentile(lat, 50)) if done else None,
        "p90_ms": float(np.percentile(lat, 90)) if done else None,
        "p99_ms": float(np.percentile(lat, 99)) if done else None,
        "exhausted_pool": exhausted,
        "loadgen_cpu_s": cpu,
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    print("RESULT " + json.dumps(asyncio.run(run(spec))), flush=True)


if __name__ == "__main__":
    main()
