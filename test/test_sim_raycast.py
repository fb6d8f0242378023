"""Ray caster: occlusion, exact geometry against implicit surfaces, culling vs brute force, sensor effects."""

import dataclasses

import numpy as np
import pytest

from i2p_ros.data.raycast import BOX, CYLINDER, ELLIPSOID, GROUND, Scene, SensorConfig, simulate_scan

SMALL = SensorConfig(azimuth_steps=360)          # reduced azimuth resolution: geometry is what is tested
EXACT = dict(noise=False)


def pose(x=0.0, y=0.0, z=1.73, yaw=0.0):
    p = np.eye(4)
    p[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    p[:3, 3] = [x, y, z]
    return p


def to_world(points, pse):
    return points[:, :3].astype(np.float64) @ pse[:3, :3].T + pse[:3, 3]


def surface_residual(scene: Scene, prim: np.ndarray, pw: np.ndarray, time: float = 0.0) -> np.ndarray:
    """Distance-like residual of world points from the surface of their primitive, from implicit equations."""
    a = scene.arrays
    c, h, yaw, kind = scene.centers_at(time)[prim], a["half"][prim], a["yaw"][prim], a["kind"][prim]
    rel = pw - c
    cy, sy = np.cos(yaw), np.sin(yaw)
    q = np.stack([cy * rel[:, 0] + sy * rel[:, 1], -sy * rel[:, 0] + cy * rel[:, 1], rel[:, 2]], 1)
    res = np.full(len(pw), np.inf)
    m = kind == BOX                      # on the boundary: max_k(|q_k| - h_k) == 0
    res[m] = np.abs(np.max(np.abs(q[m]) - h[m], axis=1))
    m = kind == CYLINDER                 # side: radial == r and inside the z range; or on a cap inside r
    rr = np.hypot(q[:, 0], q[:, 1])
    side = np.maximum(np.abs(rr - h[:, 0]), np.maximum(np.abs(q[:, 2]) - h[:, 2], 0))
    cap = np.maximum(np.abs(np.abs(q[:, 2]) - h[:, 2]), np.maximum(rr - h[:, 0], 0))
    res[m] = np.minimum(side, cap)[m]
    m = kind == ELLIPSOID                # (|q / h| - 1) scaled back to metres by the smallest semi-axis
    res[m] = np.abs(np.linalg.norm(q[m] / h[m], axis=1) - 1) * h[m].min(1)
    return res


def inside(scene: Scene, i: int, pw: np.ndarray) -> np.ndarray:
    a = scene.arrays
    c, h, yaw, kind = a["center"][i], a["half"][i], a["yaw"][i], a["kind"][i]
    rel = pw - c
    cy, sy = np.cos(yaw), np.sin(yaw)
    q = np.stack([cy * rel[:, 0] + sy * rel[:, 1], -sy * rel[:, 0] + cy * rel[:, 1], rel[:, 2]], 1)
    if kind == BOX:
        return (np.abs(q) <= h).all(1)
    if kind == CYLINDER:
        return (np.hypot(q[:, 0], q[:, 1]) <= h[0]) & (np.abs(q[:, 2]) <= h[2])
    return np.linalg.norm(q / h, axis=1) <= 1


def mixed_scene(seed=0, n=60, ground=0.0):
    rng = np.random.default_rng(seed)
    s = Scene(ground_height=ground, ground_label=40)
    for i in range(n):
        x, y = rng.uniform(-40, 40, 2)
        if np.hypot(x, y) < 4:
            continue
        k = i % 3
        if k == 0:
            s.add_box((x, y, rng.uniform(0, 3)), rng.uniform(0.3, 6, 3), rng.uniform(-np.pi, np.pi), label=50)
        elif k == 1:
            s.add_cylinder(x, y, rng.uniform(-1, 1), rng.uniform(1.5, 6), rng.uniform(0.05, 1.5), label=80)
        else:
            s.add_ellipsoid((x, y, rng.uniform(0, 4)), rng.uniform(0.3, 3, 3), rng.uniform(-np.pi, np.pi), label=70)
    # primitives straddling the +-pi azimuth seam (behind the sensor) and one enclosing the sensor's footprint
    s.add_box((-15, 0.0, 1.0), (2, 8, 2), 0.3, label=10)
    s.add_cylinder(-25, 0.4, 0, 3, 1.0, label=71)
    s.add_box((0, 0, -0.5), (30, 30, 0.2), label=48)
    s.add_cylinder(6.0, 6.0, 0.0, 1.0, 2.0, label=99)   # low and wide: its top cap is seen from above
    return s


def test_box_behind_a_wall_gets_no_points():
    s = Scene(ground_height=0.0, ground_label=40)
    target = s.add_box((20.0, 0.0, 1.0), (2.0, 2.0, 2.0), label=10)
    hit_without_wall = simulate_scan(s, pose(), SMALL, **EXACT)
    assert (hit_without_wall.primitive == target).sum() > 20     # the control: visible without the wall
    wall = s.add_box((10.0, 0.0, 3.0), (0.3, 12.0, 6.0), label=50)
    scan = simulate_scan(s, pose(), SMALL, **EXACT)
    assert (scan.primitive == target).sum() == 0
    assert (scan.semantic == 10).sum() == 0
    assert (scan.primitive == wall).sum() > 20
    # and every wall return is in front of where the target would be
    assert scan.points[scan.primitive == wall, 0].max() < 10.2


def test_hits_lie_on_their_primitive_surfaces():
    s = mixed_scene(0)
    pse = pose(1.0, -2.0, 1.73, 0.7)
    scan = simulate_scan(s, pse, SMALL, **EXACT)
    pw = to_world(scan.points, pse)
    obj = scan.primitive >= 0
    assert obj.sum() > 1000 and {BOX, CYLINDER, ELLIPSOID} <= set(s.arrays["kind"][scan.primitive[obj]].tolist())
    res = surface_residual(s, scan.primitive[obj], pw[obj])
    assert np.quantile(res, 1.0) < 5e-3, res.max()
    g = scan.primitive == GROUND
    np.testing.assert_allclose(pw[g, 2], 0.0, atol=2e-3)
    # labels follow the primitive that was hit
    np.testing.assert_array_equal(scan.semantic[obj], s.arrays["label"][scan.primitive[obj]])
    assert (scan.semantic[g] == 40).all()


def test_first_hit_matches_ray_marching():
    """For sampled rays, march in 1 cm steps through every primitive: the first inside-sample is the hit."""
    s = mixed_scene(1, n=30)
    pse = pose()
    scan = simulate_scan(s, pse, SMALL, **EXACT)
    rng = np.random.default_rng(0)
    # rays that hit objects and rays that reached the ground (a missed object would show up there)
    obj, grd = np.flatnonzero(scan.primitive >= 0), np.flatnonzero(scan.primitive == GROUND)
    near_grd = grd[np.linalg.norm(scan.points[grd, :3], axis=1) < 30]
    sel = np.concatenate([rng.choice(obj, 60, replace=False), rng.choice(near_grd, 60, replace=False)])
    for j in sel:
        d = scan.points[j, :3].astype(np.float64) / scan.range_true[j]
        d /= np.linalg.norm(d)
        ts = np.arange(0.01, scan.range_true[j] + 0.05, 0.01)
        pw = pse[:3, 3] + ts[:, None] * d
        below = pw[:, 2] <= s.ground_height
        first = ts[np.argmax(below)] if below.any() else np.inf
        for i in range(len(s)):
            ins = inside(s, i, pw)
            if ins.any():
                first = min(first, ts[np.argmax(ins)])
        assert abs(first - scan.range_true[j]) <= 0.011, (j, first, scan.range_true[j])


def test_culling_equals_brute_force():
    s = mixed_scene(2, n=90)
    for pse in (pose(), pose(3.0, 1.0, 1.73, 2.9), pose(-5.0, 0.0, 1.73, -3.1)):
        fast = simulate_scan(s, pse, SMALL, **EXACT)
        slow = simulate_scan(s, pse, SMALL, cull=False, **EXACT)
        np.testing.assert_array_equal(fast.primitive, slow.primitive)
        np.testing.assert_array_equal(fast.points, slow.points)


def test_plane_of_known_height_with_noise():
    sensor = dataclasses.replace(SMALL, range_noise=0.02)
    s = Scene(ground_height=0.15, ground_label=48)
    scan = simulate_scan(s, pose(z=1.73), sensor, rng=3)
    g = scan.semantic == 48
    assert g.sum() > 10000
    z_err = scan.points[g, 2] - (0.15 - 1.73)   # sensor frame: the plane sits 1.58 m below the sensor
    # range noise moves a point along its ray: z error = noise * sin(elevation), |sin| <= sin(24.9 deg)
    assert np.abs(z_err).max() < 5 * 0.02 * np.sin(np.radians(24.9))
    assert z_err.std() > 1e-3                    # the noise is really there
    assert abs(z_err.mean()) < 1e-3


def test_pose_puts_points_in_the_sensor_frame():
    s = Scene()
    s.add_box((10.0, 8.0, 1.73), (1.0, 1.0, 1.0), label=10)
    pse = pose(10.0, 0.0, 1.73, np.pi / 2)      # facing +y: the box is straight ahead, 8 m away
    scan = simulate_scan(s, pse, SMALL, **EXACT)
    assert len(scan.points) > 0
    np.testing.assert_allclose(scan.points[:, 0].min(), 7.5, atol=1e-4)   # front face
    assert np.abs(scan.points[:, 1]).max() <= 0.5 + 1e-4
    with pytest.raises(ValueError, match="rotation about z"):
        tilted = pose()
        tilted[:3, :3] = [[1, 0, 0], [0, 0, -1], [0, 1, 0]]
        simulate_scan(s, tilted, SMALL)


def test_moving_primitive_follows_its_velocity():
    s = Scene()
    s.add_box((10.0, 0.0, 1.73), (1.0, 1.0, 1.0), label=252, velocity=(2.0, 0.0))
    near = simulate_scan(s, pose(), SMALL, time=0.0, **EXACT).points[:, 0].min()
    far = simulate_scan(s, pose(), SMALL, time=1.5, **EXACT).points[:, 0].min()
    np.testing.assert_allclose([near, far], [9.5, 12.5], atol=1e-4)


def test_ego_box_and_ranges():
    s = Scene(ground_height=0.0, ground_label=40)
    scan = simulate_scan(s, pose(), SMALL, **EXACT)
    x0, x1, y0, y1, z0, z1 = SMALL.ego_box
    # no return comes from rays that pass through the ego car's box before reaching the ground
    for p in scan.points[:, :3].astype(np.float64):
        ts = np.linspace(0, 1, 200)[:, None] * p
        assert not (((ts[:, 0] > x0) & (ts[:, 0] < x1) & (ts[:, 1] > y0) & (ts[:, 1] < y1) & (ts[:, 2] > z0)
                     & (ts[:, 2] < z1)).any())
    r = np.linalg.norm(scan.points[:, :3], axis=1)
    assert r.max() <= SMALL.max_range and r.min() >= SMALL.min_range
    no_ego = simulate_scan(s, pose(), dataclasses.replace(SMALL, ego_box=None), **EXACT)
    assert len(no_ego.points) > len(scan.points)


def test_intensity_retroreflective_bright_asphalt_dark_and_range_falloff():
    s = Scene(ground_height=0.0, ground_label=40, ground_reflectivity=0.1)
    for k in range(12):
        a = 2 * np.pi * k / 12
        s.add_box((15 * np.cos(a), 15 * np.sin(a), 2.0), (0.05, 0.8, 0.8), a, label=81, reflectivity=0.93, retro=True)
    scan = simulate_scan(s, pose(), SensorConfig(azimuth_steps=720), rng=0)
    road, sign = scan.semantic == 40, scan.semantic == 81
    assert sign.sum() > 50
    assert scan.points[sign, 3].mean() > 4 * scan.points[road, 3].mean()
    r = np.linalg.norm(scan.points[:, :3], axis=1)
    near, far = road & (r < 8), road & (r > 25) & (r < 40)
    assert scan.points[near, 3].mean() > scan.points[far, 3].mean()
    assert scan.points[:, 3].min() >= 0 and scan.points[:, 3].max() <= 1


def test_dropout_rate():
    sensor = dataclasses.replace(SMALL, dropout=0.2, far_dropout=0.0, ego_box=None)
    s = Scene(ground_height=0.0)
    full = simulate_scan(s, pose(), sensor, noise=False)
    noisy = simulate_scan(s, pose(), sensor, rng=1)
    rate = 1 - len(noisy.points) / len(full.points)
    n = len(full.points)
    assert abs(rate - 0.2) < 4 * np.sqrt(0.2 * 0.8 / n)
