"""One frame through the node, without ROS: PointCloud2 -> x/y/z/intensity -> pipeline -> labeled PointCloud2.

Kept apart from the node so the path a frame takes (and the way bad input is classified) is testable
and benchmarkable without rclpy; the node only adds topics, threads and logging. A malformed cloud
raises :class:`FrameRejected` with a category (the node counts per category) and the codec's reason.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..pipeline import SegmentationPipeline
from . import pointcloud2 as pc

__all__ = ["CONFIDENCE_FIELD", "REJECT_CATEGORIES", "STAGES", "FramePipeline", "FrameRejected", "FrameResult",
           "ProcessorSettings", "classify_reason", "encode_with_confidence"]

# Per-frame stages, in order (kernel_maps is part of network: the engine builds maps inside the forward).
STAGES = ("decode", "voxelize", "kernel_maps", "network", "devoxelize", "encode")
REJECT_CATEGORIES = ("empty", "too_large", "bad_datatype", "bad_length", "missing_xyz", "malformed")
CONFIDENCE_FIELD = "confidence"


class FrameRejected(Exception):
    """The cloud cannot be labeled; ``category`` is one of REJECT_CATEGORIES, ``reason`` says why."""

    def __init__(self, category: str, reason: str) -> None:
        super().__init__(f"{category}: {reason}")
        self.category = category
        self.reason = reason


def classify_reason(reason: str) -> str:
    """Map a codec error message to a counter name (see CloudFormatError messages in pointcloud2)."""
    r = reason.lower()
    if r.startswith("empty cloud"):
        return "empty"
    if "max_points" in r:
        return "too_large"
    if "unsupported datatype" in r:
        return "bad_datatype"
    if r.startswith("data has") or "row_step" in r:
        return "bad_length"
    if any(f"no '{axis}' field" in r for axis in "xyz"):
        return "missing_xyz"
    return "malformed"


@dataclass(frozen=True)
class ProcessorSettings:
    """The parameters a running node may change between frames (swapped atomically)."""

    intensity_fields: tuple[str, ...] = pc.DEFAULT_INTENSITY_NAMES
    intensity_scale: float = 1.0
    max_points: int = 2_000_000
    publish_confidence: bool = False


@dataclass
class FrameResult:
    cloud: Any                       # the labeled PointCloud2 (factory's message type)
    labels: np.ndarray               # uint16 [N] raw ids, row-major point order
    num_points: int
    num_valid_points: int
    num_voxels: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    confidence_skipped: bool = False  # publish_confidence was on but the input already has that field


class FramePipeline:
    """decode -> :class:`SegmentationPipeline` -> encode, with per-stage timings in milliseconds."""

    def __init__(self, pipeline: SegmentationPipeline, rgb_lut: np.ndarray,
                 settings: ProcessorSettings | None = None, factory: pc.CloudFactory | None = None) -> None:
        self.pipeline = pipeline
        self.rgb_lut = rgb_lut
        self.settings = settings or ProcessorSettings()
        self.factory = factory

    def points(self, cloud: Any, settings: ProcessorSettings | None = None) -> np.ndarray:
        """float32 ``[N, 4]`` x, y, z, intensity of any PointCloud2, or :class:`FrameRejected`."""
        s = settings or self.settings
        try:
            return pc.xyzi(pc.decode(cloud, max_points=s.max_points), s.intensity_fields, s.intensity_scale)
        except pc.CloudFormatError as err:
            raise FrameRejected(classify_reason(err.reason), err.reason) from None

    def process(self, cloud: Any) -> FrameResult:
        s = self.settings  # one snapshot per frame: a parameter change applies from the next frame
        t0 = time.perf_counter()
        xyzi = self.points(cloud, s)
        t1 = time.perf_counter()
        res = self.pipeline.segment(xyzi, confidence=s.publish_confidence)
        t2 = time.perf_counter()
        skipped = False
        if s.publish_confidence and CONFIDENCE_FIELD not in {f.name for f in cloud.fields}:
            out = encode_with_confidence(cloud, res.labels, res.confidence, self.rgb_lut,
                                         factory=self.factory, max_points=s.max_points)
        else:
            skipped = s.publish_confidence
            out = pc.encode_labeled(cloud, res.labels, self.rgb_lut, factory=self.factory, max_points=s.max_points)
        t3 = time.perf_counter()
        timings = {"decode": (t1 - t0) * 1e3}
        timings.update({k: v for k, v in res.timings_ms.items() if k != "total"})
        timings["encode"] = (t3 - t2) * 1e3
        timings["total"] = (t3 - t0) * 1e3
        return FrameResult(out, res.labels, len(xyzi), res.num_valid_points, res.num_voxels, timings, skipped)


def encode_with_confidence(cloud: Any, labels: np.ndarray, confidence: np.ndarray | None, rgb_lut: np.ndarray,
                           *, factory: pc.CloudFactory | None = None,
                           max_points: int = pc.DEFAULT_MAX_POINTS) -> Any:
    """:func:`~i2p_ros.ros.pointcloud2.encode_labeled` plus a float32 ``confidence`` field after ``rgb``.

    Costs one more copy of the output than the plain encoding, which is why it is optional.
    """
    factory = factory or pc.RosFactory()
    _, out, layout = pc.labeled_points(cloud, labels, rgb_lut, max_points=max_points, factory=pc.PlainFactory())
    height, width = out.shape
    step = layout.point_step
    wide = any(f.datatype == pc.FLOAT64 for f in layout.fields)
    new_step = -(-(step + 4) // (8 if wide else 4)) * (8 if wide else 4)
    dtype = np.dtype({"names": ["raw", CONFIDENCE_FIELD], "formats": [f"V{step}", "<f4"],
                      "offsets": [0, step], "itemsize": new_step})
    buf = factory.buffer(height * width * new_step)
    view = np.frombuffer(buf, dtype=dtype)
    if new_step > step + 4:
        np.frombuffer(buf, np.uint8).reshape(-1, new_step)[:, step + 4:] = 0
    view["raw"] = out.reshape(-1).view(f"V{step}")
    conf = np.zeros(height * width, np.float32) if confidence is None else np.asarray(confidence, np.float32)
    view[CONFIDENCE_FIELD] = conf.reshape(-1)
    fields: Sequence[Any] = [factory.field(*f) for f in layout.fields]
    fields = [*fields, factory.field(CONFIDENCE_FIELD, step, pc.FLOAT32, 1)]
    return factory.cloud(header=cloud.header, height=height, width=width, fields=list(fields), is_bigendian=False,
                         point_step=new_step, row_step=width * new_step, data=buf, is_dense=bool(cloud.is_dense))
