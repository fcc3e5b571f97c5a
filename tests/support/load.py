"""Load generators for a TEI-compatible ``POST /embed``: a closed loop on aiohttp (any bodies,
in-process) and ``wrk`` (a C load generator, one text per request, from a Lua script).

Both report what they cost themselves (``loadgen_cpu_s``): on a small machine a load
generator competes with what it measures, and a result is only meaningful while it is not
the bottleneck."""

from __future__ import annotations

import asyncio
import json
import re
import resource
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Single-text bodies for wrk: ``{"inputs": "<prefix> <n> <FILLER>"}``, n counting up from 0
# on each wrk thread (thread t sends t, t + threads, ...), or cycling over ``pool`` numbers.
# ``wrk_text`` builds the same strings in Python (to warm a pool of hits).
FILLER = (
    "kalo mirentas vorul peri sondra belquo nixta elfi gorhu jinlak morne ospra sultri ve "
    "tasvor ulpe risonbel drakal omiren tasul perison quonix taelfi gorjin lakmor"
)

_WRK_SCRIPT = """
local threads, pool, prefix, filler = %(threads)d, %(pool)d, %(prefix)s, %(filler)s
local counter = 0
local id = 0
local all = {}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function setup(thread)
  thread:set("id", #all)
  table.insert(all, thread)
end

function request()
  local n = id + counter * threads
  if pool > 0 then n = n %% pool end
  counter = counter + 1
  return wrk.format(nil, nil, nil,
    string.format('{"inputs":"%%s %%d %%s"}', prefix, n, filler))
end

function init(args)
  id = tonumber(wrk.thread:get("id"))
end
"""


def wrk_text(prefix: str, n: int) -> str:
    """The text wrk sends as number ``n`` with ``prefix``."""
    return f"{prefix} {n} {FILLER}"


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    prefix: str,
    pool: int = 0,
    threads: int = 1,
) -> dict[str, Any]:
    """``wrk`` against ``url`` (``POST`` single-text bodies): distinct texts when ``pool`` is
    0 (all misses), else texts 0..pool-1 over and over (all hits once warmed).

    Returns requests/s, latency percentiles (ms), errors (non-2xx and socket errors) and the
    CPU seconds wrk itself used (``loadgen_cpu_s``)."""
    literals = {
        "prefix": json.dumps(prefix),
        "filler": json.dumps(FILLER),
    }  # plain ASCII: valid Lua
    script = _WRK_SCRIPT % {"threads": threads, "pool": pool, **literals}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{round(seconds)}s", "--latency"]
        + ["--timeout", "10s", "-s", f.name, url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    Path(f.name).unlink()
    out = done.stdout
    latency = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    if done.returncode != 0 or "Requests/sec" not in out or len(latency) != 3:
        raise RuntimeError(f"wrk failed ({done.returncode}): {out[-2000:]} {done.stderr[-2000:]}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "errors": (int(non_2xx.group(1)) if non_2xx else 0)
        + (sum(int(x) for x in sockets.groups()) if sockets else 0),
        "p50_ms": _ms(latency["50"]),
        "p90_ms": _ms(latency["90"]),
        "p99_ms": _ms(latency["99"]),
        "seconds": seconds,
        "loadgen_cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "loadgen_wall_s": wall,
        "connections": connections,
    }


async def closed_loop(
    url: str,
    bodies: Sequence[bytes],
    *,
    concurrency: int,
    seconds: float,
    warmup: float = 0.5,
    cycle: bool = False,
) -> dict[str, Any]:
    """``concurrency`` workers ``POST`` ``bodies`` (JSON) to ``url`` back to back for ``seconds``
    after ``warmup`` seconds that are not counted; ``cycle`` reuses the bodies, otherwise the
    run ends early (``exhausted_pool``) when they run out.

    aiohttp costs the client less CPU per request than httpx."""
    import aiohttp
    import numpy as np

    next_body = 0
    latencies: list[float] = []
    errors = 0
    error_sample = ""
    exhausted = counting = stop = False

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

    connector = aiohttp.TCPConnector(limit=concurrency)
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

        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        counting = True
        t_start = time.perf_counter()
        cpu0 = time.process_time()
        deadline = t_start + seconds
        while time.perf_counter() < deadline and not exhausted:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - t_start
        cpu = time.process_time() - cpu0
        stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
    lat = np.asarray(latencies) * 1000.0
    done = len(latencies)

    def pct(q: float) -> float | None:
        return float(np.percentile(lat, q)) if done else None

    return {
        "requests": done,
        "errors": errors,
        "error_sample": error_sample,
        "seconds": elapsed,
        "rps": done / elapsed if elapsed else 0.0,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "exhausted_pool": exhausted,
        "loadgen_cpu_s": cpu,
    }
