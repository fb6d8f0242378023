"""SemanticKITTI reader / writer: byte layout, round trips, and every malformed-file error."""

import numpy as np
import pytest

from i2p_ros.data.labels import UnknownLabelError, load_label_config
from i2p_ros.data.semantic_kitti import (
    Scan,
    SemanticKittiFormatError,
    camera_poses,
    lidar_poses,
    list_scans,
    prediction_path,
    read_label_file,
    read_points,
    read_scan,
    read_sequence_meta,
    write_label_file,
    write_predictions,
    write_scan,
    write_sequence,
)


def _random_scan(rng, n):
    pts = rng.normal(0, 20, (n, 4)).astype(np.float32)
    sem = rng.choice([0, 10, 40, 48, 50, 70, 252], n).astype(np.uint16)
    inst = rng.integers(0, 500, n).astype(np.uint16)
    return Scan(pts, sem, inst)


def _yaw_pose(x, y, yaw):
    p = np.eye(4)
    p[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    p[:3, 3] = [x, y, 1.73]
    return p


def test_label_file_byte_layout(tmp_path):
    p = write_label_file(tmp_path / "a.label", np.array([40, 10, 0], np.uint16), np.array([0, 3, 65535], np.uint16))
    words = np.fromfile(p, dtype="<u4")
    assert words.tolist() == [40, (3 << 16) | 10, 65535 << 16]   # low 16 bits semantic, high 16 instance
    sem, inst = read_label_file(p)
    assert sem.tolist() == [40, 10, 0] and inst.tolist() == [0, 3, 65535]


def test_points_file_is_float32_xyzi(tmp_path):
    pts = np.array([[1.5, -2.0, 0.25, 0.5]], np.float32)
    p = write_scan(tmp_path, 3, 7, pts).velodyne
    assert p == tmp_path / "sequences" / "03" / "velodyne" / "000007.bin"
    assert np.fromfile(p, "<f4").tolist() == [1.5, -2.0, 0.25, 0.5]


def test_sequence_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    scans = [_random_scan(rng, n) for n in (50, 73, 1)]
    velo = np.stack([_yaw_pose(2.0 * i, 0.1 * i, 0.05 * i) for i in range(3)])
    tr = np.array([[0, -1, 0, -0.004], [0, 0, -1, -0.076], [1, 0, 0, -0.272], [0, 0, 0, 1.0]])
    calib = {"P0": rng.normal(size=(3, 4)), "Tr": tr}
    times = np.array([0.0, 0.1036, 0.2071])
    write_sequence(tmp_path, "5", scans, poses=camera_poses(velo, tr), calib=calib, times=times)

    refs = list_scans(tmp_path, [5])
    assert [r.frame for r in refs] == ["000000", "000001", "000002"]
    for ref, s in zip(refs, scans):
        got = read_scan(ref, load_label_config())
        np.testing.assert_array_equal(got.points, s.points)
        np.testing.assert_array_equal(got.semantic, s.semantic)
        np.testing.assert_array_equal(got.instance, s.instance)
    meta = read_sequence_meta(tmp_path, 5)
    np.testing.assert_allclose(meta.velodyne_poses(), velo, atol=1e-10)
    np.testing.assert_allclose(meta.calib["P0"], calib["P0"], rtol=1e-11)
    np.testing.assert_allclose(meta.calib["Tr"], tr)
    np.testing.assert_allclose(meta.times, times, rtol=1e-6)


def test_camera_pose_convention():
    # KITTI stores camera-frame poses: P = Tr @ T_velo @ inv(Tr). A velodyne moving 1 m forward (+x)
    # moves the camera 1 m along its optical axis (+z) for the standard axis permutation.
    tr = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    velo = np.eye(4)[None].copy()
    velo[0, 0, 3] = 1.0
    cam = camera_poses(velo, tr)
    np.testing.assert_allclose(cam[0, :3, 3], [0, 0, 1.0], atol=1e-12)
    np.testing.assert_allclose(lidar_poses(cam, tr), velo, atol=1e-12)


def test_predictions_go_where_the_benchmark_expects(tmp_path):
    p = write_predictions(tmp_path, 11, 4, np.array([40, 10, 81], np.uint16))
    assert p == prediction_path(tmp_path, "11", "000004") == tmp_path / "sequences/11/predictions/000004.label"
    assert np.fromfile(p, "<u4").tolist() == [40, 10, 81]
    with pytest.raises(UnknownLabelError, match="predictions for .*000005.label.*\\[7\\]"):
        write_predictions(tmp_path, 11, 5, np.array([7], np.uint16), load_label_config())


# ------------------------------------------------------------------------------------ malformed files

@pytest.fixture
def good_seq(tmp_path):
    rng = np.random.default_rng(1)
    write_sequence(tmp_path, 0, [_random_scan(rng, 20), _random_scan(rng, 30)])
    return tmp_path


def test_bin_size_not_multiple_of_16(good_seq):
    p = good_seq / "sequences/00/velodyne/000001.bin"
    with open(p, "ab") as f:
        f.write(b"\0" * 8)
    ref = list_scans(good_seq, [0])[1]
    with pytest.raises(SemanticKittiFormatError, match=r"000001\.bin: size 488 bytes is not a multiple of 16"):
        read_scan(ref)
    with pytest.raises(SemanticKittiFormatError, match="000001.bin"):
        read_points(p)


def test_label_count_differs_from_point_count(good_seq):
    write_label_file(good_seq / "sequences/00/labels/000000.label", np.full(19, 40, np.uint16))
    ref = list_scans(good_seq, [0])[0]
    with pytest.raises(SemanticKittiFormatError,
                       match=r"000000\.label: 19 labels but the scan \(.*000000\.bin\) has 20 points"):
        read_scan(ref)


def test_label_size_not_multiple_of_4(good_seq):
    p = good_seq / "sequences/00/labels/000000.label"
    p.write_bytes(p.read_bytes()[:-2])
    with pytest.raises(SemanticKittiFormatError, match=r"000000\.label: size 78 bytes is not a multiple of 4"):
        read_scan(list_scans(good_seq, [0])[0])


def test_missing_labels_dir_for_labeled_split(good_seq):
    for f in (good_seq / "sequences/00/labels").iterdir():
        f.unlink()
    (good_seq / "sequences/00/labels").rmdir()
    with pytest.raises(SemanticKittiFormatError,
                       match=r"sequences/00/labels: missing labels directory for sequence 00 of a labeled split"):
        list_scans(good_seq, [0], labeled=True)
    assert len(list_scans(good_seq, [0], labeled=False)) == 2   # fine for an unlabeled (test) split


def test_missing_single_label_file(good_seq):
    (good_seq / "sequences/00/labels/000001.label").unlink()
    with pytest.raises(SemanticKittiFormatError, match=r"1 scans have no \.label file \(first: 000001\.label\)"):
        list_scans(good_seq, [0])


def test_unknown_raw_ids(good_seq):
    write_label_file(good_seq / "sequences/00/labels/000001.label", np.array([40] * 28 + [42, 1000], np.uint16))
    ref = list_scans(good_seq, [0])[1]
    with pytest.raises(UnknownLabelError, match=r"000001\.label: 2 points carry raw ids unknown .*\[42, 1000\]"):
        read_scan(ref, load_label_config())


def test_missing_sequence(good_seq):
    with pytest.raises(SemanticKittiFormatError, match=r"sequences/04/velodyne: velodyne directory"):
        list_scans(good_seq, ["4"])
