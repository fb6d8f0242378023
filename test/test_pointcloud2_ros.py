"""The codec on real rclpy ``sensor_msgs.msg.PointCloud2`` objects, through rclpy serialisation.

Expected values come from the structured arrays the clouds are built from, not from the codec.
"""

import array

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) not installed")
from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from i2p_ros.ros import pointcloud2 as pc  # noqa: E402

pytestmark = pytest.mark.ros


def velodyne_points(order="<", h=1, w=500, seed=0):
    """x, y, z, intensity float32 + ring uint16 + a count=2 float64 field, padded to 48 bytes."""
    dt = np.dtype({"names": ["x", "y", "z", "intensity", "ring", "t"],
                   "formats": [order + "f4"] * 4 + [order + "u2", (order + "f8", (2,))],
                   "offsets": [0, 4, 8, 12, 16, 24], "itemsize": 48})
    rng = np.random.default_rng(seed)
    pts = np.zeros((h, w), dt)
    for name in ("x", "y", "z"):
        pts[name] = rng.normal(scale=20, size=(h, w))
    pts["x"][0, :3] = [np.nan, np.inf, -np.inf]
    pts["intensity"] = rng.integers(0, 256, (h, w))
    pts["ring"] = rng.integers(0, 64, (h, w))
    pts["t"] = rng.random((h, w, 2))
    return pts


def header():
    return Header(frame_id="velodyne", stamp=Time(sec=12, nanosec=345))


def roundtrip(msg):
    return deserialize_message(serialize_message(msg), PointCloud2)


def assert_same_values(got, want):
    for name in want.dtype.names:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("order,h", [("<", 1), (">", 1), ("<", 4)])
def test_real_message_decode_after_serialisation(order, h):
    pts = velodyne_points(order, h=h, w=50)
    msg = pc.cloud_from_points(pts, header(), factory=pc.RosFactory())
    assert isinstance(msg, PointCloud2) and isinstance(msg.data, array.array)
    assert msg.is_bigendian == (order == ">")
    got_msg = roundtrip(msg)
    assert [(f.name, f.offset, f.datatype, f.count) for f in got_msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1), ("z", 8, PointField.FLOAT32, 1),
        ("intensity", 12, PointField.FLOAT32, 1), ("ring", 16, PointField.UINT16, 1),
        ("t", 24, PointField.FLOAT64, 2)]
    assert_same_values(pc.decode(got_msg, organized=True), pts)
    xyzi = pc.xyzi(pc.decode(got_msg), intensity_scale=1 / 255)
    flat = pts.reshape(-1)
    np.testing.assert_array_equal(xyzi[:, 0], flat["x"].astype(np.float32))
    np.testing.assert_allclose(xyzi[:, 3], flat["intensity"] / 255, rtol=1e-6)


def test_decode_of_hand_built_message_with_bytes_data():
    xyz = np.arange(30, dtype=np.float32).reshape(10, 3)
    msg = PointCloud2(height=1, width=10, point_step=12, row_step=120, is_dense=True)
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, n in enumerate("xyz")]
    msg.data = xyz.tobytes()
    np.testing.assert_array_equal(pc.xyz(pc.decode(roundtrip(msg))), xyz)


@pytest.mark.parametrize("order,h", [("<", 1), (">", 1), ("<", 3)])
def test_labeled_output_is_a_real_message_that_survives_serialisation(order, h):
    pts = velodyne_points(order, h=h, w=400, seed=1)
    msg_in = roundtrip(pc.cloud_from_points(pts, header(), is_dense=False, factory=pc.RosFactory()))
    labels = np.random.default_rng(2).choice([0, 10, 40, 44, 48, 70, 252], size=pts.size).astype(np.uint16)
    lut = pc.make_rgb_lut({10: [245, 150, 100], 40: [255, 0, 255], 70: [0, 175, 0]})
    out = pc.encode_labeled(msg_in, labels, lut)  # default factory: rclpy messages
    assert isinstance(out, PointCloud2)
    back = roundtrip(out)
    assert back.header.frame_id == "velodyne"
    assert (back.header.stamp.sec, back.header.stamp.nanosec) == (12, 345)
    assert (back.height, back.width, back.is_bigendian, back.is_dense) == (h, 400, False, False)
    assert [f.name for f in back.fields] == ["x", "y", "z", "intensity", "ring", "t", "label", "rgb"]
    assert back.point_step == 48 and back.row_step == 400 * 48  # label at 40, rgb at 44
    got = pc.decode(back, organized=True)
    assert_same_values(got, pts)
    np.testing.assert_array_equal(got["label"].reshape(-1), labels)
    bits = got["rgb"].reshape(-1).view(np.uint32)
    assert (bits[labels == 10] == (100 << 16 | 150 << 8 | 245)).all()
    assert (bits[labels == 40] == 0xFF00FF).all()
    assert (bits[labels == 0] == 0).all()


def test_rosbags_cdr_is_read_by_rclpy():
    """Clouds written with rosbags (bag writer) deserialise in rclpy (node) to the same points."""
    typestores = pytest.importorskip("rosbags.typesys", reason="rosbags not installed")
    store = typestores.get_typestore(typestores.Stores.ROS2_KILTED)
    Header_ = store.types["std_msgs/msg/Header"]
    Time_ = store.types["builtin_interfaces/msg/Time"]
    pts = velodyne_points(">", h=2, w=30, seed=3)
    msg = pc.cloud_from_points(pts, Header_(stamp=Time_(sec=5, nanosec=6), frame_id="lidar"),
                               factory=pc.RosbagsFactory(store))
    raw = store.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2")
    ros_msg = deserialize_message(bytes(raw), PointCloud2)
    assert ros_msg.header.frame_id == "lidar" and ros_msg.is_bigendian
    assert_same_values(pc.decode(ros_msg, organized=True), pts)
