"""One measurement in a fresh process: ``python bench/worker.py '<json spec>'``.

Prints one line ``RESULT {...}`` (JSON). Every contender runs in its own process so that
imports, caches, allocator state and garbage from one never slow down another, and so that
"warm" really means a new process opening a store that an earlier process filled.

Contenders (all pointed at the same nginx):
  floor        bare concurrent batched client: httpx.AsyncClient, POST /embed in batches of 32,
               ``concurrency`` requests in flight, JSON -> float32 ndarray; no cache
  cached-tei   cached_tei.CachedEmbedder (embedded qdrant-edge store), ``embed`` -> ndarray
  cached-tei-lc  langchain_cached_tei.CachedTEIEmbeddings.embed_documents -> lists (the
               LangChain face; used where the anchor returns lists too)
  lc-inmem     langchain_classic CacheBackedEmbeddings over langchain_openai OpenAIEmbeddings
               (TEI's OpenAI-compatible /v1/embeddings, chunk_size=32), InMemoryByteStore
  lc-file      the same with LocalFileStore
  li-tei-10    llama_index TextEmbeddingsInference, embed_batch_size=10 (its default), sync
  li-tei-32    the same, embed_batch_size=32 (TEI's max_client_batch_size)
  li-tei-async the same, batch 32, aget_text_embedding_batch with num_workers=8
  li-cache     TextEmbeddingsInference(batch 32) with the core ``embeddings_cache``
               (SimpleKVStore; persisted to JSON for "warm")
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import numpy as np  # noqa: E402
from infra import make_texts  # noqa: E402

BATCH = 32
MODEL = "emulator/all-MiniLM-L6-v2"


def _rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------------------------- contenders
class Floor:
    """No cache: the cost of getting vectors through nginx at all."""

    def __init__(self, url: str, concurrency: int = 32, **_) -> None:
        self.url, self.concurrency = url, concurrency

    def embed(self, texts: list[str]) -> np.ndarray:
        return asyncio.run(self._embed(texts))

    async def _embed(self, texts: list[str]) -> np.ndarray:
        import httpx

        limits = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        sem = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=60) as client:

            async def one(start: int) -> np.ndarray:
                body = json.dumps({"inputs": texts[start : start + BATCH]}).encode()
                async with sem:
                    r = await client.post(
                        "/embed", content=body, headers={"Content-Type": "application/json"}
                    )
                r.raise_for_status()
                return np.asarray(r.json(), dtype=np.float32)

            parts = await asyncio.gather(*(one(s) for s in range(0, len(texts), BATCH)))
        return np.concatenate(parts)

    def close(self) -> None:
        pass


class CachedTEI:
    def __init__(
        self,
        url: str,
        path: str,
        lru_bytes: int | None = None,
        max_concurrency: int | None = None,
        lists: bool = False,
        **_,
    ) -> None:
        from cached_tei import CachedEmbedder

        kw = {}
        if lru_bytes is not None:
            kw["lru_bytes"] = lru_bytes
        if max_concurrency is not None:
            kw["max_concurrency"] = max_concurrency
        self.e = CachedEmbedder(tei_url=url, qdrant_path=path, **kw)
        self.lists = lists

    def embed(self, texts: list[str]):
        if self.lists:
            return self.e.embed_documents(texts)
        return self.e.embed(texts).vectors

    def flush(self) -> None:
        self.e.flush()

    def close(self) -> None:
        self.e.close()


class CachedTEILangChain:
    """The LangChain adapter (lists of floats, like every LangChain Embeddings)."""

    def __init__(self, url: str, path: str, **_) -> None:
        from langchain_cached_tei import CachedTEIEmbeddings

        self.e = CachedTEIEmbeddings(tei_url=url, qdrant_path=path)

    def embed(self, texts):
        return self.e.embed_documents(texts)

    def flush(self) -> None:
        self.e.flush()

    def close(self) -> None:
        close = getattr(self.e, "close", None)
        if close:
            close()
        else:
            self.e.flush()


def _lc_underlying(url: str):
    from langchain_openai import OpenAIEmbeddings

    # TEI serves the OpenAI embeddings API at /v1/embeddings; langchain-huggingface (the
    # HuggingFaceEndpointEmbeddings integration) is not installed here. chunk_size=32 keeps
    # each request within TEI's max_client_batch_size; check_embedding_ctx_length=False sends
    # strings (not tiktoken ids, which TEI would not understand). Batches go out one by one.
    return OpenAIEmbeddings(
        model=MODEL,
        base_url=url + "/v1",
        api_key="unused",
        check_embedding_ctx_length=False,
        chunk_size=BATCH,
        max_retries=2,
    )


class LCInMemory:
    def __init__(self, url: str, **_) -> None:
        from langchain_classic.embeddings import CacheBackedEmbeddings
        from langchain_core.stores import InMemoryByteStore

        self.e = CacheBackedEmbeddings.from_bytes_store(
            _lc_underlying(url), InMemoryByteStore(), namespace=MODEL, key_encoder="sha256"
        )

    def embed(self, texts):
        return self.e.embed_documents(texts)

    def close(self) -> None:
        pass


class LCFile:
    def __init__(self, url: str, path: str, **_) -> None:
        from langchain_classic.embeddings import CacheBackedEmbeddings
        from langchain_classic.storage import LocalFileStore

        self.e = CacheBackedEmbeddings.from_bytes_store(
            _lc_underlying(url), LocalFileStore(path), namespace=MODEL, key_encoder="sha256"
        )

    def embed(self, texts):
        return self.e.embed_documents(texts)

    def close(self) -> None:
        pass


class LITEI:
    def __init__(
        self,
        url: str,
        batch: int = 10,
        path: str | None = None,
        cache: bool = False,
        async_workers: int = 0,
        **_,
    ) -> None:
        from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

        kw = {}
        self.persist = None
        if cache:
            from llama_index.core.storage.kvstore import SimpleKVStore

            self.persist = os.path.join(path, "kv.json") if path else None
            if self.persist and os.path.exists(self.persist):
                store = SimpleKVStore.from_persist_path(self.persist)
            else:
                store = SimpleKVStore()
            kw["embeddings_cache"] = store
        self.e = TextEmbeddingsInference(model_name=MODEL, base_url=url, embed_batch_size=batch)
        if cache:
            self.e.embeddings_cache = kw["embeddings_cache"]
        self.async_workers = async_workers
        if async_workers:
            self.e.num_workers = async_workers

    def embed(self, texts):
        if self.async_workers:
            return asyncio.run(self.e.aget_text_embedding_batch(texts))
        return self.e.get_text_embedding_batch(texts)

    def flush(self) -> None:
        if self.persist:
            self.e.embeddings_cache.persist(self.persist)

    def close(self) -> None:
        self.flush()


_PRELOAD = {
    "floor": ["httpx"],
    "cached-tei": [
        "cached_tei",
        "cached_tei.engine",
        "cached_tei.stores.embedded",
        "httpx",
        # What httpx imports at its first async request (timed in the import scenario).
        "httpcore",
        "anyio._backends._asyncio",
        "tenacity",
    ],
    "lc": [
        "langchain_classic.embeddings",
        "langchain_classic.storage",
        "langchain_core.stores",
        "langchain_openai",
    ],
    "li": [
        "llama_index.embeddings.text_embeddings_inference",
        "llama_index.core.storage.kvstore",
        "httpx",
    ],
}


def preload(name: str) -> None:
    """Import what a contender needs before any timer starts (a per-process constant, not a
    per-text cost); constructing clients, opening stores and fetching /info stay timed."""
    import importlib

    key = "cached-tei" if name.startswith("cached-tei") else name.split("-")[0]
    mods = list(_PRELOAD.get(key, []))
    if name == "cached-tei-lc":
        mods.append("langchain_cached_tei")
    for m in mods:
        importlib.import_module(m)


def make(name: str, url: str, path: str | None, **kw):
    if name == "floor":
        return Floor(url, **kw)
    if name == "cached-tei":
        return CachedTEI(url, path, **kw)
    if name == "cached-tei-lists":
        return CachedTEI(url, path, lists=True, **kw)
    if name == "cached-tei-lc":
        return CachedTEILangChain(url, path, **kw)
    if name == "lc-inmem":
        return LCInMemory(url, **kw)
    if name == "lc-file":
        return LCFile(url, path, **kw)
    if name == "li-tei-10":
        return LITEI(url, batch=10, **kw)
    if name == "li-tei-32":
        return LITEI(url, batch=32, **kw)
    if name == "li-tei-async":
        return LITEI(url, batch=32, async_workers=8, **kw)
    if name == "li-cache":
        return LITEI(url, batch=32, path=path, cache=True, **kw)
    raise SystemExit(f"unknown contender {name}")


def _check(vectors, n: int, dim: int) -> None:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.shape != (n, dim):
        raise SystemExit(f"wrong shape {arr.shape}, expected {(n, dim)}")


def _timed(fn):
    gc.collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - cpu0


# ----------------------------------------------------------------------------- scenarios
def scenario_cold(spec: dict) -> dict:
    """Every text new: construct, embed all texts once (timed), then flush/close (untimed)."""
    texts = make_texts(spec["n"], seed=spec.get("seed", 0))
    c = make(spec["contender"], spec["url"], spec.get("path"), **spec.get("kw", {}))
    out, secs, cpu = _timed(lambda: c.embed(texts))
    _check(out, len(texts), spec["dim"])
    t0 = time.perf_counter()
    if hasattr(c, "flush"):
        c.flush()
    flush_s = time.perf_counter() - t0
    c.close()
    return {
        "seconds": secs,
        "cpu_s": cpu,
        "texts": len(texts),
        "flush_s": flush_s,
        "rss_peak_mb": _rss_peak_mb(),
    }


def scenario_warm(spec: dict) -> dict:
    """A new process over a store an earlier process filled: construct + embed all (timed)."""
    texts = make_texts(spec["n"], seed=spec.get("seed", 0))
    fill_first = spec.get("fill_in_process", False)  # stores that cannot outlive a process
    if fill_first:
        c = make(spec["contender"], spec["url"], spec.get("path"), **spec.get("kw", {}))
        c.embed(texts)
        out, secs, cpu = _timed(lambda: c.embed(texts))
    else:

        def run():
            c = make(spec["contender"], spec["url"], spec.get("path"), **spec.get("kw", {}))
            return c, c.embed(texts)

        (c, out), secs, cpu = _timed(run)
    _check(out, len(texts), spec["dim"])
    c.close()
    return {"seconds": secs, "cpu_s": cpu, "texts": len(texts), "rss_peak_mb": _rss_peak_mb()}


def scenario_hot(spec: dict) -> dict:
    """Repeats in one process: fill once (untimed), then ``repeats`` passes (timed, median)."""
    texts = make_texts(spec["n"], seed=spec.get("seed", 0))
    c = make(spec["contender"], spec["url"], spec.get("path"), **spec.get("kw", {}))
    c.embed(texts)
    call = spec.get("call", len(texts))  # texts per call
    times = []
    cpu_total = 0.0
    for _ in range(spec.get("repeats", 5)):

        def one_pass():
            last = None
            for s in range(0, len(texts), call):
                last = c.embed(texts[s : s + call])
            return last

        out, secs, cpu = _timed(one_pass)
        times.append(secs)
        cpu_total += cpu
    c.close()
    # The least any list-returning face can cost: float32 matrix -> lists of Python floats.
    matrix = np.random.default_rng(0).standard_normal((len(texts), spec["dim"]), dtype=np.float32)
    tl = []
    for _ in range(5):
        gc.collect()
        t0 = time.perf_counter()
        matrix.tolist()
        tl.append(time.perf_counter() - t0)
    return {
        "tolist_s": min(tl),
        "seconds": float(np.median(times)),
        "best_s": min(times),
        "all_s": times,
        "texts": len(texts),
        "call": call,
        "cpu_s": cpu_total / len(times),
        "rss_peak_mb": _rss_peak_mb(),
    }


def scenario_mixed(spec: dict) -> dict:
    """Half cached: fill every other text, reopen (new engine, empty LRU), embed all (timed).

    The cold reference runs in the same process on as many fresh texts (another seed)."""
    n = spec["n"]
    texts = make_texts(n, seed=spec.get("seed", 0))
    fresh = make_texts(n, seed=spec.get("seed", 0) + 1000)
    base = Path(spec["path"])
    kw = spec.get("kw", {})
    # cold reference
    c = make("cached-tei", spec["url"], str(base / "cold"), **kw)
    c.e.info()  # /info and the HTTP client are per-engine constants: outside both timers
    _, cold_s, _ = _timed(lambda: c.embed(fresh))
    c.flush()
    c.close()
    # half filled, then a new engine over the same store
    c = make("cached-tei", spec["url"], str(base / "mixed"), **kw)
    c.embed(texts[0::2])
    c.flush()
    c.close()
    c = make("cached-tei", spec["url"], str(base / "mixed"), **kw)
    c.e.info()  # /info is fetched once per engine; not part of the call's cost
    out, mixed_s, cpu = _timed(lambda: c.e.embed(texts))
    _check(out.vectors, n, spec["dim"])
    hits, misses = out.hits, out.misses
    c.close()
    miss_fraction = misses / n
    return {
        "seconds": mixed_s,
        "cold_s": cold_s,
        "hits": hits,
        "misses": misses,
        "miss_fraction": miss_fraction,
        "ratio_to_scaled_cold": mixed_s / (cold_s * miss_fraction),
        "cpu_s": cpu,
        "texts": n,
    }


def scenario_lru(spec: dict) -> dict:
    """The in-process LRU never holds more than lru_bytes (checked after every call)."""
    from cached_tei import CachedEmbedder

    n, lru = spec["n"], spec["lru_bytes"]
    texts = make_texts(n, seed=spec.get("seed", 0))
    e = CachedEmbedder(tei_url=spec["url"], qdrant_path=spec["path"], lru_bytes=lru)
    worst = worst_vec = 0
    entries = 0
    for s in range(0, n, 1000):
        e.embed(texts[s : s + 1000])
        mem = e._lease.engine._memory  # the engine's LRU (cachetools.LRUCache)
        worst = max(worst, int(mem.currsize))
        worst_vec = max(worst_vec, sum(v.nbytes for v in mem.values()))
        entries = len(mem)
    e.close()
    return {
        "lru_bytes": lru,
        "max_currsize": worst,
        "max_vector_bytes": worst_vec,
        "entries_at_end": entries,
        "texts": n,
        "ok": worst <= lru,
        "rss_peak_mb": _rss_peak_mb(),
    }


def scenario_peak(spec: dict) -> dict:
    """Run a command; report its peak RSS (ru_maxrss) and, polled every 20 ms from /proc, the
    peaks of anonymous memory (heap: what the process holds) and file-backed memory (mapped
    files, e.g. the store's memory-mapped segments, which the kernel can drop)."""
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.Popen(spec["cmd"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                key = line.split(":", 1)[0]
                if key in peaks:
                    peaks[key] = max(peaks[key], int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    rc = proc.wait()
    return {
        "rc": rc,
        "seconds": time.perf_counter() - t0,
        "stderr": err[-2000:],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0,
        "polled_rss_mb": peaks["VmRSS"] / 1024.0,
        "peak_anon_mb": peaks["RssAnon"] / 1024.0,
        "peak_file_mb": peaks["RssFile"] / 1024.0,
    }


def scenario_store_growth(spec: dict) -> dict:
    """The embedded store alone (cached_tei's EmbeddedStore, its real configuration): anonymous
    memory after upserting N random vectors in batches of 512, as the write-behind does.
    Separates what the store keeps in RAM per point from what the engine keeps."""
    import uuid

    from cached_tei.keys import Namespace
    from cached_tei.settings import CachedTEISettings
    from cached_tei.stores import open_store

    def anon_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon"):
                return int(line.split()[1]) / 1024.0
        return 0.0

    async def go() -> dict:
        store = open_store(CachedTEISettings(qdrant_path=spec["path"]))
        ns = Namespace("bench/store", None, True, True, "Right", None, None)
        rng = np.random.default_rng(0)
        before = anon_mb()
        marks = {}
        done = 0
        for n in spec["sizes"]:
            while done < n:
                k = min(512, n - done)
                ids = [str(uuid.uuid4()) for _ in range(k)]
                await store.upsert(ns, ids, rng.standard_normal((k, spec["dim"]), dtype=np.float32))
                done += k
            gc.collect()
            marks[n] = anon_mb() - before
        await store.aclose()
        return {"anon_growth_mb": marks, "anon_before_mb": before}

    return asyncio.run(go())


SCENARIOS = {
    "store_growth": scenario_store_growth,
    "peak": scenario_peak,
    "cold": scenario_cold,
    "warm": scenario_warm,
    "hot": scenario_hot,
    "mixed": scenario_mixed,
    "lru": scenario_lru,
}


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec["scenario"] != "peak":
        preload(spec.get("contender", "cached-tei"))
    result = SCENARIOS[spec["scenario"]](spec)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
