"""Run logging on rank 0: ``metrics.jsonl`` (one JSON object per line), TensorBoard when installed, and a
loss / mIoU curve PNG redrawn after every epoch."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["RunLog", "read_metrics"]


class RunLog:
    def __init__(self, out_dir: str | os.PathLike, enabled: bool = True) -> None:
        self.out = Path(out_dir)
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        try:  # TensorBoard is optional
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(self.out / "tb"))
        except Exception:  # ImportError, or tensorboard missing behind torch's import
            self._tb = None

    def write_config(self, config: dict) -> None:
        if self.enabled:
            (self.out / "config.json").write_text(json.dumps(config, indent=2))

    def scalars(self, step: int, values: dict, epoch: int | None = None) -> None:
        if not self.enabled:
            return
        row = {"step": step, **({"epoch": epoch} if epoch is not None else {}), **values}
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def plot_curves(self) -> Path | None:
        if not self.enabled:
            return None
        return plot_curves(self.out / "metrics.jsonl", self.out / "curves.png")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def plot_curves(metrics_path: str | os.PathLike, png: str | os.PathLike) -> Path | None:
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    loss = [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
    if loss:
        ax1.plot(*zip(*loss), lw=1)
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    for key, label in (("train/miou", "train mIoU (voxels)"), ("val/miou", "val mIoU (points)")):
        pts = [(r["step"], 100 * r[key]) for r in rows if key in r]
        if pts:
            ax2.plot(*zip(*pts), marker="o", label=label)
    ax2.set_xlabel("step")
    ax2.set_ylabel("mIoU %")
    ax2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return Path(png)
