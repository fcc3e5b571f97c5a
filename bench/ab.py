#!/usr/bin/env python
"""A/B an engine patch: the installed ``cached_tei`` against a patched copy, interleaved.

    cp -r core/cached_tei /tmp/patched/ && (edit /tmp/patched/cached_tei/...)
    .venv/bin/python bench/ab.py /tmp/patched --scenario cold --dim 1024 --reps 4

Runs the same worker (bench/worker.py) alternately with each engine on one cluster and
prints the median of each and their ratio (B/A: > 1 means the patch is faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measure
from infra import make_cluster


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("patched", help="folder containing a patched cached_tei package")
    ap.add_argument("--scenario", default="cold", choices=["cold", "warm", "hot", "mixed"])
    ap.add_argument("--contender", default="cached-tei")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--call", type=int, default=0, help="hot: texts per call (0: all)")
    args = ap.parse_args()
    wd = Path(tempfile.mkdtemp(prefix="cached-tei-ab-"))
    cluster = make_cluster(wd, replicas=4, dim=args.dim).start()
    out: dict[str, list[float]] = {"A": [], "B": []}
    try:
        fill = None
        if args.scenario == "warm":
            fill = str(wd / "filled")
            measure.worker(
                {
                    "scenario": "cold",
                    "contender": "cached-tei",
                    "url": cluster.url,
                    "n": args.n,
                    "dim": args.dim,
                    "path": fill,
                },
                cluster,
            )
        for i in range(args.reps):
            for label, path in (("A", None), ("B", args.patched)):
                measure.ENGINE_PATH = path
                spec = {
                    "scenario": args.scenario,
                    "contender": args.contender,
                    "url": cluster.url,
                    "n": args.n,
                    "dim": args.dim,
                    "path": fill or str(wd / f"{label}-{i}"),
                    "seed": 10 + i if args.scenario == "mixed" else 0,
                    "repeats": 5,
                    "call": args.call or args.n,
                }
                r = measure.worker(spec, cluster)
                value = r["ratio_to_scaled_cold"] if args.scenario == "mixed" else r["seconds"]
                out[label].append(value)
                measure.log(f"{label} #{i}: {value:.4f} (client cpu {r.get('cpu_s', 0):.2f}s)")
    finally:
        cluster.stop()
    a, b = statistics.median(out["A"]), statistics.median(out["B"])
    print(
        json.dumps(
            {
                "scenario": args.scenario,
                "dim": args.dim,
                "n": args.n,
                "A_installed": out["A"],
                "B_patched": out["B"],
                "median_A": a,
                "median_B": b,
                "speedup_B_over_A": a / b,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
