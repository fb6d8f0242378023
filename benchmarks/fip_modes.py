"""Does the ImageNet prior help? Image2Point's central claim, tested on held-apart simulator drives.

Trains lite0 with the same budget in every FIP mode, with the inflated ImageNet prior and with random
init (``--prior none``; FIP-ALL without a prior is ``scratch``), and validates on a drive built from
other seeds. Reports trainable parameters, the final and best validation mIoU, and the steps needed to
reach each target mIoU; draws the convergence curves. Writes benchmarks/results/fip_modes.{json,png}.
``--from-json`` rebuilds the table and plot from a previous run's curves (e.g. for other targets).

    python benchmarks/fip_modes.py [--steps 300] [--eval-every 30] [--train-scans 24] [--azimuth-steps 1000]
        [--targets 0.2,0.25,0.3] [--from-json benchmarks/results/fip_modes.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, machine_info, write_json  # noqa: E402

from i2p_ros.config import from_mapping  # noqa: E402
from i2p_ros.data.sim import main as sim_main  # noqa: E402
from i2p_ros.distributed import DistInfo  # noqa: E402
from i2p_ros.run_log import read_metrics  # noqa: E402
from i2p_ros.train import Trainer  # noqa: E402
from i2p_ros.train_config import TrainConfig  # noqa: E402

RUNS = [("scratch", "none"), ("io", "imagenet"), ("io", "none"), ("io_bn", "imagenet"), ("io_bn", "none"),
        ("all", "imagenet")]
OUT = Path(__file__).resolve().parent / "results"


def make_data(root: Path, train_scans: int, val_scans: int, azimuth: int) -> None:
    """Train on sequences 00-01 (seed 100), validate on 08 (seed 900): different street layouts."""
    common = ["--azimuth-steps", str(azimuth), "--quiet"]
    assert sim_main(["--out", str(root), "--sequences", "0,1", "--scans", str(train_scans // 2),
                     "--seed", "100", *common]) == 0
    assert sim_main(["--out", str(root), "--sequences", "8", "--scans", str(val_scans), "--seed", "900",
                     *common]) == 0


def run_config(root: Path, fip: str, prior: str, args, model_overrides: list[str] | None = None) -> TrainConfig:
    per_epoch = max(1, (args.train_scans // 2 * 2) // args.batch_size)  # an epoch = one pass over the drive
    epochs = max(1, round(args.steps / per_epoch))
    return from_mapping(TrainConfig, {
        "model": "lite0", "model_overrides": list(model_overrides or []),
        "fip": fip, "prior": prior, "epochs": epochs, "batch_size": args.batch_size,
        "val_every_epochs": max(1, round(args.eval_every / per_epoch)),
        "data": {"root": str(root), "train_split": [0, 1], "val_split": [8], "max_voxels": args.max_voxels,
                 "augment": {"yaw": True, "scale": [0.95, 1.05]}, "num_workers": 0},
        "optim": {"name": "adamw", "lr": args.lr, "weight_decay": 1e-4, "schedule": "cosine",
                  "warmup_steps": 20},
        "log_every_steps": 10, "seed": args.seed, "device": "cpu", "amp": False,
    }, "fip_modes")


def steps_to(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((s for s, m in curve if m >= target), None)


def add_protocol_args(p: argparse.ArgumentParser, azimuth_flag: str = "--azimuth-steps") -> None:
    """The training/validation protocol shared by the benchmarks that train lite0 (defaults: the README's runs)."""
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=30)
    p.add_argument("--train-scans", type=int, default=24)
    p.add_argument("--val-scans", type=int, default=6)
    p.add_argument(azimuth_flag, type=int, default=1000, help="columns per revolution of the simulated drives")
    p.add_argument("--max-voxels", type=int, default=15000)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_protocol_args(p)
    p.add_argument("--targets", default="0.2,0.25,0.3", help="comma-separated val mIoU targets for 'steps to'")
    p.add_argument("--from-json", type=Path, default=None, help="re-tabulate a previous run (no training)")
    p.add_argument("--out", type=Path, default=OUT / "fip_modes.json", help="JSON path (the PNG goes next to it)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default=None, help="comma-separated fip:prior runs, e.g. io_bn:imagenet")
    args = p.parse_args()
    targets = [float(t) for t in args.targets.split(",")]
    if args.from_json:
        previous = json.loads(args.from_json.read_text())
        results, settings = previous["results"], {**previous["settings"], "targets": args.targets}
    else:
        results, settings = _train_all(args), vars(args)
    for r in results:
        r["steps_to"] = {f"{t:g}": steps_to(r["curve"], t) for t in targets}
    header = ["FIP mode", "prior", "trainable params", "final val mIoU %", "best val mIoU %",
              *[f"steps to {100 * t:g}%" for t in targets]]
    table = [[r["fip"], r["prior"], f"{r['trainable']:,}", 100 * r["final_val_miou"], 100 * r["best_val_miou"],
              *[r["steps_to"][f"{t:g}"] or "not reached" for t in targets]] for r in results]
    print(format_table(header, table))
    write_json(args.out, {"benchmark": "fip_modes", "machine": machine_info(),
                                        "settings": {k: str(v) if isinstance(v, Path) else v
                                                     for k, v in settings.items()},
                                        "results": results})
    _plot(results, args.out.with_suffix(".png"), targets)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def _train_all(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    runs = RUNS if not args.only else [tuple(r.split(":")) for r in args.only.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sim"
        make_data(root, args.train_scans, args.val_scans, args.azimuth_steps)
        for fip, prior in runs:
            t0 = time.perf_counter()
            out = Path(tmp) / f"{fip}_{prior}"
            trainer = Trainer(run_config(root, fip, prior, args), out, DistInfo(0, 1, 0, torch.device("cpu")),
                              progress=False)
            trainer.fit()
            rows = read_metrics(out / "metrics.jsonl")
            curve = [(r["step"], r["val/miou"]) for r in rows if "val/miou" in r]
            results.append({
                "fip": fip, "prior": prior, "trainable": trainer.fip_plan.trainable_count,
                "total": trainer.fip_plan.total_count, "final_val_miou": curve[-1][1] if curve else None,
                "best_val_miou": max(m for _, m in curve) if curve else None, "curve": curve,
                "minutes": (time.perf_counter() - t0) / 60,
            })
            r = results[-1]
            print(f"{fip:>7} prior={prior:<8} val mIoU {100 * r['final_val_miou']:.1f} "
                  f"(best {100 * r['best_val_miou']:.1f}) in {r['minutes']:.1f} min", flush=True)
    return results


def _plot(results: list[dict], path: Path, targets: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in results:
        if r["curve"]:
            s, m = zip(*r["curve"])
            ax.plot(s, [100 * v for v in m], marker="o", ms=3, ls="-" if r["prior"] == "imagenet" else "--",
                    label=f"{r['fip']} / {r['prior']}")
    for t in targets:
        ax.axhline(100 * t, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("training step")
    ax.set_ylabel("val mIoU % (held-apart drive)")
    ax.set_title("lite0 on simulated scans: FIP modes, ImageNet prior vs random init")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
