"""The bag evaluation report: numbers (JSON), a printed table and plots (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .stats import percentiles

__all__ = ["FrameRecord", "format_table", "latency_summary", "save_plots", "write_json"]


@dataclass
class FrameRecord:
    """What came back for one published frame (``labeled`` False = dropped)."""

    index: int
    stamp_ns: int
    num_points: int
    labeled: bool = False
    points_preserved: bool | None = None    # every input point back, same order, same x/y/z
    end_to_end_ms: float | None = None      # publish -> labeled cloud received (same process clock)
    stages_ms: dict[str, float] = field(default_factory=dict)   # from the node's latency topic


def latency_summary(frames: Sequence[FrameRecord], stage_order: Sequence[str]) -> dict[str, dict[str, float]]:
    """p50/p95/p99/mean/max per stage and end to end, over labeled frames."""
    out: dict[str, dict[str, float]] = {}
    series: dict[str, list[float]] = {"end_to_end": [f.end_to_end_ms for f in frames if f.end_to_end_ms is not None]}
    keys = list(stage_order) + sorted({k for f in frames for k in f.stages_ms} - set(stage_order))
    for k in keys:
        vals = [f.stages_ms[k] for f in frames if k in f.stages_ms]
        if vals:
            series[k] = vals
    for k, vals in series.items():
        if not vals:
            continue
        stats = percentiles(vals)
        stats.update({"mean": float(np.mean(vals)), "max": float(np.max(vals)), "n": len(vals)})
        out[k] = stats
    return out


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def format_table(report: dict) -> str:
    """Human-readable summary: frames, accuracy per class, latency per stage."""
    lines = [f"bag {report['bag']}  ({report['mode']}, rate {report['rate']})",
             f"frames: {report['published']} published, {report['labeled']} labeled, {report['dropped']} dropped"
             f"{'' if report['points_preserved'] else ', POINT MISMATCH in ' + str(report['point_mismatches'])}",
             "", f"mIoU {_fmt(100 * report['miou'] if report['miou'] is not None else None)} %   "
             f"accuracy {_fmt(100 * report['accuracy'] if report['accuracy'] is not None else None)} %",
             f"{'class':<16}{'IoU %':>8}"]
    for name, iou in report["iou"].items():
        lines.append(f"{name:<16}{_fmt(None if iou is None else 100 * iou):>8}")
    lines += ["", f"{'latency ms':<16}{'p50':>9}{'p95':>9}{'p99':>9}{'mean':>9}{'n':>6}"]
    for stage, s in report["latency_ms"].items():
        lines.append(f"{stage:<16}{_fmt(s['p50'], 2):>9}{_fmt(s['p95'], 2):>9}{_fmt(s['p99'], 2):>9}"
                     f"{_fmt(s['mean'], 2):>9}{s['n']:>6}")
    return "\n".join(lines)


def write_json(report: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, allow_nan=False, default=_json_default) + "\n")
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_plots(report: dict, frames: Sequence[FrameRecord], out_dir: Path,
               stage_order: Sequence[str]) -> list[Path]:
    """latency_hist.png, latency_timeline.png and class_iou.png in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    done = [f for f in frames if f.labeled]

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, label in (("end_to_end", "end to end"), ("total", "node total"), ("network", "network")):
        vals = [f.end_to_end_ms if key == "end_to_end" else f.stages_ms.get(key) for f in done]
        vals = [v for v in vals if v is not None]
        if vals:
            ax.hist(vals, bins=min(50, max(5, len(vals) // 2)), alpha=0.5, label=f"{label} (p50 {np.median(vals):.1f})")
    ax.set_xlabel("latency [ms]")
    ax.set_ylabel("frames")
    ax.set_title("latency per frame")
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "latency_hist.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4.5))
    idx = np.array([f.index for f in done])
    bottom = np.zeros(len(done))
    # stack the parts only: kernel maps are inside network, processing and total are sums
    for stage in [s for s in stage_order if s not in ("kernel_maps", "processing", "total", "end_to_end")]:
        vals = np.array([f.stages_ms.get(stage, 0.0) for f in done])
        if vals.any():
            ax.bar(idx, vals, bottom=bottom, width=1.0, label=stage)
            bottom += vals
    if done:
        ax.plot(idx, [f.stages_ms.get("total", np.nan) for f in done], "b.-", lw=0.8, label="node total")
        ax.plot(idx, [f.end_to_end_ms for f in done], "k.-", lw=0.8, label="end to end")
    dropped = [f.index for f in frames if not f.labeled]
    if dropped:
        ax.plot(dropped, np.zeros(len(dropped)), "rx", label="dropped")
    ax.set_xlabel("frame")
    ax.set_ylabel("ms")
    ax.set_title("per-stage latency over the bag")
    ax.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    paths.append(out_dir / "latency_timeline.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    names = list(report["iou"])
    vals = [np.nan if v is None else 100 * v for v in report["iou"].values()]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar(range(len(names)), np.nan_to_num(vals), color=["#888" if np.isnan(v) else "#3a7" for v in vals])
    if report["miou"] is not None:
        ax.axhline(100 * report["miou"], color="k", ls="--", label=f"mIoU {100 * report['miou']:.1f}")
        ax.legend()
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("IoU %")
    ax.set_ylim(0, 100)
    ax.set_title("per-class IoU (grey: class absent)")
    fig.tight_layout()
    paths.append(out_dir / "class_iou.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
