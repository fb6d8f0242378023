"""LiDAR simulator front end: simulated drives written as SemanticKITTI sequences, and the ``i2p-sim`` CLI.

The pieces live in two modules: :mod:`i2p_ros.data.raycast` (sensor model, primitives, ray casting)
and :mod:`i2p_ros.data.street` (procedural streets and drives). This module ties them to the dataset
writer so simulated data is byte-for-byte in the official layout::

    i2p-sim --out DIR --sequences 00,01 --scans 100 --seed 0 [--azimuth-steps 2000] [--bev-every 10]

writes ``DIR/sequences/NN/{velodyne,labels}/NNNNNN.*`` plus ``poses.txt`` (KITTI convention: camera-0
frame, relative to the first scan), ``calib.txt`` (P0..P3 and Tr velodyne -> camera) and ``times.txt``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .labels import LabelConfig, load_label_config
from .raycast import HDL64_ELEVATIONS_DEG, Scene, SensorConfig, SimScan, simulate_scan
from .semantic_kitti import ScanRef, camera_poses, sequence_name, write_scan, write_sequence_meta
from .street import Drive, RawId, generate_drive

__all__ = [
    "HDL64_ELEVATIONS_DEG",
    "KITTI_CALIB",
    "Drive",
    "RawId",
    "Scene",
    "SensorConfig",
    "SimScan",
    "generate_drive",
    "main",
    "simulate_scan",
    "write_drive",
]

# Velodyne -> camera 0 (x right, y down, z forward), close to KITTI's odometry calibration, and the
# rectified camera projections P0..P3 (only carried along so calib.txt has the full official content).
_TR = np.array([[0.0, -1.0, 0.0, -0.004],
                [0.0, 0.0, -1.0, -0.076],
                [1.0, 0.0, 0.0, -0.272],
                [0.0, 0.0, 0.0, 1.0]])
_F, _CX, _CY, _BASE = 718.856, 607.1928, 185.2157, 0.5372
KITTI_CALIB: dict[str, np.ndarray] = {
    "P0": np.array([[_F, 0, _CX, 0], [0, _F, _CY, 0], [0, 0, 1, 0]], dtype=float),
    "P1": np.array([[_F, 0, _CX, -_F * _BASE], [0, _F, _CY, 0], [0, 0, 1, 0]], dtype=float),
    "P2": np.array([[_F, 0, _CX, 45.38225], [0, _F, _CY, -0.1130887], [0, 0, 1, 0.003779761]], dtype=float),
    "P3": np.array([[_F, 0, _CX, -337.2877], [0, _F, _CY, 2.369057], [0, 0, 1, 0.004915215]], dtype=float),
    "Tr": _TR,
}


def write_drive(drive: Drive, root: str | os.PathLike, sequence: int | str, *, progress=None,
                bev_every: int = 0, label_config: LabelConfig | None = None) -> list[ScanRef]:
    """Simulate every scan of ``drive`` and write it as sequence ``sequence`` under ``root``.

    ``progress`` is anything with ``update(n)`` (a tqdm bar). ``bev_every`` > 0 also saves a
    bird's-eye-view PNG of every k-th scan to ``root/bev/NN_NNNNNN.png``.
    """
    refs = []
    for i in range(len(drive)):
        scan = drive.scan(i)
        refs.append(write_scan(root, sequence, i, scan.points, scan.semantic, scan.instance))
        if bev_every > 0 and i % bev_every == 0:
            from .bev import save_bev

            name = f"{sequence_name(sequence)}_{i:06d}"
            save_bev(Path(root) / "bev" / f"{name}.png", scan.points, scan.semantic, label_config,
                     titles=[f"sequence {sequence_name(sequence)} scan {i}"])
        if progress is not None:
            progress.update(1)
    write_sequence_meta(root, sequence, poses=camera_poses(drive.relative_poses(), KITTI_CALIB["Tr"]),
                        calib=KITTI_CALIB, times=drive.times)
    return refs


def _parse_sequences(text: str) -> list[int]:
    try:
        seqs = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        msg = f"--sequences must be comma-separated numbers like 00,01, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not seqs or min(seqs) < 0 or max(seqs) > 99:
        raise argparse.ArgumentTypeError(f"--sequences must list numbers in 0..99, got {text!r}")
    return seqs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i2p-sim", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="dataset root (sequences/NN/... are created in it)")
    p.add_argument("--sequences", type=_parse_sequences, default=[0], help="comma-separated sequence numbers")
    p.add_argument("--scans", type=int, default=100, help="scans per sequence")
    p.add_argument("--seed", type=int, default=0, help="layout seed (each sequence also mixes in its number)")
    p.add_argument("--azimuth-steps", type=int, default=SensorConfig.azimuth_steps,
                   help="columns per revolution (2000 ~ HDL-64E at 10 Hz; fewer for quick tests)")
    p.add_argument("--max-range", type=float, default=SensorConfig.max_range, help="metres")
    p.add_argument("--bev-every", type=int, default=0, help="save a BEV PNG of every k-th scan into OUT/bev (0: off)")
    p.add_argument("--label-config", type=Path, default=None, help="semantic-kitti.yaml for the BEV colours")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.scans < 1:
        print("i2p-sim: --scans must be >= 1", file=sys.stderr)
        return 2
    if args.seed < 0:
        print("i2p-sim: --seed must be >= 0", file=sys.stderr)
        return 2
    from tqdm import tqdm

    sensor = dataclasses.replace(SensorConfig(), azimuth_steps=args.azimuth_steps, max_range=args.max_range)
    cfg = load_label_config(args.label_config) if args.bev_every > 0 else None
    total_points, t0 = 0, time.perf_counter()
    with tqdm(total=args.scans * len(args.sequences), unit="scan", disable=args.quiet, desc="i2p-sim") as bar:
        for seq in args.sequences:
            drive = generate_drive(args.scans, seed=args.seed, sequence=seq, sensor=sensor)
            refs = write_drive(drive, args.out, seq, progress=bar, bev_every=args.bev_every, label_config=cfg)
            total_points += sum(r.velodyne.stat().st_size // 16 for r in refs)
    n = args.scans * len(args.sequences)
    dt = time.perf_counter() - t0
    print(f"i2p-sim: wrote {n} scans ({total_points / n:.0f} points/scan) in sequences "
          f"{','.join(sequence_name(s) for s in args.sequences)} under {args.out} ({dt / n:.2f} s/scan)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
