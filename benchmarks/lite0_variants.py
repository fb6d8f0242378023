"""Speed/accuracy trade-off of lite0 architecture variants for CPU deployment.

Each variant is a set of model-config overrides of ``config/models/lite0.yaml``. For each one:

* **accuracy**: the ``fip_modes`` protocol (benchmarks/fip_modes.py): FIP-ALL from the ImageNet prior, the
  same budget (``--steps``), trained on simulated drives 00-01 (seed 100) and validated on a held-apart
  drive 08 (seed 900); reports the final and best val mIoU;
* **speed**: untrained weights (speed does not depend on them), ``torch.set_num_threads(--threads)``,
  ``SegmentationPipeline.segment`` on full-size simulated scans (~120k points, HDL-64E geometry): median
  end-to-end ms over ``--runs`` frames, run variant by variant in rounds so machine load hits all alike; the
  ratio is each variant's time over the first variant's (the baseline) in the same run.

Writes benchmarks/results/lite0_variants.json.

    python benchmarks/lite0_variants.py [--steps 300] [--runs 15] [--only A,E] [--train E] [--skip-training]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, machine_info, write_json  # noqa: E402
from fip_modes import add_protocol_args, make_data, run_config  # noqa: E402

from i2p_ros.data.labels import load_label_config  # noqa: E402
from i2p_ros.data.raycast import SensorConfig  # noqa: E402
from i2p_ros.data.street import generate_drive  # noqa: E402
from i2p_ros.distributed import DistInfo  # noqa: E402
from i2p_ros.models.build import build_model, load_model_config  # noqa: E402
from i2p_ros.pipeline import SegmentationPipeline  # noqa: E402
from i2p_ros.run_log import read_metrics  # noqa: E402
from i2p_ros.train import Trainer  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
# Every knob is set explicitly, so a variant does not change when config/models/lite0.yaml does.
V1 = ["encoder.stem_kernel=3", "decoder.kernels=[3,3,3,3]", "encoder.stages=5", "decoder.channels=[64,48,32,32]"]
FAST = ["encoder.stem_kernel=1", "decoder.kernels=[3,3,3,1]"]
SLIM = [*FAST, "encoder.stages=4", "decoder.channels=[48,32,24,16]"]
VARIANTS = {
    "A": ("lite0 v1: 0.1 m, 5 stages, 3³ stem, decoder 64/48/32/32 all 3³", [*V1, "voxel_size=0.1"]),
    "B": ("A with 1³ stem and 1³ last decoder stage",
          [*FAST, "encoder.stages=5", "decoder.channels=[64,48,32,32]", "voxel_size=0.1"]),
    "C": ("B with 4 stages (to stride 16, 80 ch)",
          [*FAST, "encoder.stages=4", "decoder.channels=[64,48,32,32]", "voxel_size=0.1"]),
    "E": ("C with decoder 48/32/24/16", [*SLIM, "voxel_size=0.1"]),
    "F": ("E at 0.15 m voxels", [*SLIM, "voxel_size=0.15"]),
    "H": ("E at 0.2 m voxels (lite0 v2, the shipped config)", [*SLIM, "voxel_size=0.2"]),
    "G": ("H with 3 stages (to stride 8, 40 ch)", [*FAST, "encoder.stages=3", "decoder.channels=[32,24,16]",
                                                   "decoder.kernels=[3,3,1]", "voxel_size=0.2"]),
    "A2": ("A at 0.2 m voxels", [*V1, "voxel_size=0.2"]),
}


def scans(n: int, azimuth_steps: int) -> list[torch.Tensor]:
    sensor = dataclasses.replace(SensorConfig(), azimuth_steps=azimuth_steps)
    drive = generate_drive(n, seed=11, sequence=0, sensor=sensor)
    return [torch.from_numpy(drive.scan(i).points[:, :4].copy()) for i in range(n)]


def time_variants(names: list[str], args) -> dict[str, dict]:
    torch.set_num_threads(args.threads)
    lc = load_label_config()
    raw = [int(r) for r in lc.train_to_raw_lut[: lc.num_classes]]
    clouds = scans(args.scans, args.azimuth_steps)
    pipes, params = {}, {}
    for name in names:
        cfg = load_model_config("lite0", VARIANTS[name][1])
        torch.manual_seed(0)
        model, _ = build_model(cfg, prior="none")
        params[name] = sum(p.numel() for p in model.parameters())  # before the pipeline folds its BatchNorms
        pipes[name] = SegmentationPipeline(model, cfg, raw, device="cpu", num_threads=args.threads)
    times: dict[str, list[float]] = {n: [] for n in names}
    voxels: dict[str, list[int]] = {n: [] for n in names}
    for r in range(args.runs):
        for name in names:
            res = pipes[name].segment(clouds[r % len(clouds)].numpy())
            times[name].append(res.timings_ms["total"])
            voxels[name].append(res.num_voxels)
    return {n: {"median_ms": statistics.median(t), "params": params[n],
                "voxels_mean": statistics.mean(voxels[n]), "points_mean": statistics.mean(len(c) for c in clouds)}
            for n, t in times.items()}


def train_variants(names: list[str], args) -> dict[str, dict]:
    torch.set_num_threads(args.threads)
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sim"
        make_data(root, args.train_scans, args.val_scans, args.train_azimuth_steps)
        for name in names:
            t0 = time.perf_counter()
            run = Path(tmp) / name
            cfg = run_config(root, "all", "imagenet", args, VARIANTS[name][1])
            Trainer(cfg, run, DistInfo(0, 1, 0, torch.device("cpu")), progress=False).fit()
            curve = [(r["step"], r["val/miou"]) for r in read_metrics(run / "metrics.jsonl") if "val/miou" in r]
            out[name] = {"final_val_miou": curve[-1][1], "best_val_miou": max(m for _, m in curve), "curve": curve,
                         "train_minutes": (time.perf_counter() - t0) / 60}
            print(f"{name}: val mIoU {100 * curve[-1][1]:.1f} (best {100 * out[name]['best_val_miou']:.1f}) "
                  f"in {out[name]['train_minutes']:.1f} min", flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(VARIANTS),
                   help="comma-separated variant names; the first is the baseline")
    add_protocol_args(p, azimuth_flag="--train-azimuth-steps")
    p.add_argument("--runs", type=int, default=15, help="timed frames per variant")
    p.add_argument("--scans", type=int, default=3)
    p.add_argument("--azimuth-steps", type=int, default=2200, help="2200 columns ~ 120k points per scan")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-training", action="store_true", help="speed only")
    p.add_argument("--train", default=None, help="comma-separated variants to train (default: all of --only)")
    p.add_argument("--out", type=Path, default=OUT / "lite0_variants.json")
    args = p.parse_args()
    names = args.only.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; have {list(VARIANTS)}")
    speed = time_variants(names, args)
    to_train = names if args.train is None else [n for n in args.train.split(",") if n]
    acc = {} if args.skip_training else train_variants(to_train, args)
    base = speed[names[0]]["median_ms"]
    header = ["variant", "what", "params", "voxels", "e2e median ms", f"/ {names[0]}",
              "final val mIoU %", "best val mIoU %"]
    rows = []
    for n in names:
        a = acc.get(n, {})
        rows.append([n, VARIANTS[n][0], f"{speed[n]['params']:,}", f"{speed[n]['voxels_mean']:,.0f}",
                     speed[n]["median_ms"],
                     f"{speed[n]['median_ms'] / base:.2f}",
                     100 * a["final_val_miou"] if a else "-", 100 * a["best_val_miou"] if a else "-"])
    print(format_table(header, rows))
    write_json(args.out, {"benchmark": "lite0_variants", "machine": machine_info(),
                          "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                          "variants": {n: {"what": VARIANTS[n][0], "overrides": VARIANTS[n][1], **speed[n],
                                           **acc.get(n, {})} for n in names}})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
