"""PointCloud2 codec speed on a 120k-point Velodyne-like cloud, against two baselines in the same run.

Cloud: x, y, z, intensity float32 + ring uint16, point_step 32 (PCL's aligned PointXYZIR, as the
Velodyne driver publishes). Our path: ``decode`` (zero-copy view) -> ``xyzi`` (float32 [N,4]) ->
``encode_labeled`` (all input fields + label + rgb). The message is an rclpy ``PointCloud2`` when
rclpy is importable (``array.array`` data, as a subscriber receives it), else a SimpleNamespace.

Baselines, doing the same work:
* ``per-field numpy``: the common sensor_msgs_py-style approach: a structured view, x/y/z/intensity
  stacked into an unstructured float32 array, then a fresh output array filled field by field and
  packed into ``array.array``.
* ``python struct loop``: per-point ``struct.unpack_from`` / ``struct.pack_into`` (what hand-written
  ROS 1 era converters do), timed on the first 2,000 points and scaled linearly to N (so it is an
  estimate; it is linear per point).

Prints a table and writes JSON (default ``benchmarks/results/pointcloud2_codec.json``).
"""

from __future__ import annotations

import argparse
import array
import json
import os
import platform
import struct
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from i2p_ros.ros import pointcloud2 as pc

KITTI_COLORS_BGR = {0: [0, 0, 0], 10: [245, 150, 100], 40: [255, 0, 255], 44: [255, 150, 255],
                    48: [75, 0, 75], 50: [0, 200, 255], 70: [0, 175, 0], 72: [80, 240, 150],
                    80: [150, 240, 255], 81: [0, 0, 255]}
INPUT_DTYPE = np.dtype({"names": ["x", "y", "z", "intensity", "ring"],
                        "formats": ["<f4", "<f4", "<f4", "<f4", "<u2"],
                        "offsets": [0, 4, 8, 12, 16], "itemsize": 32})


def make_factory():
    """(factory, header, description): rclpy messages when importable."""
    try:
        from std_msgs.msg import Header

        return pc.RosFactory(), Header(frame_id="velodyne"), "rclpy sensor_msgs.msg.PointCloud2"
    except ImportError:
        return pc.PlainFactory(), SimpleNamespace(frame_id="velodyne"), "SimpleNamespace (no rclpy)"


def velodyne_cloud(n: int, factory, header) -> object:
    rng = np.random.default_rng(0)
    pts = np.zeros(n, INPUT_DTYPE)
    az = rng.uniform(-np.pi, np.pi, n)
    rng_m = rng.uniform(2.0, 80.0, n)
    pts["x"], pts["y"] = rng_m * np.cos(az), rng_m * np.sin(az)
    pts["z"] = rng.normal(-1.5, 0.5, n)
    pts["x"][rng.random(n) < 0.02] = np.nan  # no-return points, as drivers publish them
    pts["intensity"] = rng.integers(0, 256, n)
    pts["ring"] = rng.integers(0, 64, n)
    view = pts.view(np.uint8).reshape(n, 32)
    view[:, 18:] = rng.integers(0, 256, (n, 14), dtype=np.uint8)  # non-zero padding
    return pc.cloud_from_points(pts, header=header, factory=factory)


# ----------------------------------------------------------------------------- our codec


def ours(cloud, labels, lut, factory):
    points = pc.decode(cloud)
    feats = pc.xyzi(points, intensity_scale=1 / 255)
    out = pc.encode_labeled(cloud, labels, lut, factory=factory)
    return feats, out


# ----------------------------------------------------------------------------- baselines


def per_field_numpy(cloud, labels, lut):
    """sensor_msgs_py-style: structured view, stack fields, fill a new array field by field."""
    names = [f.name for f in cloud.fields]
    dt = np.dtype({"names": names, "formats": ["<f4"] * 4 + ["<u2"],
                   "offsets": [f.offset for f in cloud.fields], "itemsize": cloud.point_step})
    pts = np.ndarray((cloud.width * cloud.height,), dtype=dt, buffer=cloud.data)
    feats = np.stack([pts["x"], pts["y"], pts["z"], pts["intensity"]], axis=1).astype(np.float32)
    feats[:, 3] *= 1 / 255
    out_dt = np.dtype({"names": names + ["label", "rgb"], "formats": ["<f4"] * 4 + ["<u2", "<u2", "<f4"],
                       "offsets": [f.offset for f in cloud.fields] + [32, 36],
                       "itemsize": 40})
    out = np.zeros(len(pts), out_dt)
    for name in names:
        out[name] = pts[name]
    out["label"] = labels
    out["rgb"] = lut[labels]
    data = array.array("B")
    data.frombytes(out.tobytes())
    return feats, data


def struct_loop(cloud, labels, lut, n_loop):
    """Per-point struct decode + encode of the first n_loop points."""
    data = bytes(cloud.data[: n_loop * cloud.point_step])
    unpack, pack = struct.Struct("<4fH").unpack_from, struct.Struct("<4fHxxHxxf").pack_into
    out = bytearray(n_loop * 40)
    feats = []
    lut_l, lab_l = lut.tolist(), labels[:n_loop].tolist()
    for i in range(n_loop):
        x, y, z, inten, ring = unpack(data, i * 32)
        feats.append((x, y, z, inten / 255))
        pack(out, i * 40, x, y, z, inten, ring, lab_l[i], lut_l[lab_l[i]])
    return feats, out


# ----------------------------------------------------------------------------- timing


def timed(fn, repeats: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def stats(ms: list[float], scale: float = 1.0) -> dict[str, float]:
    a = np.asarray(ms) * scale
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)),
            "min_ms": float(a.min())}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=120_000)
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--loop-points", type=int, default=2_000)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pointcloud2_codec.json")
    args = ap.parse_args(argv)

    factory, header, msg_kind = make_factory()
    n = args.points
    cloud = velodyne_cloud(n, factory, header)
    labels = np.random.default_rng(1).choice(list(KITTI_COLORS_BGR), size=n).astype(np.uint16)
    lut = pc.make_rgb_lut(KITTI_COLORS_BGR)

    # the three implementations must agree before their speed means anything
    feats, out = ours(cloud, labels, lut, factory)
    ref_feats, ref_data = per_field_numpy(cloud, labels, lut)
    np.testing.assert_array_equal(feats, ref_feats)
    mine = np.frombuffer(out.data, np.uint8).reshape(n, out.point_step)
    theirs = np.frombuffer(ref_data, np.uint8).reshape(n, 40)
    covered = np.r_[0:18, 20:22, 24:28]  # our label/rgb sit at 20/24; the baseline's at 32/36
    np.testing.assert_array_equal(mine[:, covered], theirs[:, np.r_[0:18, 32:34, 36:40]])
    loop_feats, loop_out = struct_loop(cloud, labels, lut, 50)
    np.testing.assert_allclose(np.asarray(loop_feats, np.float32), feats[:50], rtol=1e-6)

    points = pc.decode(cloud)
    rows = {
        "decode (zero-copy view)": timed(lambda: pc.decode(cloud), args.repeats),
        "xyzi float32 [N,4]": timed(lambda: pc.xyzi(points, intensity_scale=1 / 255), args.repeats),
        "encode -> numpy": timed(lambda: pc.labeled_points(cloud, labels, lut), args.repeats),
        "encode -> message": timed(lambda: pc.encode_labeled(cloud, labels, lut, factory=factory),
                                   args.repeats),
        "total ours": timed(lambda: ours(cloud, labels, lut, factory), args.repeats),
        "baseline per-field numpy": timed(lambda: per_field_numpy(cloud, labels, lut), args.repeats),
    }
    results = {k: stats(v) for k, v in rows.items()}
    loop_n = min(args.loop_points, n)
    results[f"baseline struct loop ({loop_n} pts, x{n / loop_n:.0f})"] = stats(
        timed(lambda: struct_loop(cloud, labels, lut, loop_n), max(5, args.repeats // 10), 1), n / loop_n)
    total = results["total ours"]["median_ms"]

    print(f"PointCloud2 codec, {n} points, point_step {cloud.point_step} -> {out.point_step}, "
          f"message: {msg_kind}")
    print(f"{'stage':<42}{'median ms':>11}{'p95 ms':>10}{'vs ours':>10}")
    for name, s in results.items():
        ratio = f"{s['median_ms'] / total:.1f}x" if name.startswith("baseline") else ""
        print(f"{name:<42}{s['median_ms']:>11.3f}{s['p95_ms']:>10.3f}{ratio:>10}")

    report = {
        "benchmark": "pointcloud2_codec", "points": n, "input_point_step": cloud.point_step,
        "output_point_step": out.point_step, "message": msg_kind, "repeats": args.repeats,
        "results": results,
        "speedup_vs_per_field_numpy": results["baseline per-field numpy"]["median_ms"] / total,
        "speedup_vs_struct_loop": [v for k, v in results.items() if "struct" in k][0]["median_ms"] / total,
        "env": {"python": sys.version.split()[0], "numpy": np.__version__,
                "machine": platform.machine(), "cpus": os.cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
