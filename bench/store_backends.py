#!/usr/bin/env python
"""Benchmark the embedded (in-process) store candidates for cached-tei.

Backends
  local : qdrant-client local mode, ``QdrantClient(path=...)`` (pure Python, SQLite + numpy)
  edge  : qdrant-edge-py, ``qdrant_edge.EdgeShard`` (Qdrant's Rust engine in-process, beta)

Both are configured like the cached-tei collection: DOT distance, float32 vectors,
HNSW m=0, payload {"created": int}, ids = UUID from the first 16 bytes of SHA-256(text).

Per dimension (384, 1024) and backend, one run measures:
  1. upsert throughput, batches of 256 (points/s)
  2. retrieve-by-ids throughput with vectors + payload, batches of 256, all hits (points/s)
  3. reopen time of a store of N points: close, open the same folder, first retrieve
     (in this process, and in a fresh child process)
  4. RSS added by opening the reopened store (fresh child process; psutil rss and peak
     ru_maxrss), plus RSS after touching every point
  5. whether vectors round-trip bit-exact as float32
  6. what a second opener of the same folder gets, in this process and in another process
Extras: delete-by-filter (created < t) + count timing on the reopened store, and for edge:
use from another thread, concurrent use from two threads, and whether calls release the GIL.

Inputs are Python lists of floats (what TEI's JSON gives us), converted before the timers.

Usage:  .venv/bin/python bench/store_backends.py [--n 20000] [--dims 384,1024] [--out PATH]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from importlib import metadata

import numpy as np

try:
    import psutil
except ImportError:  # pragma: no cover
    psutil = None

BATCH = 256
COLLECTION = "cached_tei"
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "store_backends.json")


# --------------------------------------------------------------------------- helpers


def key_for(text: str) -> str:
    """cached-tei's point id: UUID from the first 16 bytes of SHA-256(text)."""
    return str(uuid.UUID(bytes=hashlib.sha256(text.encode("utf-8")).digest()[:16]))


def rss_bytes() -> int | None:
    if psutil is None:
        return None
    return psutil.Process().memory_info().rss


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM), Linux >= 4.0. False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak RSS: VmHWM from /proc (resettable), else ru_maxrss (KiB on Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mb(x):
    return None if x is None else round(x / 2**20, 1)


def dir_size(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def short_err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:500]


# --------------------------------------------------------------------------- backends


class LocalBackend:
    name = "local"

    def __init__(self):
        from qdrant_client import QdrantClient, models

        self.QdrantClient = QdrantClient
        self.models = models
        self.client = None

    def create(self, path: str, dim: int):
        m = self.models
        self.client = self.QdrantClient(path=path)
        self.client.create_collection(
            COLLECTION,
            vectors_config=m.VectorParams(
                size=dim, distance=m.Distance.DOT, datatype=m.Datatype.FLOAT32
            ),
            hnsw_config=m.HnswConfigDiff(m=0),
        )

    def open(self, path: str):
        self.client = self.QdrantClient(path=path)

    def upsert(self, ids, vectors, created):
        self.client.upsert(
            COLLECTION,
            points=self.models.Batch(
                ids=ids, vectors=vectors, payloads=[{"created": c} for c in created]
            ),
            wait=True,
        )

    def retrieve(self, ids):
        recs = self.client.retrieve(COLLECTION, ids=ids, with_vectors=True, with_payload=True)
        return [(str(r.id), r.vector, r.payload) for r in recs]

    def count(self) -> int:
        return self.client.count(COLLECTION, exact=True).count

    def delete_created_lt(self, t: int):
        m = self.models
        self.client.delete(
            COLLECTION,
            points_selector=m.FilterSelector(
                filter=m.Filter(must=[m.FieldCondition(key="created", range=m.Range(lt=t))])
            ),
            wait=True,
        )

    def close(self):
        if self.client is not None:
            self.client.close()
            self.client = None


class EdgeBackend:
    name = "edge"

    def __init__(self):
        import qdrant_edge as q

        self.q = q
        self.shard = None

    def config(self, dim: int):
        q = self.q
        return q.EdgeConfig(
            vectors=q.EdgeVectorParams(
                size=dim, distance=q.Distance.Dot, datatype=q.VectorStorageDatatype.Float32
            ),
            hnsw_config=q.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10000),
        )

    def create(self, path: str, dim: int):
        self.shard = self.q.EdgeShard.create(path, self.config(dim))

    def open(self, path: str):
        self.shard = self.q.EdgeShard.load(path)

    def upsert(self, ids, vectors, created):
        q = self.q
        pts = [q.Point(i, v, {"created": c}) for i, v, c in zip(ids, vectors, created, strict=True)]
        self.shard.update(q.UpdateOperation.upsert_points(pts))

    def retrieve(self, ids):
        recs = self.shard.retrieve(point_ids=ids, with_payload=True, with_vector=True)
        return [(str(r.id), r.vector, r.payload) for r in recs]

    def count(self) -> int:
        return self.shard.count(self.q.CountRequest(exact=True))

    def delete_created_lt(self, t: int):
        q = self.q
        flt = q.Filter(must=[q.FieldCondition(key="created", range=q.RangeFloat(lt=t))])
        self.shard.update(q.UpdateOperation.delete_points_by_filter(flt))

    def close(self):
        if self.shard is not None:
            self.shard.close()
            self.shard = None


BACKENDS = {"local": LocalBackend, "edge": EdgeBackend}


# --------------------------------------------------------------------------- child process modes


def child_reopen(backend: str, path: str, ids_file: str) -> dict:
    """Fresh process: open the store, first retrieve; report time and RSS added."""
    with open(ids_file) as f:
        ids = json.load(f)
    be = BACKENDS[backend]()  # import the library before the baseline
    gc.collect()
    peak_reset = reset_peak_rss()
    rss0, peak0 = rss_bytes(), peak_rss_bytes()
    t0 = time.perf_counter()
    be.open(path)
    t_open = time.perf_counter() - t0
    got = be.retrieve(ids[:BATCH])
    t_first = time.perf_counter() - t0
    assert len(got) == min(BATCH, len(ids)), len(got)
    rss1, peak1 = rss_bytes(), peak_rss_bytes()
    # touch every point once (what a long-running cache converges to)
    for i in range(0, len(ids), BATCH):
        be.retrieve(ids[i : i + BATCH])
    rss2, peak2 = rss_bytes(), peak_rss_bytes()
    be.close()
    return {
        "open_s": round(t_open, 4),
        "open_plus_first_retrieve_s": round(t_first, 4),
        "rss_added_mb": mb(None if rss0 is None else rss1 - rss0),
        "peak_rss_added_mb": mb(peak1 - peak0),
        "rss_added_after_touching_all_mb": mb(None if rss0 is None else rss2 - rss0),
        "peak_rss_added_after_touching_all_mb": mb(peak2 - peak0),
        "rss_source": ("psutil rss (current); " if psutil else "")
        + (
            "peak = /proc VmHWM reset before open"
            if peak_reset
            else "peak = ru_maxrss (not resettable)"
        ),
    }


def child_open(backend: str, path: str) -> dict:
    be = BACKENDS[backend]()
    try:
        be.open(path)
        n = be.count()
    except BaseException as e:
        return {"opened": False, "error": short_err(e)}
    try:
        be.close()
    except BaseException:
        pass
    return {"opened": True, "error": None, "count_seen": n}


def run_child(args: list[str], timeout: float = 180) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"child_failed": True, "returncode": p.returncode, "stderr_tail": p.stderr[-1500:]}
    out = json.loads(lines[-1])
    warn = [ln for ln in p.stderr.splitlines() if "Warning" in ln or "warn" in ln.lower()]
    if warn:
        out["child_stderr_warnings"] = warn[:5]
    return out


# --------------------------------------------------------------------------- main benchmark


def bench_backend(
    backend: str, dim: int, n: int, ids: list[str], vec_np: np.ndarray, vec_lists, workdir: str
) -> dict:
    res: dict = {"backend": backend, "dim": dim, "n": n}
    path = os.path.join(workdir, f"{backend}_{dim}")
    shutil.rmtree(path, ignore_errors=True)
    created = list(range(1_700_000_000, 1_700_000_000 + n))
    caught: list[str] = []

    with warnings.catch_warnings(record=True) as wlist:
        warnings.simplefilter("always")
        be = BACKENDS[backend]()

        # 1. upsert
        be.create(path, dim)
        t0 = time.perf_counter()
        for i in range(0, n, BATCH):
            be.upsert(ids[i : i + BATCH], vec_lists[i : i + BATCH], created[i : i + BATCH])
        dt = time.perf_counter() - t0
        res["upsert_s"] = round(dt, 3)
        res["upsert_pts_per_s"] = round(n / dt, 1)
        res["count_after_upsert"] = be.count()

        # 2. retrieve + 5. round-trip
        order = np.random.default_rng(1).permutation(n)
        shuffled = [ids[j] for j in order]
        exact = True
        in_order = True
        payload_ok = True
        hits = 0
        t0 = time.perf_counter()
        out_batches = []
        for i in range(0, n, BATCH):
            out_batches.append((i, be.retrieve(shuffled[i : i + BATCH])))
        dt = time.perf_counter() - t0
        idx = {k: j for j, k in enumerate(ids)}
        for i, recs in out_batches:
            want = shuffled[i : i + BATCH]
            hits += len(recs)
            if [r[0] for r in recs] != want:
                in_order = False
            for rid, vec, payload in recs:
                j = idx[rid]
                if np.asarray(vec, dtype=np.float32).tobytes() != vec_np[j].tobytes():
                    exact = False
                if payload != {"created": created[j]}:
                    payload_ok = False
        res["retrieve_s"] = round(dt, 3)
        res["retrieve_pts_per_s"] = round(n / dt, 1)
        res["retrieve_hits"] = hits
        res["retrieve_preserves_request_order"] = in_order
        res["roundtrip_float32_bit_exact"] = exact
        res["roundtrip_payload_ok"] = payload_ok

        # 6a. second opener, same process (while the first is open)
        other = BACKENDS[backend]()
        try:
            other.open(path)
            res["second_open_same_process"] = {
                "opened": True,
                "error": None,
                "count_seen": other.count(),
            }
            other.close()
        except BaseException as e:
            res["second_open_same_process"] = {"opened": False, "error": short_err(e)}
        del other
        gc.collect()
        # 6b. second opener, other process
        res["second_open_other_process"] = run_child(
            ["--_child", "open", "--backend", backend, "--path", path]
        )

        # 3. reopen in this process
        t0 = time.perf_counter()
        be.close()
        t_close = time.perf_counter() - t0
        res["close_s"] = round(t_close, 4)
        res["disk_mb"] = mb(dir_size(path))
        res["disk_mb_by_entry"] = {
            e: mb(
                dir_size(os.path.join(path, e))
                if os.path.isdir(os.path.join(path, e))
                else os.path.getsize(os.path.join(path, e))
            )
            for e in sorted(os.listdir(path))
        }
        gc.collect()
        t0 = time.perf_counter()
        be.open(path)
        t_open = time.perf_counter() - t0
        first = be.retrieve(ids[:BATCH])
        t_first = time.perf_counter() - t0
        assert len(first) == BATCH
        res["reopen_in_process"] = {
            "open_s": round(t_open, 4),
            "open_plus_first_retrieve_s": round(t_first, 4),
        }
        be.close()

        # 3+4. reopen + RSS in a fresh process
        ids_file = os.path.join(workdir, f"ids_{backend}_{dim}.json")
        with open(ids_file, "w") as f:
            json.dump(ids, f)
        res["reopen_child_process"] = run_child(
            ["--_child", "reopen", "--backend", backend, "--path", path, "--ids-file", ids_file]
        )

        # extra: delete by filter created < t, then count
        be.open(path)
        t_cut = created[n // 2]
        t0 = time.perf_counter()
        be.delete_created_lt(t_cut)
        t_del = time.perf_counter() - t0
        t0 = time.perf_counter()
        cnt = be.count()
        t_cnt = time.perf_counter() - t0
        res["delete_by_filter_half"] = {
            "delete_s": round(t_del, 4),
            "count_s": round(t_cnt, 4),
            "count_after": cnt,
            "count_expected": n - n // 2,
        }
        be.close()

        caught = sorted({f"{w.category.__name__}: {w.message}"[:300] for w in wlist})
    res["python_warnings"] = caught
    shutil.rmtree(path, ignore_errors=True)
    return res


def edge_thread_probes(workdir: str, dim: int = 1024, n: int = 20000) -> dict:
    """Thread-safety and GIL behaviour of qdrant_edge.EdgeShard."""
    import qdrant_edge as q

    be = EdgeBackend()
    path = os.path.join(workdir, "edge_threads")
    shutil.rmtree(path, ignore_errors=True)
    be.create(path, dim)
    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    ids = [str(uuid.UUID(int=int(x))) for x in rng.integers(1, 2**62, n)]
    vl = vecs.tolist()
    for i in range(0, n, BATCH):
        be.upsert(ids[i : i + BATCH], vl[i : i + BATCH], [i] * len(ids[i : i + BATCH]))
    out: dict = {"dim": dim, "n": n}

    # (a) call from a thread other than the opener
    box = {}

    def other_thread():
        try:
            box["n"] = len(be.retrieve(ids[:BATCH]))
            be.upsert([str(uuid.uuid4())], [vl[0]], [0])
            box["ok"] = True
        except BaseException as e:
            box["err"] = short_err(e)

    th = threading.Thread(target=other_thread)
    th.start()
    th.join()
    out["use_from_other_thread"] = {"ok": box.get("ok", False), "error": box.get("err")}

    # (b) concurrent use from two threads for ~2 s
    errors: list[str] = []
    stop = time.perf_counter() + 2.0
    extra_ids = [str(uuid.uuid4()) for _ in range(4096)]
    counters = {"upserts": 0, "retrieves": 0}

    def writer():
        k = 0
        try:
            while time.perf_counter() < stop and k + BATCH <= len(extra_ids):
                be.upsert(extra_ids[k : k + BATCH], vl[:BATCH], [1] * BATCH)
                k += BATCH
                counters["upserts"] += BATCH
        except BaseException as e:
            errors.append("writer " + short_err(e))

    def reader():
        try:
            while time.perf_counter() < stop:
                j = int(rng.integers(0, n - BATCH))
                r = be.retrieve(ids[j : j + BATCH])
                if len(r) != BATCH:
                    errors.append(f"reader got {len(r)}")
                counters["retrieves"] += BATCH
        except BaseException as e:
            errors.append("reader " + short_err(e))

    ts = [
        threading.Thread(target=writer),
        threading.Thread(target=reader),
        threading.Thread(target=reader),
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out["concurrent_threads"] = {
        "threads": "1 writer + 2 readers, 2 s",
        "errors": errors[:5],
        "points_upserted": counters["upserts"],
        "points_retrieved": counters["retrieves"],
        "final_count": be.count(),
        "expected_count": n + 1 + counters["upserts"],
    }

    # (c) GIL: does a long native call let a pure-Python thread run?
    queries = [vecs[i].tolist() for i in range(64)]
    req = q.QueryBatchRequest(
        [
            q.QueryRequest(
                query=q.Query.Nearest(v), limit=10, with_payload=False, with_vector=False
            )
            for v in queries
        ]
    )

    def native_call():
        be.shard.query_batch(req)

    native_call()  # warm
    reps = 5
    t0 = time.perf_counter()
    for _ in range(reps):
        native_call()
    call_s = (time.perf_counter() - t0) / reps

    def ticks_during(fn, seconds: float) -> tuple[int, float]:
        stop_evt = threading.Event()
        box = {"ticks": 0, "maxgap": 0.0}

        def ticker():
            last = time.perf_counter()
            c = 0
            mg = 0.0
            while not stop_evt.is_set():
                now = time.perf_counter()
                if now - last > mg:
                    mg = now - last
                last = now
                c += 1
            box["ticks"], box["maxgap"] = c, mg

        th = threading.Thread(target=ticker)
        th.start()
        time.sleep(0.02)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            fn()
        stop_evt.set()
        th.join()
        return box["ticks"], box["maxgap"]

    idle_ticks, _idle_gap = ticks_during(lambda: time.sleep(0.01), 1.0)
    busy_ticks, busy_gap = ticks_during(native_call, 1.0)
    out["gil_probe"] = {
        "native_call": f"EdgeShard.query_batch(64 full-scan dot queries over {n} x {dim})",
        "native_call_s": round(call_s, 4),
        "ticker_iters_per_s_while_main_sleeps": idle_ticks,
        "ticker_iters_per_s_while_main_in_native_calls": busy_ticks,
        "ticker_max_gap_s_while_native": round(busy_gap, 4),
        "ticker_share_vs_idle": round(busy_ticks / idle_ticks, 3),
        "releases_gil": bool(busy_ticks / idle_ticks > 0.6 and busy_gap < 0.5 * call_s),
        "how_to_read": "if the GIL is held during the call, the pure-Python ticker stalls for the "
        "whole call (max gap ~ native_call_s) and only runs between calls (share << 1); "
        "if released "
        "it keeps running on the other core (share ~ 1, gap ~ switch interval)",
    }

    # (d) same for update (upsert of 256 points; includes conversion)
    upd_ids = [str(uuid.uuid4()) for _ in range(BATCH)]
    upd_pts = [q.Point(i, v, {"created": 1}) for i, v in zip(upd_ids, vl[:BATCH], strict=True)]

    def upd():
        be.shard.update(q.UpdateOperation.upsert_points(upd_pts))

    t0 = time.perf_counter()
    for _ in range(5):
        upd()
    upd_s = (time.perf_counter() - t0) / 5
    upd_ticks, upd_gap = ticks_during(upd, 1.0)
    out["gil_probe_update"] = {
        "native_call": f"EdgeShard.update(upsert_points({BATCH} prebuilt Points, dim {dim}))"
        " (overwrites)",
        "native_call_s": round(upd_s, 4),
        "ticker_max_gap_s_while_native": round(upd_gap, 4),
        "ticker_share_vs_idle": round(upd_ticks / idle_ticks, 3),
        "releases_gil": bool(upd_ticks / idle_ticks > 0.6),
    }
    be.close()

    # (e) a shard created with wal_enabled=False: is the folder still locked?
    p2 = os.path.join(workdir, "edge_nowal")
    shutil.rmtree(p2, ignore_errors=True)
    cfg = be.config(8)
    cfg_nowal = q.EdgeConfig(
        vectors=cfg.vectors[""], hnsw_config=cfg.hnsw_config, wal_enabled=False
    )
    s1 = q.EdgeShard.create(p2, cfg_nowal)
    s1.update(q.UpdateOperation.upsert_points([q.Point(1, [0.0] * 8, {"created": 1})]))
    try:
        s2 = q.EdgeShard.load(p2)
        out["no_wal_second_open_same_process"] = {"opened": True, "error": None}
        s2.close()
    except BaseException as e:
        out["no_wal_second_open_same_process"] = {"opened": False, "error": short_err(e)}
    out["no_wal_second_open_other_process"] = run_child(
        ["--_child", "open", "--backend", "edge", "--path", p2]
    )
    s1.close()
    # use after close
    try:
        s1.count(q.CountRequest())
        out["use_after_close"] = "no error"
    except BaseException as e:
        out["use_after_close"] = short_err(e)
    # create() on an existing shard folder
    try:
        q.EdgeShard.create(p2, cfg_nowal)
        out["create_on_existing"] = "no error"
    except BaseException as e:
        out["create_on_existing"] = short_err(e)
    shutil.rmtree(p2, ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)
    return out


def ratio(a, b):
    try:
        return round(a / b, 2) if a is not None and b not in (None, 0) else None
    except TypeError:
        return None


def print_table(results: dict):
    rows = [
        ("upsert pts/s", lambda r: r["upsert_pts_per_s"], "{:,.0f}"),
        ("retrieve pts/s", lambda r: r["retrieve_pts_per_s"], "{:,.0f}"),
        (
            "reopen+1st retrieve s (in-proc)",
            lambda r: r["reopen_in_process"]["open_plus_first_retrieve_s"],
            "{:.3f}",
        ),
        (
            "reopen+1st retrieve s (child)",
            lambda r: r["reopen_child_process"].get("open_plus_first_retrieve_s"),
            "{:.3f}",
        ),
        (
            "RSS added by open, MB",
            lambda r: r["reopen_child_process"].get("rss_added_mb"),
            "{:.1f}",
        ),
        (
            "peak RSS added by open, MB",
            lambda r: r["reopen_child_process"].get("peak_rss_added_mb"),
            "{:.1f}",
        ),
        (
            "RSS after touching all, MB",
            lambda r: r["reopen_child_process"].get("rss_added_after_touching_all_mb"),
            "{:.1f}",
        ),
        ("disk MB", lambda r: r["disk_mb"], "{:.1f}"),
        ("delete half by filter s", lambda r: r["delete_by_filter_half"]["delete_s"], "{:.3f}"),
        ("float32 bit-exact", lambda r: r["roundtrip_float32_bit_exact"], "{}"),
    ]
    for dim, per in results.items():
        loc, edg = per.get("local"), per.get("edge")
        print(f"\n== dim {dim}, n {results[dim]['edge']['n'] if edg else loc['n']} ==")
        print(f"{'metric':34s} {'local':>14s} {'edge':>14s} {'edge/local':>11s}")
        for label, get, fmt in rows:
            a = get(loc) if loc else None
            b = get(edg) if edg else None
            fa = fmt.format(a) if a is not None else "-"
            fb = fmt.format(b) if b is not None else "-"
            rt = ratio(b, a) if not isinstance(a, bool) else ""
            print(f"{label:34s} {fa:>14s} {fb:>14s} {'' if rt is None else rt:>11}")
        for be in ("local", "edge"):
            r = per.get(be)
            if not r:
                continue
            print(f"  {be}: 2nd open same process -> {r['second_open_same_process']}")
            print(f"  {be}: 2nd open other process -> {r['second_open_other_process']}")


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dims", default="384,1024")
    ap.add_argument("--backends", default="local,edge")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--no-probes", action="store_true", help="skip the edge thread/GIL probes")
    ap.add_argument("--_child", choices=["reopen", "open"], help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--ids-file", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._child == "reopen":
        print(json.dumps(child_reopen(args.backend, args.path, args.ids_file)))
        return
    if args._child == "open":
        print(json.dumps(child_open(args.backend, args.path)))
        return

    t_start = time.perf_counter()
    dims = [int(d) for d in args.dims.split(",")]
    backends = [b for b in args.backends.split(",") if b]
    workdir = args.workdir or tempfile.mkdtemp(prefix="store_backends_")
    os.makedirs(workdir, exist_ok=True)

    def ver(p):
        try:
            return metadata.version(p)
        except metadata.PackageNotFoundError:
            return None

    meta = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "qdrant_client": ver("qdrant-client"),
        "qdrant_edge_py": ver("qdrant-edge-py"),
        "numpy": np.__version__,
        "psutil": ver("psutil"),
        "n": args.n,
        "batch": BATCH,
        "dims": dims,
        "workdir_fs": workdir,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": "DOT, float32, HNSW m=0, payload {'created': int}, uuid ids from sha256[:16]",
    }
    results: dict = {}
    errors: dict = {}
    for dim in dims:
        rng = np.random.default_rng(dim)
        vec_np = rng.standard_normal((args.n, dim)).astype(np.float32)
        vec_np /= np.linalg.norm(vec_np, axis=1, keepdims=True)  # embeddings are normalized
        vec_lists = vec_np.tolist()
        ids = [key_for(f"text {dim} {i}") for i in range(args.n)]
        results[dim] = {}
        for backend in backends:
            print(
                f"[{time.perf_counter() - t_start:6.1f}s] {backend} dim={dim} n={args.n} ...",
                flush=True,
            )
            try:
                results[dim][backend] = bench_backend(
                    backend, dim, args.n, ids, vec_np, vec_lists, workdir
                )
            except BaseException as e:
                errors[f"{backend}_{dim}"] = traceback.format_exc()[-2000:]
                print(f"  FAILED: {short_err(e)}", flush=True)
        for metric in ("upsert_pts_per_s", "retrieve_pts_per_s"):
            if "edge" in results[dim] and "local" in results[dim]:
                results[dim].setdefault("ratios_edge_over_local", {})[metric] = ratio(
                    results[dim]["edge"][metric], results[dim]["local"][metric]
                )
        if "edge" in results[dim] and "local" in results[dim]:
            re_, rl = results[dim]["edge"], results[dim]["local"]
            rr = results[dim]["ratios_edge_over_local"]
            rr["reopen_in_process_s"] = ratio(
                re_["reopen_in_process"]["open_plus_first_retrieve_s"],
                rl["reopen_in_process"]["open_plus_first_retrieve_s"],
            )
            rr["reopen_child_s"] = ratio(
                re_["reopen_child_process"].get("open_plus_first_retrieve_s"),
                rl["reopen_child_process"].get("open_plus_first_retrieve_s"),
            )
            rr["rss_added_mb"] = ratio(
                re_["reopen_child_process"].get("rss_added_mb"),
                rl["reopen_child_process"].get("rss_added_mb"),
            )
    probes = None
    if "edge" in backends and not args.no_probes:
        print(f"[{time.perf_counter() - t_start:6.1f}s] edge thread/GIL probes ...", flush=True)
        try:
            probes = edge_thread_probes(workdir, dim=max(dims), n=args.n)
        except BaseException:
            errors["edge_probes"] = traceback.format_exc()[-2000:]
    meta["total_runtime_s"] = round(time.perf_counter() - t_start, 1)

    print_table(results)
    if probes:
        print("\nedge probes:")
        print(json.dumps(probes, indent=1))
    if errors:
        print("\nERRORS:")
        for k, v in errors.items():
            print(k, v)

    doc = {
        "meta": meta,
        "results": {str(k): v for k, v in results.items()},
        "edge_probes": probes,
        "errors": errors,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=False)
    print(f"\nwrote {args.out}  (total {meta['total_runtime_s']} s)")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
