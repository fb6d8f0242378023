"""LiDAR simulator speed and realism: seconds per scan, points per scan, class frequencies.

Runs on one core (numpy threads pinned to 1 before import). Baseline for the speed ratio, measured in
the same run: the same ray caster without the per-primitive angular culling (every primitive against
every ray). Class frequencies are averaged over scans of several seeds and shown next to SemanticKITTI's
own ``content`` ratios from config/semantic-kitti.yaml, mapped to the 19 training classes.

    .venv/bin/python benchmarks/simulator.py [--seeds 4] [--scans-per-seed 5] [--out benchmarks/results/simulator.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from i2p_ros.data.labels import IGNORE_INDEX, load_label_config  # noqa: E402
from i2p_ros.data.raycast import simulate_scan  # noqa: E402
from i2p_ros.data.street import generate_drive  # noqa: E402


def _timed(fn, repeats: int) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--scans-per-seed", type=int, default=5)
    ap.add_argument("--brute-force-repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "simulator.json")
    args = ap.parse_args()
    cfg = load_label_config()

    # --- speed -----------------------------------------------------------------------------------
    rows = []
    n_scans = 50
    gen_times, drive = _timed(lambda: generate_drive(n_scans, seed=0), 3)
    full = drive.sensor
    idx = list(range(0, n_scans, 5))
    for name, sensor in (("full 64x2000", full), ("reduced 64x500", dataclasses.replace(full, azimuth_steps=500))):
        d = dataclasses.replace(drive, sensor=sensor)
        times, pts = [], []
        for i in idx:
            t, scan = _timed(lambda i=i, d=d: d.scan(i), 1)
            times += t
            pts.append(len(scan.points))
        rows.append({"case": f"{name}, culled", "median_s": statistics.median(times), "min_s": min(times),
                     "max_s": max(times), "points_per_scan": float(np.mean(pts)), "scans": len(times)})
    # the baseline casts scan 0 with the same noise seed as Drive.scan(0), so the output must be identical
    bf_times, bf = _timed(lambda: simulate_scan(drive.scene, drive.poses[0], full, rng=np.random.default_rng(
        [drive.seed, drive.sequence, 0, 1]), time=0.0, cull=False), args.brute_force_repeats)
    assert np.array_equal(bf.points, drive.scan(0).points), "culling changed the scan"
    rows.append({"case": "full 64x2000, brute force (baseline)", "median_s": statistics.median(bf_times),
                 "min_s": min(bf_times), "max_s": max(bf_times), "points_per_scan": float(len(bf.points)),
                 "scans": len(bf_times)})
    culled = rows[0]["median_s"]
    for r in rows:
        r["speedup_vs_brute_force"] = rows[-1]["median_s"] / r["median_s"]
    print(f"scene generation (50-scan drive, {len(drive.scene)} primitives): "
          f"{statistics.median(gen_times) * 1e3:.1f} ms")
    print(f"\n{'case':40s} {'median s':>9s} {'min s':>7s} {'max s':>7s} {'points/scan':>12s} {'speedup':>8s}")
    for r in rows:
        print(f"{r['case']:40s} {r['median_s']:9.3f} {r['min_s']:7.3f} {r['max_s']:7.3f} "
              f"{r['points_per_scan']:12.0f} {r['speedup_vs_brute_force']:7.1f}x")

    # --- class frequencies -----------------------------------------------------------------------
    counts = np.zeros(256)
    points, per_scan_classes = [], []
    for seed in range(args.seeds):
        d = generate_drive(10 * args.scans_per_seed, seed=seed)
        for i in range(0, 10 * args.scans_per_seed, 10):
            scan = d.scan(i)
            tr = cfg.to_train(scan.semantic)
            c = np.bincount(tr, minlength=256)
            counts += c
            points.append(len(tr))
            per_scan_classes.append(int((c[: cfg.num_classes] > 0).sum()))
    sim_frac = counts / counts.sum()
    kitti = np.zeros(256)
    for raw, ratio in cfg.content.items():
        kitti[cfg.to_train(np.array([raw]))[0]] += ratio
    kitti /= kitti.sum()
    print(f"\nclass frequencies over {len(points)} full-size scans ({args.seeds} seeds): "
          f"{np.mean(points):.0f} points/scan (min {min(points)}, max {max(points)}), "
          f"{np.mean(per_scan_classes):.1f} classes/scan")
    print(f"{'class':15s} {'sim %':>7s} {'KITTI %':>8s}")
    freq = {}
    for t, name in enumerate(cfg.class_names + ["ignored (255)"]):
        k = t if t < cfg.num_classes else IGNORE_INDEX
        freq[name] = {"sim": float(sim_frac[k]), "semantickitti": float(kitti[k])}
        print(f"{name:15s} {100 * sim_frac[k]:7.2f} {100 * kitti[k]:8.2f}")

    result = {
        "benchmark": "simulator",
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "numpy": np.__version__, "threads": 1},
        "sensor": dataclasses.asdict(full) | {"elevations_deg": "HDL-64E (64 beams, +2.0 .. -24.9 deg)"},
        "scene_generation_ms": statistics.median(gen_times) * 1e3,
        "primitives_in_drive": len(drive.scene),
        "speed": rows,
        "full_scan_median_s": culled,
        "points_per_scan": {"mean": float(np.mean(points)), "min": int(min(points)), "max": int(max(points))},
        "classes_per_scan_mean": float(np.mean(per_scan_classes)),
        "class_frequency": freq,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
