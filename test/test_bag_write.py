"""i2p-bag-write: a SemanticKITTI sequence -> rosbag2 (mcap and sqlite3) -> read back frames, stamps, labels.

The read side here uses rosbags directly (and rclpy's deserializer where installed), not our bag reader,
so the files are checked against the rosbag2 format rather than against our own code.
"""

import numpy as np
import pytest

from i2p_ros.data.semantic_kitti import write_scan, write_times
from i2p_ros.ros import bag_write
from i2p_ros.ros import pointcloud2 as pc
from i2p_ros.ros.bag_io import read_frames

TIMES = np.array([0.0, 0.1037, 0.2071, 0.3105])


def _sequence(root, n=4, labels=True, times=True, seed=0):
    rng = np.random.default_rng(seed)
    scans = []
    for i in range(n):
        pts = rng.normal(scale=10, size=(200 + 10 * i, 4)).astype(np.float32)
        pts[0, 0] = np.nan
        sem = rng.choice([10, 40, 50, 70, 252], len(pts)).astype(np.uint16) if labels else None
        inst = rng.integers(0, 5, len(pts)).astype(np.uint16) if labels else None
        write_scan(root, 0, i, pts, sem, inst)
        scans.append((pts, sem))
    if times:
        write_times(root / "sequences/00/times.txt", TIMES[:n])
    return root / "sequences/00", scans


def _read_raw(bag):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    out = {}
    with Reader(bag) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, store.deserialize_cdr(raw, conn.msgtype), bytes(raw)))
    return out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_frames_stamps_and_labels(tmp_path, storage):
    seq, scans = _sequence(tmp_path / "ds")
    bag = tmp_path / f"bag_{storage}"
    assert bag_write.main(["--sequence", str(seq), "--out", str(bag), "--storage", storage, "--frame-id", "lidar",
                           "--start-time", "1700000000", "--quiet"]) == 0
    assert any(p.suffix in {".mcap", ".db3"} for p in bag.iterdir())
    topics = _read_raw(bag)
    assert set(topics) == {"/points", "/points_gt"}
    clouds, gts = topics["/points"], topics["/points_gt"]
    assert len(clouds) == len(gts) == len(scans)
    for (t, msg, _), (t_gt, gt, _), (pts, sem), dt in zip(clouds, gts, scans, TIMES, strict=True):
        want_ns = 1_700_000_000 * 10**9 + round(dt * 1e9)
        assert t == t_gt == want_ns
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == want_ns
        assert msg.header.frame_id == gt.header.frame_id == "lidar"
        assert [(f.name, f.offset, f.datatype) for f in msg.fields] == [
            ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("intensity", 12, 7)]
        assert msg.point_step == 16 and msg.width == len(pts) and msg.height == 1 and not msg.is_dense
        np.testing.assert_array_equal(np.frombuffer(msg.data.tobytes(), "<f4").reshape(-1, 4), pts)
        g = pc.read_points(gt)
        assert g.dtype["label"] == np.dtype("<u4")
        np.testing.assert_array_equal(g["label"], sem)                   # raw ids, instance bits removed
        np.testing.assert_array_equal(np.column_stack([g["x"], g["y"], g["z"]]), pts[:, :3])
    # our reader pairs each frame with its ground truth
    frames = list(read_frames(bag))
    assert [f.stamp_ns for f in frames] == [t for t, _, _ in clouds]
    for f, (pts, sem) in zip(frames, scans, strict=True):
        np.testing.assert_array_equal(f.gt_labels, sem)
        np.testing.assert_array_equal(f.xyz, pts[:, :3])


def test_cdr_is_readable_by_rclpy(tmp_path):
    rclpy = pytest.importorskip("rclpy", reason="rclpy not installed")  # noqa: F841
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2

    seq, scans = _sequence(tmp_path / "ds", n=2)
    bag_write.write_bag(seq, tmp_path / "bag")
    (_, _, raw), _ = _read_raw(tmp_path / "bag")["/points"]
    msg = deserialize_message(raw, PointCloud2)
    np.testing.assert_array_equal(pc.xyzi(pc.decode(msg)), scans[0][0])


def test_without_times_or_labels_frames_are_10hz_and_no_ground_truth(tmp_path):
    seq, scans = _sequence(tmp_path / "ds", n=3, labels=False, times=False)
    rep = bag_write.write_bag(seq, tmp_path / "bag", storage="sqlite3", max_frames=2, start_s=5.0)
    assert rep.frames == 2 and not rep.with_labels and rep.time_source == "10 Hz"
    topics = _read_raw(tmp_path / "bag")
    assert set(topics) == {"/points"}
    assert [t for t, _, _ in topics["/points"]] == [5 * 10**9, 5 * 10**9 + 100_000_000]
    assert all(f.gt_labels is None for f in read_frames(tmp_path / "bag"))


def test_errors(tmp_path, capsys):
    seq, _ = _sequence(tmp_path / "ds", n=2)
    (tmp_path / "exists").mkdir()
    assert bag_write.main(["--sequence", str(seq), "--out", str(tmp_path / "exists")]) == 2
    assert "exists already" in capsys.readouterr().err
    assert bag_write.main(["--sequence", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    assert "no .bin scans" in capsys.readouterr().err
    (seq / "times.txt").write_text("0.0\n")
    assert bag_write.main(["--sequence", str(seq), "--out", str(tmp_path / "c")]) == 2
    assert "1 times for 2 scans" in capsys.readouterr().err
