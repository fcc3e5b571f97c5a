"""A picture of a run: each target's ratio against its target, as headroom on one scale.

Headroom is ratio / target for ">=" targets and target / ratio for "<=" ones, so that 1 is
the target, right of it passes and left of it misses, whatever the direction; each bar is
labelled with the ratio and the target as the table gives them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from measure import parse_target


def write_plot(rows: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Write the PNG; False (nothing written) when no row has a numeric target."""
    bars = []
    for r in rows:
        target = parse_target(r["target"]) if r["ratio"] else None
        if target is None or r["status"] not in ("pass", "MISS"):
            continue
        op, bound = target
        headroom = r["ratio"] / bound if op == ">=" else bound / r["ratio"]
        label = f"{r['scenario']}: {r['what']}"
        bars.append((label, headroom, f"{r['ratio']:.2f} (target {op} {bound:g})", r["status"]))
    if not bars:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    bars.reverse()  # first row at the top
    fig, ax = plt.subplots(figsize=(11, 0.42 * len(bars) + 1.4))
    ys = range(len(bars))
    colors = ["#2e7d32" if status == "pass" else "#c62828" for *_, status in bars]
    ax.barh(ys, [b[1] for b in bars], color=colors, height=0.6, left=0)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_yticks(list(ys), [b[0] for b in bars], fontsize=8)
    low = min(0.5, min(b[1] for b in bars) / 1.5)
    high = max(2.0, max(b[1] for b in bars) * 3)
    ax.set_xlim(low, high)
    for y, (_, headroom, text, _) in zip(ys, bars, strict=True):
        box = {"facecolor": "white", "edgecolor": "none", "pad": 1, "alpha": 0.85}
        ax.text(headroom * 1.05, y, text, va="center", fontsize=7.5, bbox=box)
    ax.set_xlabel("headroom over the target (log scale): right of 1 passes, left misses")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
