"""Helpers for the node / bag / CLI tests (not collected: no test_ prefix)."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from i2p_ros.data.labels import load_label_config
from i2p_ros.models.build import load_model_config
from i2p_ros.pipeline import SegmentationPipeline

ROOT = Path(__file__).resolve().parents[1]


def raw_ids() -> list[int]:
    lc = load_label_config()
    return [int(r) for r in lc.train_to_raw_lut[: lc.num_classes]]


class LinearNet:
    """A stand-in network: voxel logits = features @ W (fast, deterministic, several classes).

    ``gate`` (an Event) blocks each call until set, to hold the node busy in latest-wins tests.
    """

    def __init__(self, seed: int = 0, gate: threading.Event | None = None) -> None:
        self.w = torch.randn(4, 19, generator=torch.Generator().manual_seed(seed))
        self.gate = gate
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        if self.gate is not None:
            assert self.gate.wait(30.0), "test gate never opened"
        return x.feats @ self.w.to(x.feats)


def stub_pipeline(network=None, bounds=((-51.2, -51.2, -4.0), (51.2, 51.2, 4.4))) -> SegmentationPipeline:
    return SegmentationPipeline(None, load_model_config("lite0"), raw_ids(), network=network or LinearNet(),
                                device="cpu", bounds=bounds, warmup=False)


def save_untrained_lite0(path: Path, seed: int = 0) -> Path:
    """A real (untrained, random-init) lite0 segmentation checkpoint."""
    from i2p_ros.checkpoint import make_checkpoint, save_atomic
    from i2p_ros.models.build import build_model

    torch.manual_seed(seed)
    cfg = load_model_config("lite0")
    model, _ = build_model(cfg, prior="none")
    lc = load_label_config()
    return save_atomic(make_checkpoint(model, cfg, lc.class_names, raw_ids(), "scratch"), path)


def sim_scan(azimuth_steps: int = 64, seed: int = 3, index: int = 0):
    """A simulated street scan (few columns -> a few thousand points) with raw labels."""
    from i2p_ros.data.raycast import SensorConfig
    from i2p_ros.data.street import generate_drive

    sensor = dataclasses.replace(SensorConfig(), azimuth_steps=azimuth_steps)
    return generate_drive(index + 1, seed=seed, sequence=0, sensor=sensor).scan(index)


def velodyne_dtype() -> np.dtype:
    """x, y, z, intensity float32, ring uint16, time float64 at offset 24, padded to 40 bytes."""
    return np.dtype({"names": ["x", "y", "z", "intensity", "ring", "time"],
                     "formats": ["<f4", "<f4", "<f4", "<f4", "<u2", "<f8"],
                     "offsets": [0, 4, 8, 12, 16, 24], "itemsize": 40})


def structured_cloud(xyzi: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = np.zeros(len(xyzi), velodyne_dtype())
    for k, name in enumerate(("x", "y", "z", "intensity")):
        pts[name] = xyzi[:, k]
    pts["ring"] = rng.integers(0, 64, len(xyzi))
    pts["time"] = rng.random(len(xyzi))
    return pts


def ros_cloud(points: np.ndarray, sec: int = 7, nanosec: int = 0, frame_id: str = "velodyne"):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from i2p_ros.ros import pointcloud2 as pc

    return pc.cloud_from_points(points, Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id))


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@contextlib.contextmanager
def ros_context() -> Iterator[object]:
    import rclpy

    context = rclpy.context.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


@contextlib.contextmanager
def spinning(context, *nodes) -> Iterator[None]:
    """Spin ``nodes`` on one executor thread; on exit stop it, join, destroy the nodes."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=context)
    for node in nodes:
        executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        executor.shutdown(timeout_sec=5.0)
        thread.join(10.0)
        for node in nodes:
            node.destroy_node()


class Probe:
    """A test node: publishes clouds to the node, records labeled clouds and latency messages."""

    def __init__(self, context, input_topic="points", output_topic="points_labeled",
                 latency_topic="/segment_node/latency_ms", reliable_out=False) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import PointCloud2

        from i2p_ros.ros.qos import cloud_qos, latency_qos

        self.node = rclpy.create_node("probe", context=context)
        self.clouds: list = []
        self.latency: list = []
        self.output_topic = output_topic
        self.node.create_subscription(PointCloud2, output_topic, self.clouds.append,
                                      cloud_qos("reliable" if reliable_out else "best_effort", 50))
        self.node.create_subscription(DiagnosticArray, latency_topic, self.latency.append, latency_qos(50))
        self.pub = self.node.create_publisher(PointCloud2, input_topic, cloud_qos("reliable", 20))

    def wait_matched(self, timeout: float = 20.0) -> None:
        ok = wait_for(lambda: self.pub.get_subscription_count() > 0
                      and self.node.count_publishers(self.output_topic) > 0, timeout)
        assert ok, (f"node not discovered within {timeout} s (subscribers {self.pub.get_subscription_count()}, "
                    f"publishers {self.node.count_publishers(self.output_topic)})")
