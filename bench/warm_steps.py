#!/usr/bin/env python
"""What each step of a warm read costs per text: the embedded store's floor, step by step.

A qdrant-edge shard in the embedded store's configuration holds N float32 vectors with their
payloads (creation time, CRC32). Each step runs over all N in the store's chunks
(``shards.step_points``), best of ``--repeat``, and is reported in microseconds per text:

  retrieve          ``EdgeShard.retrieve`` with payload and vector (records only)
  Record.vector     reading each record's vector into lists that are all kept (a list face's
                    output): the binding builds Python floats in fresh memory
  Record.vector/freed  the same with each chunk's lists dropped before the next (memory reused):
                    the difference is the cost of fresh memory for the floats, not the binding
  payload + id      reading each record's payload and id
  np.array/chunk    one float32 matrix from a chunk's lists with ``np.array`` (before)
  struct/chunk      the same matrix packed row by row (``stores.base.float32_matrix``, now)
  np.asarray/rec    one float32 array per record (the per-record way)
  crc32             checking each row's CRC32 against its payload (``integrity.intact``)
  row copies        one float32 row of its own per text (what the in-process LRU keeps)
  tolist            a float32 matrix back to Python lists (what the list faces paid)

The floor of a list face is retrieve + Record.vector + payload + struct/chunk (the float32
bytes the CRC32 is checked on) + crc32 + the LRU's row copies: the lists themselves come from
the binding and are passed through. Before, the list faces also paid np.array/chunk instead of
struct/chunk and tolist (whose fresh floats then cost what Record.vector's cost now), with
Record.vector/freed.

Writes ``results/warm_steps.json``.

Usage:  python bench/warm_steps.py [--n 20000] [--dim 384] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as edge

from cached_tei.integrity import checksums, intact
from cached_tei.stores.base import float32_matrix
from cached_tei.stores.embedded import _config
from cached_tei.stores.shards import step_points


def _best(repeat: int, step: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(n: int, dim: int, repeat: int) -> dict[str, float]:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(n)]
    crcs = checksums(ids, vectors)
    chunk = step_points(dim)
    with tempfile.TemporaryDirectory() as folder:
        shard = edge.EdgeShard.create(folder, _config(dim))
        for start in range(0, n, 512):
            points = [
                edge.Point(ids[i], vectors[i].tolist(), {"created": 1, "crc32": crcs[i]})
                for i in range(start, min(start + 512, n))
            ]
            shard.update(edge.UpdateOperation.upsert_points(points))
        chunks = [ids[s : s + chunk] for s in range(0, n, chunk)]

        def retrieve() -> list[Any]:
            return [
                shard.retrieve(point_ids=c, with_payload=True, with_vector=True) for c in chunks
            ]

        records = retrieve()
        lists = [[r.vector for r in part] for part in records]
        matrices = [np.array(part, dtype=np.float32) for part in lists]
        chunk_ids = [[str(r.id) for r in part] for part in records]
        sums = [[r.payload["crc32"] for r in part] for part in records]
        steps = {
            "retrieve": retrieve,
            "Record.vector": lambda: [[r.vector for r in part] for part in records],
            "Record.vector/freed": lambda: [len([r.vector for r in part]) for part in records],
            "payload + id": lambda: [[(str(r.id), r.payload) for r in part] for part in records],
            "np.array/chunk": lambda: [np.array(part, dtype=np.float32) for part in lists],
            "struct/chunk": lambda: [float32_matrix(part, dim) for part in lists],
            "np.asarray/rec": lambda: [
                [np.asarray(v, dtype=np.float32) for v in part] for part in lists
            ],
            "crc32": lambda: [
                intact(i, m, s) for i, m, s in zip(chunk_ids, matrices, sums, strict=True)
            ],
            "row copies": lambda: [[row.copy() for row in m] for m in matrices],
            "tolist": lambda: [m.tolist() for m in matrices],
        }
        result = {name: _best(repeat, step) / n * 1e6 for name, step in steps.items()}
        shard.close()
    floor = ("retrieve", "Record.vector", "payload + id", "struct/chunk", "crc32", "row copies")
    result["floor (lists face)"] = sum(result[name] for name in floor)
    before = ("retrieve", "Record.vector/freed", "payload + id", "np.array/chunk", "crc32")
    result["before (lists face)"] = sum(result[name] for name in before) + result["row copies"]
    result["before (lists face)"] += result["tolist"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    result = measure(args.n, args.dim, args.repeat)
    for name, us in result.items():
        print(f"{name:>20}: {us:6.2f} us per text")
    record = {"n": args.n, "dim": args.dim, "us_per_text": result}
    (Path(__file__).parent / "results" / "warm_steps.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
