#!/usr/bin/env python
"""Sparse embeddings and reranking through the cache, against uncached TEI.

An emulator process per kind (a SPLADE model, a reranker) with TEI's cost per request
(``--step-ms`` + ``--per-text-ms`` per text). For each kind, in one run:

  uncached : a bare concurrent client making the same calls: each call's batches of
             max_client_batch_size, as many in flight as the engine's max_concurrency,
             straight to TEI (the floor without a cache)
  cold     : the plain face on an empty cache (every text or pair goes to TEI)
  warm     : a new face on the same folder, the in-process LRU empty (every entry from the
             embedded store)
  hot      : the same face again (every entry from the in-process LRU)

Sparse: N texts in calls of 1,000. Rerank: Q queries of N/Q texts each. Figures are ratios:
cold / uncached (the cache's overhead on misses), uncached / warm and uncached / hot
(speed-ups), each the best of ``--repeat`` runs.

Usage:  python bench/kinds.py [--texts 2000] [--queries 20] [--repeat 3]
Targets: cold <= 1.1; warm >= 3; hot >= 10.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import httpx  # noqa: E402

from cached_tei import CachedReranker, CachedSparseEmbedder, CachedTEISettings  # noqa: E402
from tests.tei_emulator import EmulatorConfig, EmulatorProcess  # noqa: E402

CALL = 1000


async def _uncached(url: str, route: str, calls: list[list[dict[str, Any]]]) -> None:
    """Call after call, each call's bodies at once, at most max_concurrency in flight."""
    slots = asyncio.Semaphore(CachedTEISettings().max_concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def send(body: dict[str, Any]) -> None:
            async with slots:
                response = await client.post(route, json=body)
                response.raise_for_status()
                response.json()  # a client reads the answer

        for bodies in calls:
            await asyncio.gather(*(send(body) for body in bodies))


def _batches(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def _best(run: Callable[[], object], repeat: int, before: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        before()
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_sparse(url: str, texts: list[str], batch: int, repeat: int) -> dict[str, float]:
    bodies = [
        [{"inputs": part} for part in _batches(call, batch)] for call in _batches(texts, CALL)
    ]
    uncached = _best(
        lambda: asyncio.run(_uncached(url, "/embed_sparse", bodies)), repeat, lambda: None
    )
    folders: list[str] = []

    def fresh() -> None:
        folders.append(tempfile.mkdtemp(prefix="bench-sparse-"))

    def embed(face: CachedSparseEmbedder) -> None:
        for part in _batches(texts, CALL):
            face.embed_documents(part)

    def cold() -> None:
        with CachedSparseEmbedder(sparse_url=url, qdrant_path=folders[-1]) as face:
            embed(face)

    cold_s = _best(cold, repeat, fresh)
    with CachedSparseEmbedder(sparse_url=url, qdrant_path=folders[-1]) as face:
        warm_s = _best(lambda: embed(face), 1, lambda: None)  # first pass: the store
        hot_s = _best(lambda: embed(face), repeat, lambda: None)
    return {"uncached_s": uncached, "cold_s": cold_s, "warm_s": warm_s, "hot_s": hot_s}


def bench_rerank(
    url: str, queries: list[str], texts: list[str], batch: int, repeat: int
) -> dict[str, float]:
    bodies = [[{"query": q, "texts": part} for part in _batches(texts, batch)] for q in queries]
    uncached = _best(lambda: asyncio.run(_uncached(url, "/rerank", bodies)), repeat, lambda: None)
    folders: list[str] = []

    def fresh() -> None:
        folders.append(tempfile.mkdtemp(prefix="bench-rerank-"))

    def rank(face: CachedReranker) -> None:
        for query in queries:
            face.rerank(query, texts)

    def cold() -> None:
        with CachedReranker(rerank_url=url, qdrant_path=folders[-1]) as face:
            rank(face)

    cold_s = _best(cold, repeat, fresh)
    with CachedReranker(rerank_url=url, qdrant_path=folders[-1]) as face:
        warm_s = _best(lambda: rank(face), 1, lambda: None)
        hot_s = _best(lambda: rank(face), repeat, lambda: None)
    return {"uncached_s": uncached, "cold_s": cold_s, "warm_s": warm_s, "hot_s": hot_s}


def ratios(times: dict[str, float]) -> dict[str, float]:
    return {
        "cold_vs_uncached": round(times["cold_s"] / times["uncached_s"], 2),
        "warm_speedup": round(times["uncached_s"] / times["warm_s"], 2),
        "hot_speedup": round(times["uncached_s"] / times["hot_s"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--step-ms", type=float, default=20.0)
    parser.add_argument("--per-text-ms", type=float, default=1.0)
    args = parser.parse_args()
    cost = {"step_ms": args.step_ms, "per_text_ms": args.per_text_ms}
    # 1,024 raw dimensions keep about 160 entries per text, as SPLADE models do.
    splade = EmulatorConfig(model_id="emulator/splade", model_type="splade", dim=1024, **cost)
    reranker = EmulatorConfig(model_id="emulator/reranker", model_type="reranker", **cost)
    texts = [f"bench text {i} about subject {i % 97}" for i in range(args.texts)]
    per_query = texts[: max(1, args.texts // args.queries)]
    queries = [f"query {q}" for q in range(args.queries)]
    with EmulatorProcess(splade) as sparse_tei, EmulatorProcess(reranker) as rerank_tei:
        sparse = bench_sparse(sparse_tei.url, texts, splade.max_client_batch_size, args.repeat)
        rerank = bench_rerank(
            rerank_tei.url, queries, per_query, reranker.max_client_batch_size, args.repeat
        )
    result = {
        "texts": args.texts,
        "queries": args.queries,
        "sparse": {**sparse, **ratios(sparse)},
        "rerank": {**rerank, **ratios(rerank)},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
