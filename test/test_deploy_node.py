"""segment_node with ``backend: onnxruntime`` publishes the same labeled cloud as with ``backend: torch`` on the
same input; a bad model file stops it at start with a message naming the file."""

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) not installed")
pytest.importorskip("diagnostic_msgs", reason="diagnostic_msgs wheel (ros-kilted-diagnostic-msgs) not installed")
pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
from deploy_helpers import exported, one_torch_thread, scan, swapped_label_config  # noqa: E402, F401
from node_helpers import Probe, ros_cloud, ros_context, spinning, structured_cloud, wait_for  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from i2p_ros.ros import pointcloud2 as pc  # noqa: E402
from i2p_ros.ros.segment_node import NodeStartupError, SegmentNode  # noqa: E402

pytestmark = pytest.mark.ros


def _params(checkpoint, backend, *extra):
    return [Parameter("checkpoint", value=str(checkpoint)), Parameter("backend", value=backend),
            Parameter("device", value="cpu"), Parameter("num_threads", value=1), Parameter("warmup", value=False),
            Parameter("qos_reliability", value="reliable"), Parameter("log_period_s", value=0.0), *extra]


def _labeled(ctx, params, cloud):
    node = SegmentNode(context=ctx, parameter_overrides=params)
    probe = Probe(ctx)
    with spinning(ctx, node, probe.node):
        probe.wait_matched()
        probe.pub.publish(cloud)
        assert wait_for(lambda: probe.clouds and probe.latency, 120.0), "no labeled cloud within 120 s"
    keys = {kv.key: float(kv.value) for kv in probe.latency[0].status[0].values}
    return pc.read_points(probe.clouds[0]), keys


def test_onnxruntime_node_publishes_the_same_labeled_cloud_as_torch():
    ckpt, onnx_path = exported("lite0", 24)
    xyzi = scan(160, seed=51).copy()
    xyzi[0, :3] = np.nan                       # unclassifiable -> 0 with either backend
    xyzi[1, :3] = [0.0, 70.0, 0.0]             # outside the default range box
    points = structured_cloud(xyzi)
    with ros_context() as ctx:
        ref, _ = _labeled(ctx, _params(ckpt, "torch"), ros_cloud(points, sec=5))
        got, timings = _labeled(ctx, _params(onnx_path, "onnxruntime"), ros_cloud(points, sec=5))
    assert len(np.unique(ref["label"])) >= 4, "untrained model predicts too few classes: the comparison is weak"
    assert ref["label"][0] == 0 and ref["label"][1] == 0
    assert got.dtype == ref.dtype
    for name in ref.dtype.names:               # every field of every point, labels and colours included
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    assert timings["kernel_maps"] > 0.0 and timings["network"] > 0.0   # tables reported apart from the graph


def test_bad_model_files_stop_the_node_at_start(tmp_path):
    ckpt, onnx_path = exported("lite0", 24)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(onnx_path.read_bytes()[:1000])
    cases = [
        (_params(corrupt, "onnxruntime"), f"{corrupt}.*corrupt"),
        (_params(ckpt, "onnxruntime"), "PyTorch checkpoint.*i2p-export"),
        (_params(onnx_path, "onnxruntime", Parameter("voxel_size", value=0.3)), "voxel_size = 0.3 m"),
        # the node's own label_config parameter (not only the environment) is what the model is checked against
        (_params(onnx_path, "onnxruntime", Parameter("label_config", value=str(swapped_label_config(tmp_path)))),
         "label map differ.*swapped.yaml"),
    ]
    from i2p_ros.deploy.trt_backend import trt_unavailable_reason

    if trt_unavailable_reason() is not None:   # no CUDA / TensorRT here: the reason, at start
        cases.append((_params(onnx_path, "tensorrt"), "backend 'tensorrt' is not available"))
    with ros_context() as ctx:
        for params, text in cases:
            with pytest.raises(NodeStartupError, match=text):
                SegmentNode(context=ctx, parameter_overrides=params)
