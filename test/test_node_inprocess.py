"""segment_node in this process: a published cloud comes back labeled, every point, in order.

References: the labels are checked against ``SegmentationPipeline.segment`` on the same points (the
same pipeline object the node uses, called directly), fields against the structured array the cloud
was built from, colours against the label YAML.
"""

import threading

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) not installed")
pytest.importorskip("diagnostic_msgs", reason="diagnostic_msgs wheel (ros-kilted-diagnostic-msgs) not installed")
from node_helpers import (  # noqa: E402
    LinearNet,
    Probe,
    ros_cloud,
    ros_context,
    sim_scan,
    spinning,
    structured_cloud,
    stub_pipeline,
    wait_for,
)
from rclpy.parameter import Parameter  # noqa: E402

from i2p_ros.data.labels import load_label_config  # noqa: E402
from i2p_ros.models.build import load_model_config  # noqa: E402
from i2p_ros.ros import pointcloud2 as pc  # noqa: E402
from i2p_ros.ros.processor import STAGES  # noqa: E402
from i2p_ros.ros.segment_node import NodeStartupError, SegmentNode  # noqa: E402

pytestmark = pytest.mark.ros


def _reliable(extra=()):
    return [Parameter("qos_reliability", value="reliable"), Parameter("qos_depth", value=10),
            Parameter("log_period_s", value=0.0), *extra]


def _scan_points():
    scan = sim_scan(azimuth_steps=48)
    xyzi = scan.points.copy()
    xyzi[:3, 0] = [np.nan, np.inf, -np.inf]          # unclassifiable -> label 0, kept
    xyzi[3] = [80.0, 0.0, 0.0, 0.5]                   # outside range_max.x = 51.2 -> label 0
    return xyzi


def test_labeled_cloud_keeps_every_point_in_order_and_matches_pipeline():
    xyzi = _scan_points()
    points = structured_cloud(xyzi)
    pipeline = stub_pipeline()
    expected = pipeline.segment(xyzi).labels
    assert len(np.unique(expected)) > 3, "the stand-in network must produce several classes"
    with ros_context() as ctx:
        node = SegmentNode(context=ctx, pipeline=pipeline, parameter_overrides=_reliable())
        probe = Probe(ctx)
        with spinning(ctx, node, probe.node):
            probe.wait_matched()
            probe.pub.publish(ros_cloud(points, sec=11, nanosec=22))
            assert wait_for(lambda: probe.clouds and probe.latency, 20.0), "no labeled cloud within 20 s"
            stats = node.stats.snapshot()
    out = probe.clouds[0]
    assert out.header.frame_id == "velodyne" and (out.header.stamp.sec, out.header.stamp.nanosec) == (11, 22)
    assert out.width * out.height == len(xyzi)
    got = pc.read_points(out)
    for name in points.dtype.names:   # every input field, every point, same order (NaN compared as NaN)
        np.testing.assert_array_equal(got[name], points[name], err_msg=name)
    np.testing.assert_array_equal(got["label"], expected)
    assert (got["label"][:4] == 0).all()
    colours = pc.unpack_rgb(got["rgb"])
    np.testing.assert_array_equal(colours, load_label_config().colors_rgb(expected))
    lat = probe.latency[0]
    assert (lat.header.stamp.sec, lat.header.stamp.nanosec) == (11, 22)
    keys = {kv.key: float(kv.value) for kv in lat.status[0].values}
    for stage in [s for s in STAGES if s != "kernel_maps"] + ["queue", "publish", "total"]:
        assert keys[stage] >= 0.0, stage
    assert keys["points"] == len(xyzi) and keys["total"] >= keys["network"]
    assert stats["totals"] == {"received": 1, "labeled": 1}


def test_busy_node_keeps_only_the_latest_waiting_frame():
    gate = threading.Event()
    net = LinearNet(gate=gate)
    xyzi = sim_scan(azimuth_steps=16).points
    with ros_context() as ctx:
        node = SegmentNode(context=ctx, pipeline=stub_pipeline(net), parameter_overrides=_reliable())
        probe = Probe(ctx, reliable_out=True)
        with spinning(ctx, node, probe.node):
            probe.wait_matched()
            for sec in range(1, 6):   # frame 1 blocks in the network; 2..5 arrive while busy
                probe.pub.publish(ros_cloud(structured_cloud(xyzi), sec=sec))
                assert wait_for(lambda s=sec: node.stats.totals["received"] == s, 10.0)
            gate.set()
            assert wait_for(lambda: len(probe.clouds) == 2, 20.0)
            assert node.wait_idle(10.0)
            stats = node.stats.snapshot()["totals"]
    assert [c.header.stamp.sec for c in probe.clouds] == [1, 5]   # latest wins
    assert stats == {"received": 5, "labeled": 2, "dropped": 3}
    assert net.calls == 2


def test_parameters_described_validated_and_applied_at_run_time():
    xyzi = sim_scan(azimuth_steps=16).points
    points = np.zeros(len(xyzi), np.dtype({"names": ["x", "y", "z", "reflectivity"], "formats": ["<f4"] * 3 + ["<u2"],
                                           "offsets": [0, 4, 8, 12], "itemsize": 16}))
    for k, name in enumerate(("x", "y", "z")):
        points[name] = xyzi[:, k]
    points["reflectivity"] = np.arange(len(xyzi)) % 256
    pipeline = stub_pipeline()
    with ros_context() as ctx:
        node = SegmentNode(context=ctx, pipeline=pipeline, parameter_overrides=_reliable())
        desc = node.describe_parameters(["checkpoint", "qos_depth", "intensity_scale", "voxel_size"])
        assert desc[0].read_only and "demo model" in desc[0].description
        depth_range = desc[1].integer_range[0]
        assert desc[1].read_only and (depth_range.from_value, depth_range.to_value) == (1, 1000)
        assert not desc[2].read_only
        assert desc[3].floating_point_range[0].to_value == 10.0
        bad = node.set_parameters([Parameter("max_points", value=0)])[0]
        assert not bad.successful and "max_points" in bad.reason
        ro = node.set_parameters([Parameter("checkpoint", value="/x.pt")])[0]
        assert not ro.successful
        ok = node.set_parameters([Parameter("intensity_scale", value=1 / 255),
                                  Parameter("publish_confidence", value=True)])
        assert all(r.successful for r in ok)
        probe = Probe(ctx)
        with spinning(ctx, node, probe.node):
            probe.wait_matched()
            probe.pub.publish(ros_cloud(points, sec=3))
            assert wait_for(lambda: probe.clouds, 20.0)
    got = pc.read_points(probe.clouds[0])
    ref_in = np.column_stack([xyzi[:, :3], points["reflectivity"].astype(np.float32) * np.float32(1 / 255)])
    ref = pipeline.segment(ref_in, confidence=True)
    np.testing.assert_array_equal(got["label"], ref.labels)     # the new intensity scale was used
    np.testing.assert_allclose(got["confidence"], ref.confidence, rtol=0, atol=0)
    np.testing.assert_array_equal(got["reflectivity"], points["reflectivity"])


def test_configuration_errors_stop_the_node_at_start(tmp_path):
    from node_helpers import save_untrained_lite0

    ckpt = save_untrained_lite0(tmp_path / "lite0.pt")
    cases = [
        ([Parameter("checkpoint", value=str(tmp_path / "missing.pt"))], "does not exist"),
        ([Parameter("checkpoint", value=str(ckpt)), Parameter("backend", value="tensorrt")], "tensorrt"),
        ([Parameter("checkpoint", value=str(ckpt)), Parameter("voxel_size", value=0.05),
          Parameter("warmup", value=False)], f"trained with {load_model_config('lite0').voxel_size:g}"),
        ([Parameter("range_min", value=[0.0, 0.0, 5.0])], "range_min.z"),
        ([Parameter("device", value="gpu")], "device"),
    ]
    with ros_context() as ctx:
        for overrides, text in cases:
            with pytest.raises(NodeStartupError, match=text):
                SegmentNode(context=ctx, parameter_overrides=overrides)
