"""``i2p-bag-eval``: replay a bag over real ROS topics into ``segment_node`` and score what comes back.

    i2p-bag-eval --bag bags/seq08 [--rate 1.0|max] [--launch-node|--external] [--checkpoint model.pt]
                 [--params-file config/segment.yaml] [--out DIR]

The bag (written by ``i2p-bag-write``, layout in :mod:`i2p_ros.ros.bag_io`) is published frame by frame
with an rclpy publisher: ``--rate R`` keeps the bag's timing sped up R times; ``--rate max`` publishes the
next frame as soon as the previous result arrived (or ``--timeout`` passed). ``--launch-node`` (default)
creates the node in this process, spun by its own executor thread; ``--external`` talks to a node that
is already running. Labeled clouds are matched to frames by header stamp and scored against the
ground truth: mIoU, per-class IoU, per-stage latency (the node's ``~/latency_ms`` topic), end-to-end
latency (publish -> labeled cloud received, one clock) and dropped frames. Output: a table on stdout,
``bag_eval.json`` and PNG plots (latency histogram and timeline, per-class IoU, a BEV of one scan).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.labels import LabelConfig, load_label_config
from ..metrics import ConfusionAccumulator
from . import pointcloud2 as pc
from .bag_io import DEFAULT_GT_TOPIC, DEFAULT_TOPIC, BagFrame, read_frames, stamp_ns
from .bag_report import FrameRecord, format_table, latency_summary, save_plots, write_json
from .processor import STAGES
from .resources import use_dds_profile

__all__ = ["EvalOptions", "main", "run_eval"]

# stages in the order they happen (the node's latency message keys)
STAGE_ORDER = ("queue", *STAGES, "publish", "processing", "total")


@dataclass
class EvalOptions:
    bag: Path
    rate: float | None = 1.0                  # None = "max"
    launch_node: bool = True
    checkpoint: str | None = None
    params_file: Path | None = None
    device: str | None = None
    num_threads: int | None = None
    topic: str = DEFAULT_TOPIC                # bag topic with the clouds
    gt_topic: str = DEFAULT_GT_TOPIC
    input_topic: str = DEFAULT_TOPIC          # where the node listens
    output_topic: str = "/points_labeled"
    node_name: str = "segment_node"
    latency_topic: str | None = None          # default /<node_name>/latency_ms
    timeout_s: float = 60.0
    discovery_timeout_s: float = 30.0
    max_frames: int | None = None
    out_dir: Path | None = None
    plots: bool = True
    bev_frame: int | None = None              # frame index for the BEV image (default: middle); -1 = none
    label_config: Path | None = None


class _Collector:
    """Receives labeled clouds and latency messages (executor thread); scores them as they arrive."""

    def __init__(self, labels: LabelConfig, bev_index: int | None) -> None:
        self.cond = threading.Condition()
        self.lut = labels.raw_to_train_lut
        self.acc = ConfusionAccumulator(labels.num_classes)
        # stamp -> (record, publish time, input x/y/z, ground truth as training indices, as raw ids)
        self.inflight: dict[int, tuple[FrameRecord, float, np.ndarray, np.ndarray | None, np.ndarray | None]] = {}
        self.records: dict[int, FrameRecord] = {}
        self.latency: dict[int, dict[str, float]] = {}
        self.unexpected = 0
        self.bev_index = bev_index
        self.bev: dict[str, Any] | None = None
        self.last: dict[str, Any] | None = None

    def expect(self, rec: FrameRecord, frame: BagFrame, t_pub: float) -> None:
        gt = None if frame.gt_labels is None else self.lut[frame.gt_labels.astype(np.int64)]
        with self.cond:
            self.records[rec.stamp_ns] = rec
            self.inflight[rec.stamp_ns] = (rec, t_pub, frame.xyz, gt, frame.gt_labels)

    def forget_older_than(self, t: float) -> None:
        """Frames published before ``t`` count as dropped; free their ground truth."""
        with self.cond:
            for s in [s for s, v in self.inflight.items() if v[1] < t]:
                del self.inflight[s]

    def on_cloud(self, msg: Any) -> None:
        t_recv = time.perf_counter()
        stamp = stamp_ns(msg.header)
        with self.cond:
            entry = self.inflight.pop(stamp, None)
        if entry is None:
            with self.cond:
                self.unexpected += 1
            return
        rec, t_pub, xyz, gt, gt_raw = entry
        points = pc.decode(msg)
        labels = np.ascontiguousarray(points["label"]).reshape(-1)
        out_xyz = pc.xyz(points)
        rec.points_preserved = out_xyz.shape == xyz.shape and bool(np.array_equal(out_xyz, xyz, equal_nan=True))
        if gt is not None and labels.shape == gt.shape:
            pred = self.lut[labels.astype(np.int64)]
            self.acc.update(torch.from_numpy(pred), torch.from_numpy(gt))
        capture = {"xyz": out_xyz, "pred": labels.copy(), "gt": gt_raw, "index": rec.index}
        with self.cond:
            rec.labeled = True
            rec.end_to_end_ms = (t_recv - t_pub) * 1e3
            rec.stages_ms.update(self.latency.pop(stamp, {}))
            self.last = capture
            if rec.index == self.bev_index:
                self.bev = capture
            self.cond.notify_all()

    def on_latency(self, msg: Any) -> None:
        stamp = stamp_ns(msg.header)
        values: dict[str, float] = {}
        for status in msg.status[:1]:
            for kv in status.values:
                try:
                    values[kv.key] = float(kv.value)
                except ValueError:
                    continue
        values = {k: v for k, v in values.items() if k not in ("points", "valid_points", "voxels")}
        with self.cond:
            rec = self.records.get(stamp)
            if rec is not None and rec.labeled:
                rec.stages_ms.update(values)
            else:  # the latency message may overtake its cloud
                self.latency[stamp] = values
            self.cond.notify_all()

    def wait(self, predicate, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)


def _node_overrides(opts: EvalOptions) -> dict[str, Any]:
    from .params import load_params_file

    values = load_params_file(opts.params_file, opts.node_name) if opts.params_file else {}
    for key in ("checkpoint", "device", "num_threads"):
        if getattr(opts, key) is not None:
            values[key] = getattr(opts, key)
    values.update(input_topic=opts.input_topic, output_topic=opts.output_topic)
    return values


class _Spinner:
    """An executor on its own thread (one per node, so the node under test is not slowed by the evaluator)."""

    def __init__(self, node: Any, context: Any) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True, name=f"spin-{node.get_name()}")
        self.thread.start()

    def stop(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.thread.join(10.0)


def run_eval(opts: EvalOptions, *, pipeline: Any = None) -> dict:
    """Replay, collect and score; returns the report dict (also written to ``opts.out_dir`` when set).

    ``pipeline`` (tests, benchmarks): an already built SegmentationPipeline for the in-process node.
    """
    frames = list(read_frames(opts.bag, opts.topic, opts.gt_topic, max_frames=opts.max_frames))
    if not frames:
        raise ValueError(f"bag {opts.bag} has no frames on {opts.topic}")
    labels = load_label_config(opts.label_config)
    bev_index = len(frames) // 2 if opts.bev_frame is None else opts.bev_frame
    use_dds_profile()
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import PointCloud2

    from .qos import cloud_qos, latency_qos

    context = rclpy.context.Context()
    rclpy.init(context=context, args=["i2p-bag-eval"])
    seg_node = evaluator = None
    spinners: list[_Spinner] = []
    collector = _Collector(labels, bev_index)
    records = [FrameRecord(i, f.stamp_ns, f.num_points) for i, f in enumerate(frames)]
    try:
        if opts.launch_node:
            from .segment_node import SegmentNode

            overrides = [Parameter(k, value=v) for k, v in _node_overrides(opts).items()]
            seg_node = SegmentNode(opts.node_name, context=context, parameter_overrides=overrides, pipeline=pipeline)
            spinners.append(_Spinner(seg_node, context))
        evaluator = rclpy.create_node("i2p_bag_eval", context=context)
        latency_topic = opts.latency_topic or f"/{opts.node_name}/latency_ms"
        evaluator.create_subscription(PointCloud2, opts.output_topic, collector.on_cloud, cloud_qos("best_effort", 50))
        evaluator.create_subscription(DiagnosticArray, latency_topic, collector.on_latency, latency_qos(200))
        pub = evaluator.create_publisher(PointCloud2, opts.input_topic, cloud_qos("reliable", 10))
        spinners.append(_Spinner(evaluator, context))
        _wait_for_node(evaluator, pub, opts)
        t_start = time.perf_counter()
        for rec, frame in zip(records, frames, strict=True):
            if opts.rate is not None:
                target = t_start + (frame.stamp_ns - frames[0].stamp_ns) / 1e9 / opts.rate
                time.sleep(max(0.0, target - time.perf_counter()))
                collector.forget_older_than(time.perf_counter() - opts.timeout_s)
            t_pub = time.perf_counter()
            collector.expect(rec, frame, t_pub)
            pub.publish(frame.cdr)
            if opts.rate is None:
                collector.wait(lambda r=rec: r.labeled, opts.timeout_s)
        # latest wins: the last frame is never replaced, so its result (or the timeout) ends the replay
        last = records[-1]
        collector.wait(lambda: last.labeled, opts.timeout_s)
        collector.wait(lambda: all(r.stages_ms for r in records if r.labeled), 2.0)
        node_stats = seg_node.stats.snapshot() if seg_node is not None else None
    finally:
        for sp in reversed(spinners):
            sp.stop()
        for node in (evaluator, seg_node):
            if node is not None:
                node.destroy_node()
        rclpy.try_shutdown(context=context)
    report = _report(opts, records, collector, labels, node_stats)
    if opts.out_dir is not None:
        _write_outputs(opts, report, records, collector, labels)
    return report


def _wait_for_node(evaluator: Any, pub: Any, opts: EvalOptions) -> None:
    deadline = time.monotonic() + opts.discovery_timeout_s
    while time.monotonic() < deadline:
        if pub.get_subscription_count() > 0 and evaluator.count_publishers(opts.output_topic) > 0:
            return
        time.sleep(0.05)
    raise TimeoutError(f"no segment_node found within {opts.discovery_timeout_s:.0f} s: {opts.input_topic} has "
                       f"{pub.get_subscription_count()} subscribers, {opts.output_topic} has "
                       f"{evaluator.count_publishers(opts.output_topic)} publishers (same ROS_DOMAIN_ID, "
                       "FASTDDS_DEFAULT_PROFILES_FILE and topic names?)")


def _report(opts: EvalOptions, records: list[FrameRecord], collector: _Collector, labels: LabelConfig,
            node_stats: dict | None) -> dict:
    labeled = [r for r in records if r.labeled]
    scores = collector.acc.scores()
    has_gt = int(collector.acc.cm.sum() + collector.acc.misses.sum()) > 0
    iou = {n: (None if np.isnan(v) else float(v)) for n, v in zip(labels.class_names, scores.iou.tolist())}
    mismatches = [r.index for r in labeled if not r.points_preserved]
    return {
        "bag": str(opts.bag),
        "mode": "launch-node" if opts.launch_node else "external",
        "rate": "max" if opts.rate is None else opts.rate,
        "published": len(records),
        "labeled": len(labeled),
        "dropped": len(records) - len(labeled),
        "unexpected_outputs": collector.unexpected,
        "points_preserved": not mismatches,
        "point_mismatches": mismatches,
        "miou": scores.miou if has_gt and not np.isnan(scores.miou) else None,
        "accuracy": scores.accuracy if has_gt and not np.isnan(scores.accuracy) else None,
        "iou": iou if has_gt else {n: None for n in labels.class_names},
        "confusion": scores.confusion.tolist(),
        "latency_ms": latency_summary(labeled, ("end_to_end", *STAGE_ORDER)),
        "node": node_stats,
        "frames": [{"index": r.index, "stamp_ns": r.stamp_ns, "points": r.num_points, "labeled": r.labeled,
                    "end_to_end_ms": r.end_to_end_ms, "stages_ms": r.stages_ms} for r in records],
    }


def _write_outputs(opts: EvalOptions, report: dict, records: list[FrameRecord], collector: _Collector,
                   labels: LabelConfig) -> None:
    out = Path(opts.out_dir)
    files = []
    if opts.plots:
        files = [str(p) for p in save_plots(report, records, out, STAGE_ORDER)]
        shot = collector.bev or collector.last
        if opts.bev_frame != -1 and shot is not None:
            from ..data.bev import save_bev

            gt = shot["gt"]
            sets, titles = [shot["pred"]], [f"prediction, frame {shot['index']}"]
            if gt is not None:
                sets, titles = [gt.astype(np.uint16), shot["pred"]], [f"ground truth, frame {shot['index']}",
                                                                      titles[0]]
            files.append(str(save_bev(out / "bev.png", shot["xyz"], sets, labels, titles=titles)))
    report["plots"] = files
    write_json(report, out / "bag_eval.json")


def _rate(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rate must be a positive number or 'max', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--rate must be > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i2p-bag-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bag", required=True, type=Path)
    p.add_argument("--rate", type=_rate, default=1.0, help="replay speed factor, or 'max' (next frame on result)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--launch-node", dest="launch_node", action="store_true", default=True,
                      help="create segment_node in this process")
    mode.add_argument("--external", dest="launch_node", action="store_false", help="use a running segment_node")
    p.add_argument("--checkpoint", default=None, help="model for --launch-node (default: params file / demo model)")
    p.add_argument("--params-file", type=Path, default=None, help="node parameters for --launch-node")
    p.add_argument("--device", default=None)
    p.add_argument("--num-threads", type=int, default=None)
    p.add_argument("--topic", default=DEFAULT_TOPIC, help="cloud topic in the bag")
    p.add_argument("--gt-topic", default=DEFAULT_GT_TOPIC, help="ground-truth topic in the bag")
    p.add_argument("--input-topic", default=DEFAULT_TOPIC, help="the node's input topic")
    p.add_argument("--output-topic", default="/points_labeled", help="the node's output topic")
    p.add_argument("--node-name", default="segment_node")
    p.add_argument("--latency-topic", default=None, help="default /<node-name>/latency_ms")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a frame's result")
    p.add_argument("--discovery-timeout", type=float, default=30.0, help="seconds to wait for the node's topics")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="folder for bag_eval.json and the plots")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--bev-frame", type=int, default=None, help="frame index for bev.png (default: middle; -1: none)")
    p.add_argument("--label-config", type=Path, default=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    opts = EvalOptions(bag=args.bag, rate=args.rate, launch_node=args.launch_node, checkpoint=args.checkpoint,
                       params_file=args.params_file, device=args.device, num_threads=args.num_threads,
                       topic=args.topic, gt_topic=args.gt_topic, input_topic=args.input_topic,
                       output_topic=args.output_topic, node_name=args.node_name, latency_topic=args.latency_topic,
                       timeout_s=args.timeout, discovery_timeout_s=args.discovery_timeout,
                       max_frames=args.max_frames, out_dir=args.out, plots=not args.no_plots,
                       bev_frame=args.bev_frame, label_config=args.label_config)
    try:
        report = run_eval(opts)
    except (OSError, ValueError, TimeoutError, RuntimeError) as err:
        print(f"i2p-bag-eval: {err}", file=sys.stderr)
        return 2
    print(format_table(report))
    if opts.out_dir is not None:
        print(f"\nreport: {Path(opts.out_dir) / 'bag_eval.json'}" + (f"; plots: {', '.join(report['plots'])}"
                                                                     if report.get("plots") else ""))
    return 0 if report["labeled"] else 1


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
