"""Bad input never kills segment_node: each malformed cloud is rejected and counted under its reason,
and the valid frame sent right after it is labeled normally."""

import array

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) not installed")
pytest.importorskip("diagnostic_msgs", reason="diagnostic_msgs wheel (ros-kilted-diagnostic-msgs) not installed")
from node_helpers import Probe, ros_cloud, ros_context, spinning, stub_pipeline, wait_for  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402

from i2p_ros.ros import pointcloud2 as pc  # noqa: E402
from i2p_ros.ros.segment_node import SegmentNode  # noqa: E402

pytestmark = pytest.mark.ros
MAX_POINTS = 5000
XYZI = np.dtype({"names": ["x", "y", "z", "intensity"], "formats": ["<f4"] * 4, "offsets": [0, 4, 8, 12],
                 "itemsize": 16})


def _points(n, seed=0):
    rng = np.random.default_rng(seed)
    pts = np.zeros(n, XYZI)
    pts["x"], pts["y"] = rng.uniform(-20, 20, n), rng.uniform(-20, 20, n)
    pts["z"], pts["intensity"] = rng.uniform(-2, 1, n), rng.random(n)
    return pts


def _raw(fields, width, point_step, data, height=1, row_step=None):
    msg = PointCloud2()
    msg.header.frame_id = "velodyne"
    msg.height, msg.width = height, width
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields]
    msg.point_step = point_step
    msg.row_step = point_step * width if row_step is None else row_step
    msg.data = array.array("B", data)
    return msg


F32 = PointField.FLOAT32
XYZ_FIELDS = [("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 8, F32, 1), ("intensity", 12, F32, 1)]


def corpus():
    good = _points(100).tobytes()
    return [
        ("empty", _raw(XYZ_FIELDS, 0, 16, b"")),
        ("missing_xyz", _raw([("y", 4, F32, 1), ("z", 8, F32, 1)], 100, 16, good)),
        ("bad_datatype", _raw([("x", 0, 9, 1), ("y", 4, F32, 1), ("z", 8, F32, 1)], 100, 16, good)),
        ("bad_length", _raw(XYZ_FIELDS, 100, 16, good[:-16])),                 # one point short
        ("bad_length", _raw(XYZ_FIELDS, 10, 16, good[:160], height=10, row_step=8)),  # row_step < width*step
        ("too_large", _raw(XYZ_FIELDS, 10**9, 16, good)),                       # absurd width, tiny data
        ("too_large", ros_cloud(_points(MAX_POINTS + 1))),                     # real data, above max_points
        ("malformed", _raw([("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 12, F32, 2)], 100, 16, good)),  # past step
        ("malformed", _raw([("x", 0, F32, 2), ("y", 8, F32, 1), ("z", 12, F32, 1)], 100, 16, good)),  # x count 2
    ]


def test_malformed_corpus_is_counted_and_the_next_frame_is_labeled():
    pipeline = stub_pipeline()
    overrides = [Parameter("qos_reliability", value="reliable"), Parameter("qos_depth", value=10),
                 Parameter("max_points", value=MAX_POINTS), Parameter("log_period_s", value=0.0)]
    cases = corpus()
    expected_rejects: dict[str, int] = {}
    with ros_context() as ctx:
        node = SegmentNode(context=ctx, pipeline=pipeline, parameter_overrides=overrides)
        probe = Probe(ctx, reliable_out=True)
        with spinning(ctx, node, probe.node):
            probe.wait_matched()
            for k, (category, bad) in enumerate(cases):
                bad.header.stamp.sec = 1000 + k
                probe.pub.publish(bad)
                expected_rejects[category] = expected_rejects.get(category, 0) + 1
                assert wait_for(lambda c=category, n=expected_rejects[category]:
                                node.stats.rejected.get(c, 0) == n, 10.0), \
                    f"case {k} ({category}) not rejected as {category}: {node.stats.snapshot()}"
                valid = _points(200, seed=k)
                if k == 0:   # NaN/Inf points are labeled 0, not dropped and not a reason to reject
                    valid["x"][:3] = [np.nan, np.inf, -np.inf]
                probe.pub.publish(ros_cloud(valid, sec=k))
                assert wait_for(lambda n=k + 1: len(probe.clouds) == n, 10.0), f"valid frame after case {k} lost"
                got = pc.read_points(probe.clouds[-1])
                assert probe.clouds[-1].header.stamp.sec == k and len(got) == 200
                xyzi = np.column_stack([valid[n] for n in XYZI.names])
                np.testing.assert_array_equal(got["label"], pipeline.segment(xyzi).labels)
                if k == 0:
                    assert (got["label"][:3] == 0).all() and (got["label"][3:] != 0).any()
            stats = node.stats.snapshot()
    assert stats["rejected"] == expected_rejects
    assert stats["totals"]["labeled"] == len(cases)
    assert stats["totals"]["rejected"] == len(cases)
    assert stats["totals"].get("errors", 0) == 0
