#!/usr/bin/env python
"""Warm reads from a Qdrant server: client-side CPU of each way to read cached vectors.

The server is the Qdrant REST stand-in (``tests/faults/fake_qdrant.py``: qdrant-client's
local engine behind real HTTP) in a child process, so this process's CPU time is the
client's alone. Each collection holds N random float32 vectors (payload ``created``); a
read retrieves all N by id in chunks of 1,024 (as the store does), with vectors and the
``created`` payload, and ends with an id -> float32 row mapping. Every path is checked
bit-exact against the written matrix before it is timed.

Paths (the stand-in also serves a lookup's gRPC calls, so gRPC runs over real HTTP/2 too)
  qdrant_rest   : ``AsyncQdrantClient.retrieve`` over REST (pydantic models), then each
                  record's vector through ``np.asarray`` (the store before this change)
  httpx_orjson  : ``POST /collections/{name}/points`` with httpx, ``orjson.loads``, then one
                  ``np.array(list_of_lists, float32)`` per chunk
  store_rest    : ``QdrantServerStore.lookup`` over REST as shipped (the path above, plus a
                  copy per row so that the LRU never pins a chunk)
  qdrant_grpc   : ``AsyncQdrantClient.retrieve`` with ``prefer_grpc`` (protobuf converted to
                  qdrant-client's models), then ``np.asarray`` per record
  store_grpc    : ``QdrantServerStore.lookup`` with ``qdrant_prefer_grpc`` as shipped: the raw
                  ``Points/Get`` stub, packed floats straight into one matrix per chunk
  grpc_decode   : decoding only, no transport: a prebuilt ``GetResponse`` parsed and converted
  grpc_raw        by qdrant-client (``GrpcToRest``), or parsed into one matrix directly

Usage:  python bench/server_reads.py [--sizes 2000,20000] [--dims 384,1024] [--repeat 3]
Figures are ratios to ``qdrant_rest`` in the same run (CPU seconds, min over repeats).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
import numpy as np
import orjson
from qdrant_client import AsyncQdrantClient
from qdrant_client.conversions.conversion import GrpcToRest
from qdrant_client.grpc import points_pb2

from cached_tei.keys import Namespace
from cached_tei.settings import CachedTEISettings
from cached_tei.stores.server import QdrantServerStore

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_OUT = os.path.join(HERE, "results", "server_reads.json")
CHUNK = 1024
CREATED = 1_700_000_000

Read = Callable[[list[str]], Awaitable[dict[str, np.ndarray]]]

STAND_IN = """
import sys
from tests.faults.fake_qdrant import FakeQdrant
q = FakeQdrant(validate=False, grpc=True).start()
print(q.url, q.grpc_port, flush=True)
sys.stdin.read()
"""


def start_stand_in() -> tuple[subprocess.Popen[str], str, int]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "core"), ROOT])}
    proc = subprocess.Popen(
        [sys.executable, "-c", STAND_IN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    url, grpc_port = proc.stdout.readline().split()
    return proc, url, int(grpc_port)


def make_points(n: int, dim: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(n * 7 + dim)
    matrix = rng.standard_normal((n, dim)).astype(np.float32)
    return [str(uuid.UUID(bytes=rng.bytes(16))) for _ in range(n)], matrix


def chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]


def qdrant_client_read(client: AsyncQdrantClient, name: str) -> Read:
    async def read(ids: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for part in chunks(ids):
            records = await client.retrieve(
                name, ids=part, with_vectors=True, with_payload=["created"]
            )
            for r in records:
                if (r.payload or {}).get("created", 0) >= CREATED:
                    found[str(r.id)] = np.asarray(r.vector, dtype=np.float32)
        return found

    return read


def httpx_orjson(client: httpx.AsyncClient, name: str) -> Read:
    async def read(ids: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for part in chunks(ids):
            body = {"ids": part, "with_vector": True, "with_payload": ["created"]}
            response = await client.post(
                f"/collections/{name}/points",
                content=orjson.dumps(body),
                headers={"content-type": "application/json"},
            )
            response.raise_for_status()
            records = orjson.loads(response.content)["result"]
            fresh = [r for r in records if (r.get("payload") or {}).get("created", 0) >= CREATED]
            matrix = np.array([r["vector"] for r in fresh], dtype=np.float32)
            found.update(zip([str(r["id"]) for r in fresh], matrix, strict=True))
        return found

    return read


def store_lookup(store: QdrantServerStore, namespace: Namespace) -> Read:
    async def read(ids: list[str]) -> dict[str, np.ndarray]:
        rows = await store.lookup(namespace, ids)  # raw rows; the engine filters them
        return dict(zip(rows.ids, rows.vectors, strict=True))

    return read


def grpc_responses(ids: list[str], matrix: np.ndarray) -> list[bytes]:
    """Serialised GetResponse messages, one per chunk, as a Qdrant server would send them."""
    out = []
    for start in range(0, len(ids), CHUNK):
        response = points_pb2.GetResponse(time=0.001)
        for i in range(start, min(start + CHUNK, len(ids))):
            point = response.result.add()
            point.id.uuid = ids[i]
            point.payload["created"].integer_value = CREATED
            point.vectors.vector.dense.data.extend(matrix[i].tolist())
        out.append(response.SerializeToString())
    return out


def grpc_decode(messages: list[bytes]) -> Read:
    async def read(ids: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for raw in messages:
            response = points_pb2.GetResponse.FromString(raw)
            for point in response.result:
                r = GrpcToRest.convert_retrieved_point(point)
                if (r.payload or {}).get("created", 0) >= CREATED:
                    found[str(r.id)] = np.asarray(r.vector, dtype=np.float32)
        return found

    return read


def grpc_raw(messages: list[bytes], dim: int) -> Read:
    async def read(ids: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for raw in messages:
            points = points_pb2.GetResponse.FromString(raw).result
            fresh = [p for p in points if p.payload["created"].integer_value >= CREATED]
            matrix = np.empty((len(fresh), dim), dtype=np.float32)
            for row, p in enumerate(fresh):
                matrix[row] = p.vectors.vector.dense.data
            found.update(zip([p.id.uuid for p in fresh], matrix, strict=True))
        return found

    return read


async def measure(
    read: Read, ids: list[str], expected: np.ndarray, repeat: int
) -> dict[str, float]:
    got = await read(ids)
    assert len(got) == len(ids), (len(got), len(ids))
    assert np.array_equal(np.stack([got[i] for i in ids]), expected), "vectors differ"
    cpu, wall = [], []
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        await read(ids)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return {"cpu_s": min(cpu), "wall_s": min(wall), "points_per_cpu_s": len(ids) / min(cpu)}


async def run_case(url: str, grpc_port: int, n: int, dim: int, repeat: int) -> dict[str, object]:
    namespace = Namespace(f"bench/{n}", None, True, False, "Right", None, dim)
    store = QdrantServerStore(CachedTEISettings(qdrant_url=url, qdrant_timeout=600))
    name = namespace.collection(store._settings.collection_prefix)
    ids, matrix = make_points(n, dim)
    await store.upsert(namespace, ids, matrix)
    messages = grpc_responses(ids, matrix)
    case: dict[str, object] = {
        "n": n,
        "dim": dim,
        "grpc_bytes": sum(len(m) for m in messages),
    }
    rest = AsyncQdrantClient(url=url, timeout=600, check_compatibility=False)
    grpc_client = AsyncQdrantClient(
        url=url, grpc_port=grpc_port, prefer_grpc=True, timeout=600, check_compatibility=False
    )
    grpc_store = QdrantServerStore(
        CachedTEISettings(qdrant_url=url, qdrant_prefer_grpc=True, qdrant_timeout=600)
    )
    grpc_store._client = AsyncQdrantClient(  # settings have no gRPC port; a server uses 6334
        url=url, grpc_port=grpc_port, prefer_grpc=True, timeout=600, check_compatibility=False
    )
    raw = httpx.AsyncClient(base_url=url, timeout=600)
    try:
        probe = await raw.post(
            f"/collections/{name}/points",
            json={"ids": ids[:CHUNK], "with_vector": True, "with_payload": ["created"]},
        )
        case["rest_bytes"] = round(len(probe.content) * n / min(n, CHUNK))
        paths: dict[str, Read] = {
            "qdrant_rest": qdrant_client_read(rest, name),
            "httpx_orjson": httpx_orjson(raw, name),
            "store_rest": store_lookup(store, namespace),
            "qdrant_grpc": qdrant_client_read(grpc_client, name),
            "store_grpc": store_lookup(grpc_store, namespace),
            "grpc_decode": grpc_decode(messages),
            "grpc_raw": grpc_raw(messages, dim),
        }
        results = {p: await measure(read, ids, matrix, repeat) for p, read in paths.items()}
    finally:
        await rest.close()
        await raw.aclose()
        await store.aclose()
        await grpc_client.close()
        await grpc_store.aclose()
    base = results["qdrant_rest"]["cpu_s"]
    case["paths"] = results
    case["cpu_speedup_vs_qdrant_rest"] = {
        p: round(base / r["cpu_s"], 2) for p, r in results.items()
    }
    return case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000")
    parser.add_argument("--dims", default="384,1024")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    proc, url, grpc_port = start_stand_in()
    cases = []
    try:
        for dim in [int(d) for d in args.dims.split(",")]:
            for n in [int(s) for s in args.sizes.split(",")]:
                case = asyncio.run(run_case(url, grpc_port, n, dim, args.repeat))
                print(json.dumps({k: v for k, v in case.items() if k != "paths"}), flush=True)
                cases.append(case)
    finally:
        proc.terminate()
        proc.wait(10)
    report = {"machine": platform.platform(), "python": sys.version.split()[0], "cases": cases}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
