"""How the benchmarks measure and report: one measurement per fresh worker process with the
CPU every party used meanwhile, and a table of ratios against targets."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil
from infra import REPO

HERE = Path(__file__).resolve().parent
PY = sys.executable
# A folder holding a patched ``cached_tei`` package to measure instead of the installed one
# (bench/ab.py sets it; the proxy and ``cached-tei embed`` children get it too).
ENGINE_PATH: str | None = None


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def child_pythonpath(env: dict[str, str]) -> str:
    """PYTHONPATH for a child: the patched engine first (if any), the repository, then env's."""
    return os.pathsep.join(
        p for p in (ENGINE_PATH or "", str(REPO), env.get("PYTHONPATH", "")) if p
    )


def _busy(t: Any) -> float:
    return t.user + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + t.nice


class CPUWatch:
    """System-wide and per-process CPU seconds over an interval (children included: nginx
    and uvicorn workers)."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.procs = []
        for pid in pids:
            try:
                self.procs.append(psutil.Process(pid))
            except psutil.Error:
                pass

    def _proc_cpu(self) -> float:
        total = 0.0
        for p in self.procs:
            try:
                for q in (p, *p.children(recursive=True)):
                    t = q.cpu_times()
                    total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def __enter__(self) -> CPUWatch:
        self.t0 = time.perf_counter()
        self.sys0 = psutil.cpu_times()
        self.p0 = self._proc_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.sys_busy_s = _busy(psutil.cpu_times()) - _busy(self.sys0)
        self.server_cpu_s = self._proc_cpu() - self.p0
        self.cores_busy = self.sys_busy_s / self.wall if self.wall else 0.0


def worker(
    spec: dict, cluster: Any = None, timeout: float = 300, script: str = "worker.py"
) -> dict:
    """Run one measurement in a new process; attach the CPU the servers spent meanwhile."""
    env = dict(os.environ)
    env["PYTHONPATH"] = child_pythonpath(env)
    env.setdefault("OPENAI_API_KEY", "unused")
    watch = CPUWatch(cluster.pids() if cluster else [])
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with watch:
        proc = subprocess.run(
            [PY, str(HERE / script), json.dumps(spec)],
            cwd=str(REPO),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"worker failed ({proc.returncode}) for "
            f"{spec.get('scenario')}/{spec.get('contender')}:\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    result = json.loads(lines[-1][7:])
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu = (children1.ru_utime + children1.ru_stime) - (
        children0.ru_utime + children0.ru_stime
    )
    result["servers_cpu_s"] = round(watch.server_cpu_s, 3)
    result["worker_cpu_s"] = round(worker_cpu, 3)
    # CPU that neither the worker nor the servers used: other processes on this machine
    # (a noisy neighbour makes every ratio less reliable; it is recorded, not hidden).
    result["others_cpu_s"] = round(max(0.0, watch.sys_busy_s - watch.server_cpu_s - worker_cpu), 3)
    result["wall_s"] = round(watch.wall, 3)
    result["machine_cores_busy"] = round(watch.cores_busy, 2)
    return result


def tput(r: dict) -> float:
    return r["texts"] / r["seconds"]


def _fmt(value: Any) -> str:
    """A table cell: '-' for nothing, two decimals below 100, thousands separators above."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


_TARGET = re.compile(r"^(>=|<=)\s*([\d.]+)$")


def parse_target(target: str) -> tuple[str, float] | None:
    """``">= 3"`` -> ``(">=", 3.0)``; None for a target that is not one number."""
    m = _TARGET.match(target.strip())
    return (m.group(1), float(m.group(2))) if m else None


class Report:
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.data: dict = {}

    def _row(self, scenario, what, ours, theirs, ratio, target, status, note) -> None:
        self.rows.append(
            {
                "scenario": scenario,
                "what": what,
                "cached_tei": ours,
                "anchor": theirs,
                "ratio": ratio,
                "target": target,
                "status": status,
                "note": note,
            }
        )

    def target(
        self,
        scenario: str,
        what: str,
        ours: float | None,
        theirs: float | None,
        ratio: float,
        target: str,
        ok: bool | None = None,
        note: str = "",
    ) -> None:
        """A row with a target: it passes when ``ratio`` meets a numeric ``target`` (``">= 3"``,
        ``"<= 0.5"``) and ``ok`` (e.g. no errors) is not False; a target that is not one number
        is judged by ``ok`` alone."""
        bound = parse_target(target)
        met = ok is not False
        if bound is not None:
            op, value = bound
            met = met and (ratio >= value if op == ">=" else ratio <= value)
        status = "pass" if met else "MISS"
        self._row(scenario, what, ours, theirs, ratio, target, status, note)

    def info(self, scenario: str, what: str, ours, theirs=None, ratio=None, note: str = "") -> None:
        self._row(scenario, what, ours, theirs, ratio, "", "info", note)

    def markdown(self) -> str:
        out = [
            "| scenario | measure | cached-tei | other | ratio | target | status | note |",
            "|---|---|---:|---:|---:|---|---|---|",
        ]
        for r in self.rows:
            status = {"pass": "pass", "MISS": "**MISS**"}.get(r["status"], r["status"])
            out.append(
                f"| {r['scenario']} | {r['what']} | {_fmt(r['cached_tei'])} | "
                f"{_fmt(r['anchor'])} | {_fmt(r['ratio'])} | {r['target']} | {status} | "
                f"{r['note']} |"
            )
        return "\n".join(out) + "\n"

    def table(self) -> str:
        head = ["scenario", "measure", "cached-tei", "other", "ratio", "target", "status"]
        body = [
            [
                r["scenario"],
                r["what"],
                _fmt(r["cached_tei"]),
                _fmt(r["anchor"]),
                _fmt(r["ratio"]),
                r["target"],
                r["status"],
            ]
            for r in self.rows
        ]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]

        def line(cells: list[str]) -> str:
            return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True))

        out = [line(head), line(["-" * w for w in widths])]
        out += [line(b) for b in body]
        return "\n".join(out)
