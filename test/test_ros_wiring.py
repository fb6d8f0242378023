"""The ROS 2 Kilted wheels are wired: rclpy can publish a PointCloud2 and receive it in-process."""

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) not installed")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402

pytestmark = pytest.mark.ros


def test_pointcloud2_roundtrip_in_process():
    context = rclpy.context.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("wiring_test", context=context)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        received: list[PointCloud2] = []
        node.create_subscription(PointCloud2, "wiring_points", received.append, qos)
        pub = node.create_publisher(PointCloud2, "wiring_points", qos)

        xyz = np.random.default_rng(0).normal(size=(1000, 3)).astype(np.float32)
        msg = PointCloud2()
        msg.header.frame_id = "velodyne"
        msg.header.stamp.sec = 42
        msg.height, msg.width = 1, len(xyz)
        msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                      for i, n in enumerate("xyz")]
        msg.point_step, msg.row_step = 12, 12 * len(xyz)
        msg.data = xyz.tobytes()

        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 10.0
        while not received and time.monotonic() < deadline:
            pub.publish(msg)
            executor.spin_once(timeout_sec=0.1)
        assert received, "no PointCloud2 came back within 10 s"
        got = received[0]
        assert got.header.frame_id == "velodyne" and got.header.stamp.sec == 42
        assert [f.name for f in got.fields] == ["x", "y", "z"]
        np.testing.assert_array_equal(np.frombuffer(bytes(got.data), np.float32).reshape(-1, 3), xyz)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
