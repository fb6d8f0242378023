"""Whole-pipeline latency per stage on full-size simulated scans, and the node's RSS over many frames.

Per frame, exactly what segment_node does (``i2p_ros.ros.processor.FramePipeline``):
``decode`` (PointCloud2 -> float32 x/y/z/intensity) -> ``voxelize`` -> ``network`` (which contains
``kernel_maps`` when the engine reports it) -> ``devoxelize`` (voxel classes -> every point, raw ids)
-> ``encode`` (labeled PointCloud2). Input: ray-cast street scans from ``i2p_ros.data.sim`` (HDL-64E
geometry; ``--azimuth-steps 2200`` gives ~120k points), as an rclpy ``PointCloud2`` (x, y, z, intensity
float32 + ring uint16, point_step 32, like the Velodyne driver) when rclpy is importable. Model: lite0
(untrained weights: speed does not depend on them), ``torch.set_num_threads(--threads)``.

Reported: median and p95 per stage over ``--runs`` frames after ``--warmup`` frames, the share of each
stage in the total, the time outside the network (kernel maps count as network), and the ratios to the
issue-7 targets measured in the same run (end to end <= 100 ms, outside the network <= 5 ms). Then
``--frames`` frames through a real in-process ``SegmentNode`` (publish -> labeled cloud received, one at
a time) while sampling the process RSS: start/end/max and the growth over the second half.
``--stub-network`` replaces the network by a linear layer to measure everything around it (and RSS over
1,000 frames) quickly.

    python benchmarks/pipeline.py [--runs 50] [--frames 1000] [--stub-network] [--out benchmarks/results/pipeline.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from i2p_ros.data.labels import load_label_config
from i2p_ros.data.raycast import SensorConfig
from i2p_ros.data.street import generate_drive
from i2p_ros.models.build import build_model, load_model_config
from i2p_ros.pipeline import SegmentationPipeline
from i2p_ros.ros import pointcloud2 as pc
from i2p_ros.ros.processor import STAGES, FramePipeline, ProcessorSettings

INPUT_DTYPE = np.dtype({"names": ["x", "y", "z", "intensity", "ring"], "formats": ["<f4", "<f4", "<f4", "<f4", "<u2"],
                        "offsets": [0, 4, 8, 12, 16], "itemsize": 32})
TARGET_TOTAL_MS = 100.0
TARGET_OUTSIDE_MS = 5.0


def make_factory():
    try:
        from builtin_interfaces.msg import Time
        from std_msgs.msg import Header

        return pc.RosFactory(), lambda i: Header(frame_id="velodyne", stamp=Time(sec=1000 + i)), "rclpy PointCloud2"
    except ImportError:
        from types import SimpleNamespace

        return (pc.PlainFactory(), lambda i: SimpleNamespace(frame_id="velodyne", stamp=None),
                "SimpleNamespace (no rclpy)")


def sim_clouds(n: int, azimuth_steps: int, factory, header) -> list:
    sensor = dataclasses.replace(SensorConfig(), azimuth_steps=azimuth_steps)
    drive = generate_drive(n, seed=11, sequence=0, sensor=sensor)
    clouds = []
    for i in range(n):
        scan = drive.scan(i)
        pts = np.zeros(len(scan.points), INPUT_DTYPE)
        for k, name in enumerate(("x", "y", "z", "intensity")):
            pts[name] = scan.points[:, k]
        pts["ring"] = scan.ring
        clouds.append(pc.cloud_from_points(pts, header(i), factory=factory))
    return clouds


def make_pipeline(stub: bool, threads: int) -> SegmentationPipeline:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = load_model_config("lite0")
    lc = load_label_config()
    raw = [int(r) for r in lc.train_to_raw_lut[: lc.num_classes]]
    bounds = ((-51.2, -51.2, -4.0), (51.2, 51.2, 4.4))
    if stub:
        w = torch.randn(len(cfg.in_features), cfg.num_classes)
        return SegmentationPipeline(None, cfg, raw, network=lambda x: x.feats @ w.to(x.feats), device="cpu",
                                    bounds=bounds, num_threads=threads, warmup=False)
    model, _ = build_model(cfg, prior="none")
    return SegmentationPipeline(model, cfg, raw, device="cpu", bounds=bounds, num_threads=threads, warmup=False)


def stage_table(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    out = {}
    keys = [*STAGES, "total"]
    for key in keys:
        vals = np.array([s[key] for s in samples if key in s])
        if vals.size:
            out[key] = {"median": float(np.median(vals)), "p95": float(np.percentile(vals, 95)),
                        "mean": float(vals.mean()), "n": int(vals.size)}
    # kernel maps are the sparse network's own coordinate work: "outside" is decode, voxelize, devoxelize, encode
    outside = np.array([s["total"] - s.get("network", 0.0) - s.get("kernel_maps", 0.0) for s in samples])
    out["outside_network"] = {"median": float(np.median(outside)), "p95": float(np.percentile(outside, 95)),
                              "mean": float(outside.mean()), "n": int(outside.size)}
    return out


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def node_rss(pipeline: SegmentationPipeline, clouds: list, frames: int, timeout_s: float) -> dict:
    """Run ``frames`` frames through an in-process SegmentNode, one at a time; RSS samples every 10 frames."""
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import PointCloud2

    from i2p_ros.ros.qos import cloud_qos
    from i2p_ros.ros.segment_node import SegmentNode

    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    got = threading.Event()
    node = SegmentNode(context=ctx, pipeline=pipeline, parameter_overrides=[
        Parameter("qos_reliability", value="reliable"), Parameter("log_period_s", value=0.0),
        Parameter("input_topic", value="/bench/points"), Parameter("output_topic", value="/bench/labeled")])
    probe = rclpy.create_node("bench_probe", context=ctx)
    probe.create_subscription(PointCloud2, "/bench/labeled", lambda m: got.set(), cloud_qos("reliable", 2))
    pub = probe.create_publisher(PointCloud2, "/bench/points", cloud_qos("reliable", 2))
    executors = []
    for n in (node, probe):
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(n)
        executors.append((ex, threading.Thread(target=ex.spin, daemon=True)))
        executors[-1][1].start()
    samples, lost = [], 0
    try:
        deadline = time.monotonic() + 20
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        t0 = time.perf_counter()
        for i in range(frames):
            got.clear()
            pub.publish(clouds[i % len(clouds)])
            lost += not got.wait(timeout_s)
            if i % 10 == 0 or i == frames - 1:
                samples.append((i, rss_mb()))
        elapsed = time.perf_counter() - t0
        totals = node.stats.snapshot()["totals"]
    finally:
        for ex, th in executors:
            ex.shutdown(timeout_sec=5)
            th.join(10)
        node.destroy_node()
        probe.destroy_node()
        rclpy.try_shutdown(context=ctx)
    idx = np.array([s[0] for s in samples], float)
    mb = np.array([s[1] for s in samples])
    half = idx >= idx[-1] / 2
    slope = float(np.polyfit(idx[half], mb[half], 1)[0] * 100) if half.sum() >= 3 else None
    return {"frames": frames, "lost": lost, "node_totals": totals, "seconds": elapsed,
            "rss_mb_first": float(mb[0]), "rss_mb_last": float(mb[-1]), "rss_mb_max": float(mb.max()),
            "rss_growth_mb_per_100_frames_second_half": slope, "samples": samples}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50, help="measured frames (after warm-up)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--scans", type=int, default=5, help="distinct simulated scans, cycled")
    ap.add_argument("--azimuth-steps", type=int, default=2200, help="columns per revolution (2200 ~ 120k points)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=1000, help="frames through the node for RSS (0: skip)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per node frame before it counts lost")
    ap.add_argument("--stub-network", action="store_true", help="linear stand-in instead of lite0")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "pipeline.json")
    args = ap.parse_args(argv)

    factory, header, msg_kind = make_factory()
    clouds = sim_clouds(args.scans, args.azimuth_steps, factory, header)
    pipeline = make_pipeline(args.stub_network, args.threads)
    frames = FramePipeline(pipeline, pc.make_rgb_lut(load_label_config().color_map_bgr), ProcessorSettings(),
                           factory=factory if isinstance(factory, pc.RosFactory) else pc.PlainFactory())
    points = [c.width * c.height for c in clouds]
    print(f"pipeline benchmark: {'stub network' if args.stub_network else 'lite0 (untrained)'}, "
          f"{args.threads} threads, {len(clouds)} scans of {np.mean(points):.0f} points ({msg_kind})", flush=True)
    for i in range(args.warmup):
        frames.process(clouds[i % len(clouds)])
    samples, voxels = [], []
    for i in range(args.runs):
        res = frames.process(clouds[i % len(clouds)])
        samples.append(res.timings_ms)
        voxels.append(res.num_voxels)
        if (i + 1) % 10 == 0:
            print(f"  {i + 1}/{args.runs} frames, last total {res.timings_ms['total']:.1f} ms", flush=True)
    table = stage_table(samples)
    total = table["total"]["median"]
    print(f"\n{'stage':<16}{'median ms':>11}{'p95 ms':>10}{'share':>8}")
    for key, s in table.items():
        share = "" if key == "total" else f"{100 * s['median'] / total:6.1f}%"
        print(f"{key:<16}{s['median']:>11.2f}{s['p95']:>10.2f}{share:>8}")
    ratios = {"total_vs_100ms_target": total / TARGET_TOTAL_MS,
              "outside_network_vs_5ms_target": table["outside_network"]["median"] / TARGET_OUTSIDE_MS}
    print(f"\nend to end {total:.1f} ms = {ratios['total_vs_100ms_target']:.2f} x the 100 ms target; outside the "
          f"network {table['outside_network']['median']:.2f} ms = {ratios['outside_network_vs_5ms_target']:.2f} x "
          "the 5 ms target")
    rss = None
    if args.frames > 0:
        try:
            import rclpy  # noqa: F401
        except ImportError:
            print("node RSS: skipped (rclpy not importable)")
        else:
            print(f"\nnode RSS over {args.frames} frames ...", flush=True)
            rss = node_rss(pipeline, clouds, args.frames, args.timeout)
            slope = rss["rss_growth_mb_per_100_frames_second_half"]
            growth = "n/a (too few frames)" if slope is None else f"{slope:+.2f} MB / 100 frames"
            print(f"node RSS: {rss['rss_mb_first']:.0f} MB at frame 0 -> {rss['rss_mb_last']:.0f} MB at frame "
                  f"{args.frames - 1} (max {rss['rss_mb_max']:.0f}); second-half growth {growth}; "
                  f"{rss['lost']} lost; {args.frames / rss['seconds']:.1f} frames/s")
    result = {
        "benchmark": "pipeline", "network": "stub" if args.stub_network else "lite0-untrained",
        "threads": args.threads, "runs": args.runs, "warmup": args.warmup, "message": msg_kind,
        "points_mean": float(np.mean(points)), "voxels_mean": float(np.mean(voxels)),
        "stages_ms": table, "ratios_vs_targets": ratios, "node_rss": rss,
        "machine": {"cpu_count": os.cpu_count(), "python": sys.version.split()[0], "torch": torch.__version__,
                    "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
