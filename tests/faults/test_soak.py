"""A soak: mixed traffic through ``cached-tei serve`` for CACHED_TEI_SOAK_SECONDS (default 30;
run it for several minutes before a release), then memory and open connections must be flat.

Traffic, from 4 client threads: cache hits (texts seen before), misses (new texts), duplicates
inside one request, identical requests sent at the same moment by several threads, and the
OpenAI route. Every vector is compared with the oracle. Memory and connections are sampled
after a warm-up (a fifth of the run, which fills the bounded LRU) and at the end.
"""

from __future__ import annotations

import base64
import os
import random
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from tests.tei_emulator import EmulatorConfig, EmulatorServer

from .conftest import Tally

SOAK_SECONDS = float(os.environ.get("CACHED_TEI_SOAK_SECONDS", "30"))
CONFIG = EmulatorConfig(step_ms=2.0, per_text_ms=0.05)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(SOAK_SECONDS * 2 + 120))]


def _sample(proc: psutil.Process) -> dict[str, float]:
    status = dict(
        line.split(":", 1)
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
        if ":" in line
    )
    return {
        "rss_mb": proc.memory_info().rss / 2**20,
        "anon_mb": int(status["RssAnon"].split()[0]) / 1024,
        "file_mb": int(status["RssFile"].split()[0]) / 1024,
        "fds": proc.num_fds(),
        "connections": len(proc.net_connections(kind="tcp")),
        "threads": proc.num_threads(),
    }


def test_soak_mixed_traffic(tmp_path: Path, start_proxy, tally: Tally) -> None:
    with EmulatorServer(CONFIG) as tei:
        proxy = start_proxy(
            tei.url, CACHED_TEI_LRU_BYTES=str(4 * 2**20), CACHED_TEI_WRITE_BATCH_SIZE="256"
        )
        process = psutil.Process(proxy.pid)
        seen: list[str] = [f"soak seed {i}" for i in range(200)]
        counter = iter(range(10**9))
        lock = threading.Lock()
        barrier = threading.Barrier(4, timeout=30)
        stop = time.monotonic() + SOAK_SECONDS
        kinds: dict[str, int] = {}

        def new_text() -> str:
            with lock:
                text = f"soak new {next(counter)}"
                seen.append(text)
                return text

        def body_for(rng: random.Random, round_: int) -> tuple[str, list[str]]:
            kind = rng.choice(["hits", "misses", "mixed", "duplicates", "openai"])
            if kind == "hits":
                texts = rng.sample(seen[:5000], 16)
            elif kind == "misses":
                texts = [new_text() for _ in range(8)]
            elif kind == "duplicates":
                texts = [new_text()] * 5 + rng.sample(seen[:5000], 3) * 2
            else:
                texts = [new_text() for _ in range(4)] + rng.sample(seen[:5000], 4)
            return kind, texts

        def worker(n: int) -> None:
            rng = random.Random(n)
            round_ = 0
            with httpx.Client(timeout=30) as client:
                while time.monotonic() < stop:
                    round_ += 1
                    if round_ % 25 == 0:
                        # concurrent identical requests: all threads send the same new texts at once
                        try:
                            barrier.wait()
                        except threading.BrokenBarrierError:
                            return
                        kind, texts = (
                            "concurrent identical",
                            [f"soak hot {round_} {j}" for j in range(8)],
                        )
                    else:
                        kind, texts = body_for(rng, round_)
                    try:
                        if kind == "openai":
                            r = client.post(
                                f"{proxy.url}/v1/embeddings",
                                json={"input": texts, "encoding_format": "base64"},
                            )
                        else:
                            r = client.post(f"{proxy.url}/embed", json={"inputs": texts})
                    except httpx.HTTPError as exc:
                        tally.fail()
                        tally.extra.setdefault("errors", []).append(repr(exc)[:120])
                        continue
                    with lock:
                        kinds[kind] = kinds.get(kind, 0) + 1
                    if r.status_code != 200:
                        tally.fail()
                        tally.extra.setdefault("errors", []).append(r.text[:120])
                        continue
                    if kind == "openai":
                        rows = [
                            np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
                            for d in r.json()["data"]
                        ]
                    else:
                        rows = r.json()
                    tally.check(CONFIG, texts, rows)
            barrier.abort()

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        time.sleep(SOAK_SECONDS / 5)
        warm = _sample(process)
        for t in threads:
            t.join(SOAK_SECONDS + 60)
        time.sleep(1.0)  # let the write-behind queue and idle connections settle
        end = _sample(process)
        # hits only (no new entries, so the store does not grow): memory must be flat
        hits_seconds = max(5.0, SOAK_SECONDS / 4)
        hits_stop = time.monotonic() + hits_seconds

        def hits_worker(n: int) -> None:
            rng = random.Random(100 + n)
            with httpx.Client(timeout=30) as client:
                while time.monotonic() < hits_stop:
                    texts = rng.sample(seen[:5000], 16)
                    r = client.post(f"{proxy.url}/embed", json={"inputs": texts})
                    if r.status_code != 200:
                        tally.fail()
                        continue
                    tally.check(CONFIG, texts, r.json())

        threads = [threading.Thread(target=hits_worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(hits_seconds + 60)
        time.sleep(0.5)
        after_hits = _sample(process)
        with httpx.Client() as client:
            metrics = client.get(f"{proxy.url}/metrics").text
        pending = [
            line for line in metrics.splitlines() if line.startswith("cached_tei_write_queue_depth")
        ]
        tally.extra.update(
            seconds=SOAK_SECONDS,
            kinds=kinds,
            warm=_rounded(warm),
            end=_rounded(end),
            after_hits_only=_rounded(after_hits),
            tei_texts=tei.embed_texts_computed,
            queue=pending,
        )
    assert tally.failed == 0, tally.extra.get("errors", [])[:5]
    assert tally.wrong == 0
    assert tally.sent > 50
    # Mixed traffic stores new entries: the store's memory maps (file) and its in-memory indexes
    # grow with them (about 1.5 kB of vector per entry), requests must not add to that.
    new_entries = tei.embed_texts_computed
    assert end["anon_mb"] - warm["anon_mb"] < 10.0 + 2.0 * new_entries / 1024, (warm, end)
    # Hits only: nothing new is stored, so memory is flat.
    assert after_hits["anon_mb"] - end["anon_mb"] < 5.0, (end, after_hits)
    assert after_hits["connections"] <= warm["connections"] + 4, (warm, after_hits)
    assert end["connections"] <= warm["connections"] + 4, (warm, end)
    assert end["fds"] <= warm["fds"] + 8, (warm, end)
    assert end["threads"] <= warm["threads"] + 2, (warm, end)


def _rounded(sample: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in sample.items()}
