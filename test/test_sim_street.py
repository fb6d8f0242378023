"""Procedural drives: determinism, size, class coverage, label/point agreement, overlap, and the i2p-sim CLI."""

import dataclasses

import numpy as np
import pytest
from test_sim_raycast import surface_residual, to_world  # implicit-surface reference, shared

from i2p_ros.data.labels import load_label_config
from i2p_ros.data.raycast import GROUND, SensorConfig, simulate_scan
from i2p_ros.data.semantic_kitti import list_scans, read_scan, read_sequence_meta
from i2p_ros.data.sim import main
from i2p_ros.data.street import generate_drive

REDUCED = SensorConfig(azimuth_steps=500)


def test_same_seed_same_drive_different_seed_different_layout():
    a = generate_drive(3, seed=7, sensor=REDUCED)
    b = generate_drive(3, seed=7, sensor=REDUCED)
    c = generate_drive(3, seed=8, sensor=REDUCED)
    d = generate_drive(3, seed=7, sequence=1, sensor=REDUCED)
    sa, sb = a.scan(2), b.scan(2)
    np.testing.assert_array_equal(sa.points, sb.points)
    np.testing.assert_array_equal(sa.semantic, sb.semantic)
    np.testing.assert_array_equal(sa.instance, sb.instance)
    np.testing.assert_array_equal(a.poses, b.poses)
    for other in (c, d):
        same_layout = len(other.scene) == len(a.scene) and np.allclose(other.scene.arrays["center"],
                                                                       a.scene.arrays["center"])
        assert not same_layout
        assert other.scan(2).points.shape != sa.points.shape or not np.array_equal(other.scan(2).points, sa.points)


def test_full_size_scan_point_count_and_grid():
    drive = generate_drive(1, seed=0)
    assert drive.sensor.azimuth_steps == 2000 and len(drive.sensor.elevations_deg) == 64
    el = np.asarray(drive.sensor.elevations_deg)
    assert el.max() == pytest.approx(2.0) and el.min() == pytest.approx(-24.9)
    scan = drive.scan(0)
    assert 100_000 <= len(scan.points) <= 130_000
    assert scan.ring.max() <= 63 and scan.column.max() <= 1999
    r = np.linalg.norm(scan.points[:, :3], axis=1)
    assert r.max() <= 120.0 and r.max() > 60.0


def test_class_coverage_and_plausible_frequencies():
    cfg = load_label_config()
    counts = np.zeros(256)
    for seed in (0, 1):
        drive = generate_drive(30, seed=seed, sensor=REDUCED)
        for i in (0, 29):
            counts += np.bincount(cfg.to_train(drive.scan(i).semantic), minlength=256)
    frac = counts[:19] / counts.sum()
    names = cfg.class_names
    present = {names[i] for i in np.flatnonzero(frac > 0)}
    assert len(present) >= 12, present
    assert {"road", "sidewalk", "building", "vegetation", "terrain", "car", "pole", "trunk"} <= present
    big = {n: frac[names.index(n)] for n in ("road", "sidewalk", "building", "vegetation")}
    assert all(0.03 < v < 0.6 for v in big.values()), big     # stuff classes dominate, none swamps the rest
    assert frac[names.index("car")] < 0.2 and frac[names.index("traffic-sign")] < 0.01


def test_points_agree_with_labels_and_primitives():
    """Noise-free scan of a street: each point lies on the surface of the primitive it is labeled with."""
    drive = generate_drive(5, seed=3, sensor=REDUCED)
    i = 4
    scan = simulate_scan(drive.scene, drive.poses[i], drive.sensor, time=float(drive.times[i]), noise=False)
    a = drive.scene.arrays
    obj = scan.primitive >= 0
    np.testing.assert_array_equal(scan.semantic[obj], a["label"][scan.primitive[obj]])
    np.testing.assert_array_equal(scan.instance[obj], a["instance"][scan.primitive[obj]])
    assert (scan.semantic[scan.primitive == GROUND] == drive.scene.ground_label).all()
    pw = to_world(scan.points, drive.poses[i])
    res = surface_residual(drive.scene, scan.primitive[obj], pw[obj], time=float(drive.times[i]))
    assert res.max() < 5e-3
    # the road surface is at z = 0: its points sit mount_height below the sensor
    road = scan.semantic == 40
    np.testing.assert_allclose(scan.points[road, 2], -drive.sensor.mount_height, atol=2e-3)


def test_consecutive_scans_overlap():
    """Scan 1 moved into scan 0's frame by the poses lands on scan 0's static structure."""
    drive = generate_drive(2, seed=5, sensor=REDUCED)
    s0, s1 = drive.scan(0), drive.scan(1)
    rel = np.linalg.inv(drive.poses[0]) @ drive.poses[1]
    assert 0.3 < rel[0, 3] < 1.5                    # 5-11 m/s at 10 Hz
    static = s1.semantic < 250                       # moving-* ids are >= 252
    p1 = s1.points[static, :3] @ rel[:3, :3].T + rel[:3, 3]
    vox0 = {tuple(v) for v in np.floor(s0.points[:, :3] / 0.3).astype(int)}

    def overlap(p):
        return np.mean([tuple(v) in vox0 for v in np.floor(p / 0.3).astype(int)])

    assert overlap(p1) > 0.6
    # control: a pose that is off by 3 m overlaps much less
    assert overlap(p1 + [3.0, 0.0, 0.0]) < overlap(p1) - 0.2


def test_cli_writes_official_layout(tmp_path, capsys):
    rc = main(["--out", str(tmp_path), "--sequences", "00,02", "--scans", "3", "--seed", "4",
               "--azimuth-steps", "256", "--bev-every", "2", "--quiet"])
    assert rc == 0
    cfg = load_label_config()
    for seq in (0, 2):
        refs = list_scans(tmp_path, [seq])
        assert [r.frame for r in refs] == ["000000", "000001", "000002"]
        for r in refs:
            scan = read_scan(r, cfg)              # validates sizes, counts and raw ids
            assert len(scan.points) > 5000
        meta = read_sequence_meta(tmp_path, seq)
        drive = generate_drive(3, seed=4, sequence=seq,
                               sensor=dataclasses.replace(SensorConfig(), azimuth_steps=256))
        np.testing.assert_allclose(meta.velodyne_poses(), drive.relative_poses(), atol=1e-9)
        np.testing.assert_allclose(meta.velodyne_poses()[0], np.eye(4), atol=1e-12)
        assert np.all(np.diff(meta.times) > 0.09) and meta.times[0] == 0.0
        np.testing.assert_array_equal(read_scan(refs[1]).points, drive.scan(1).points)
    assert sorted(p.name for p in (tmp_path / "bev").iterdir()) == [
        "00_000000.png", "00_000002.png", "02_000000.png", "02_000002.png"]
    assert "wrote 6 scans" in capsys.readouterr().out


def test_cli_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--sequences", "a,b"])
    assert main(["--out", str(tmp_path), "--scans", "0", "--quiet"]) == 2
