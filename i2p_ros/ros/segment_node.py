"""``segment_node``: labels every point of a PointCloud2 stream with SemanticKITTI classes.

    ros2 run i2p_ros segment_node --ros-args --params-file config/segment.yaml -r points:=/velodyne_points

Topics
  ``points`` (sub, sensor_msgs/PointCloud2; name from ``input_topic``)
  ``points_labeled`` (pub, PointCloud2; every input point in order, all input fields + ``label`` uint16 raw
  SemanticKITTI id (0 = unclassifiable: NaN/Inf, out of range) + ``rgb``; same header)
  ``~/latency_ms`` (pub, diagnostic_msgs/DiagnosticArray, one per labeled frame: header = the cloud's header,
  one status whose values are the stage times in ms (queue, decode, voxelize, kernel_maps, network,
  devoxelize, encode, publish, processing, total) and the counts points / valid_points / voxels)
  ``/diagnostics`` (pub, DiagnosticArray every ``log_period_s``: counters and latency percentiles)

Behaviour: one inference at a time on a worker thread; a frame arriving while busy replaces the waiting
one (latest wins) and counts as dropped. A malformed cloud is logged (throttled per reason) and counted,
never fatal. A configuration error (missing checkpoint, unknown backend, bad parameter) stops the node at
start with one clear message and exit code 1.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from sensor_msgs.msg import PointCloud2

from ..data.labels import load_label_config
from ..pipeline import SegmentationPipeline
from . import pointcloud2 as pc
from .backends import BackendError, PipelineRequest, create_pipeline, resolve_checkpoint
from .params import DYNAMIC, SPECS, NodeParams, ParamError
from .processor import STAGES, FramePipeline, FrameRejected, FrameResult, ProcessorSettings
from .qos import cloud_qos, latency_qos
from .stats import NodeStats, summary_line
from .worker import LatestWinsWorker

__all__ = ["NODE_NAME", "LATENCY_TOPIC", "NodeStartupError", "SegmentNode", "main"]

NODE_NAME = "segment_node"
LATENCY_TOPIC = "~/latency_ms"
DIAGNOSTICS_TOPIC = "/diagnostics"
LOG_THROTTLE_S = 5.0
# keys of a latency message besides the STAGES (all in ms)
EXTRA_TIMES = ("queue", "publish", "processing", "total")


class NodeStartupError(RuntimeError):
    """The node cannot start as configured; the message says which parameter/file and why."""


def _descriptor(spec) -> ParameterDescriptor:
    desc = ParameterDescriptor(name=spec.name, description=spec.description, read_only=spec.read_only)
    constraints = [spec.constraints] if spec.constraints else []
    if spec.choices:
        constraints.append("one of: " + ", ".join(spec.choices))
    if spec.range is not None:
        lo, hi = spec.range
        if isinstance(spec.default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
        else:
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
    if not spec.read_only:
        constraints.append("may be changed at run time")
    desc.additional_constraints = "; ".join(constraints)
    return desc


class _Throttle:
    """At most one message per key per period; says how many were suppressed in between."""

    def __init__(self, period_s: float = LOG_THROTTLE_S) -> None:
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, key: str, emit: Callable[[str], Any], text: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -1e18) < self.period_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        n = self._suppressed.pop(key, 0)
        self._last[key] = now
        emit(text + (f" ({n} more like this since the last message)" if n else ""))
        return True


class SegmentNode(Node):
    """The segmentation node. ``pipeline`` (tests, benchmarks) skips loading a model from the parameters."""

    def __init__(self, node_name: str = NODE_NAME, *, pipeline: SegmentationPipeline | None = None,
                 **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        self._worker: LatestWinsWorker[tuple[PointCloud2, float]] | None = None
        try:
            self._setup(node_name, pipeline)
        except BaseException:
            self.destroy_node()  # a node that failed to start must not leak its ROS entities
            raise

    def _setup(self, node_name: str, pipeline: SegmentationPipeline | None) -> None:
        self.params = self._declare_parameters()
        self.stats = NodeStats()
        self._throttle = _Throttle()
        try:
            labels = load_label_config(self.params.label_config or None)
        except (OSError, ValueError) as err:
            raise NodeStartupError(f"parameter 'label_config': {err}") from err
        if pipeline is None:
            pipeline = self._load_pipeline()
        self.pipeline = pipeline
        self.frames = FramePipeline(pipeline, pc.make_rgb_lut(labels.color_map_bgr), self._settings(self.params))
        qos = cloud_qos(self.params.qos_reliability, self.params.qos_depth)
        self._pub = self.create_publisher(PointCloud2, self.params.output_topic, qos)
        self._latency_pub = self.create_publisher(DiagnosticArray, LATENCY_TOPIC, latency_qos())
        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self._worker = LatestWinsWorker(
            self._handle, on_error=self._on_error, name=f"{node_name}-inference")
        self._sub = self.create_subscription(PointCloud2, self.params.input_topic, self._on_cloud, qos)
        self._timer = None
        self._start_timer()
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        p = self.params
        self.get_logger().info(
            f"ready: {self.resolve_topic_name(p.input_topic)} -> {self.resolve_topic_name(p.output_topic)} "
            f"({p.qos_reliability}, depth {p.qos_depth}); backend {p.backend} on {pipeline.device}, "
            f"{pipeline.config.name} with {pipeline.config.num_classes} classes, voxel {pipeline.config.voxel_size} m")

    # ------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> NodeParams:
        try:
            for spec in SPECS:
                default = list(spec.default) if isinstance(spec.default, list | tuple) else spec.default
                self.declare_parameter(spec.name, default, _descriptor(spec))
            values = {s.name: self.get_parameter(s.name).value for s in SPECS}
            return NodeParams.from_mapping(values, source=f"node {self.get_fully_qualified_name()}")
        except (ParameterException, ParamError) as err:
            raise NodeStartupError(f"invalid parameter: {err}") from err

    def _load_pipeline(self) -> SegmentationPipeline:
        p = self.params
        try:
            request = PipelineRequest(resolve_checkpoint(p.checkpoint), device=p.device, num_threads=p.num_threads,
                                      bounds=p.bounds, voxel_size=p.voxel_size, warmup=p.warmup,
                                      label_config=p.label_config)
            self.get_logger().info(f"loading {request.checkpoint} (backend {p.backend}, device {p.device})")
            return create_pipeline(p.backend, request)
        except BackendError as err:
            raise NodeStartupError(str(err)) from err

    @staticmethod
    def _settings(p: NodeParams) -> ProcessorSettings:
        return ProcessorSettings(p.intensity_fields, p.intensity_scale, p.max_points, p.publish_confidence)

    def _changes(self, parameters) -> dict[str, Any]:
        return {q.name: q.value for q in parameters if q.name in DYNAMIC}

    def _validate_parameters(self, parameters) -> SetParametersResult:
        try:
            self.params.replace(**self._changes(parameters))
        except ParamError as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters) -> None:
        changes = self._changes(parameters)
        if not changes:
            return
        old, self.params = self.params, self.params.replace(**changes)
        self.frames.settings = self._settings(self.params)
        if old.log_period_s != self.params.log_period_s:
            self._start_timer()
        self.get_logger().info("parameters changed: " + ", ".join(f"{k}={v!r}" for k, v in changes.items()))

    def _start_timer(self) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        if self.params.log_period_s > 0:
            self._timer = self.create_timer(self.params.log_period_s, self._summarize)

    # ------------------------------------------------------------------ frames
    def _on_cloud(self, msg: PointCloud2) -> None:
        self.stats.count("received")
        if self._worker.submit((msg, time.perf_counter())):
            self.stats.count("dropped")

    def _handle(self, item: tuple[PointCloud2, float]) -> None:
        msg, t_recv = item
        t_start = time.perf_counter()
        try:
            result = self.frames.process(msg)
        except FrameRejected as rej:
            self.stats.reject(rej.category)
            self._throttle(f"reject:{rej.category}", self.get_logger().warning,
                           f"rejected a cloud from '{msg.header.frame_id}' at {_stamp(msg)} ({rej.category}): "
                           f"{rej.reason}")
            return
        if result.confidence_skipped:
            self._throttle("confidence", self.get_logger().warning,
                           "publish_confidence is on but the input already has a 'confidence' field; not added")
        t_pub = time.perf_counter()
        self._pub.publish(result.cloud)
        t_done = time.perf_counter()
        timings = {"queue": (t_start - t_recv) * 1e3, **result.timings_ms}
        timings["processing"] = timings.pop("total")
        timings["publish"] = (t_done - t_pub) * 1e3
        timings["total"] = (t_done - t_recv) * 1e3
        self.stats.frame_done(timings)
        self._latency_pub.publish(self._latency_msg(msg, timings, result))

    def _on_error(self, item: tuple[PointCloud2, float], exc: BaseException) -> None:
        self.stats.count("errors")
        msg = item[0]
        self._throttle(f"error:{type(exc).__name__}", self.get_logger().error,
                       f"failed to label a cloud from '{msg.header.frame_id}' at {_stamp(msg)}: "
                       f"{type(exc).__name__}: {exc}")
        self.get_logger().debug("".join(traceback.format_exception(exc)))

    def _latency_msg(self, msg: PointCloud2, timings: dict[str, float], result: FrameResult) -> DiagnosticArray:
        values = [KeyValue(key=k, value=f"{v:.4f}") for k, v in timings.items()]
        values += [KeyValue(key="points", value=str(result.num_points)),
                   KeyValue(key="valid_points", value=str(result.num_valid_points)),
                   KeyValue(key="voxels", value=str(result.num_voxels))]
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name=f"{self.get_fully_qualified_name()}: latency_ms",
                                  message=f"{result.num_points} points in {timings['total']:.1f} ms", values=values)
        return DiagnosticArray(header=msg.header, status=[status])

    # ------------------------------------------------------------------ reporting
    def _summarize(self) -> None:
        seconds, counts, frames = self.stats.take_period()
        text, values = summary_line(seconds, counts, frames, self.stats.totals, STAGES)
        self.get_logger().info(text)
        bad = counts.get("rejected", 0) + counts.get("errors", 0)
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if bad else DiagnosticStatus.OK,
            name=f"{self.get_fully_qualified_name()}: segmentation", hardware_id=str(self.pipeline.device),
            message=text.split(";")[0],
            values=[KeyValue(key=k, value=f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in values.items()]
            + [KeyValue(key=f"rejected_{k}", value=str(v)) for k, v in sorted(self.stats.rejected.items())])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True once no frame is being processed or waiting (tests, benchmarks)."""
        return self._worker is None or self._worker.wait_idle(timeout)

    def destroy_node(self) -> None:
        """Stop taking frames, let the running inference finish, then tear down the ROS entities."""
        if self._worker is not None:
            self._worker.stop(timeout=30.0)
        super().destroy_node()


def _stamp(msg: PointCloud2) -> str:
    return f"{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}"


def main(argv: Sequence[str] | None = None) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=list(sys.argv if argv is None else argv))
    node = None
    code = 0
    try:
        node = SegmentNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except NodeStartupError as err:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {err}")
        code = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
