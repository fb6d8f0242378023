"""A spinning multi-beam LiDAR ray-cast against analytic primitives (numpy, vectorised over rays).

The sensor's rays form a ``[beams, azimuth steps]`` grid. Every primitive (yaw-rotated box, vertical
cylinder, yaw-rotated ellipsoid, plus one optional infinite horizontal ground plane) is intersected only
with the rays of its *angular bounding window*: a contiguous range of beams (elevation) and of azimuth
columns, computed for all primitives at once from their footprint rectangle and height range. Hits go into
a depth buffer (closest hit wins), so occlusion comes out of the casting exactly as in a z-buffer
renderer. This culling makes the cost proportional to the angular area the primitives cover instead of
rays x primitives (see benchmarks/simulator.py for the measured difference).

Frames: scene primitives live in a world frame with z up; the sensor pose is a yaw rotation plus a
translation (a ground vehicle on a flat street). Returned points are in the sensor frame (x forward,
y left, z up), like KITTI ``.bin`` files.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "BOX",
    "CYLINDER",
    "ELLIPSOID",
    "GROUND",
    "HDL64_ELEVATIONS_DEG",
    "Scene",
    "SensorConfig",
    "SimScan",
    "simulate_scan",
]

BOX, CYLINDER, ELLIPSOID = 0, 1, 2
GROUND = -2          # primitive index reported for hits on the ground plane
_NO_HIT = -1

# HDL-64E: upper block of 32 lasers from +2.0 deg to -8.33 deg (1/3 deg apart), lower block of 32 from
# -8.83 deg to -24.9 deg (~1/2 deg apart). Row 0 of a scan is the highest beam.
HDL64_ELEVATIONS_DEG: tuple[float, ...] = tuple(
    float(v) for v in np.concatenate([np.linspace(2.0, -8.33, 32), np.linspace(-8.83, -24.9, 32)]))


@dataclass(frozen=True)
class SensorConfig:
    """Sensor geometry and noise. Defaults: Velodyne HDL-64E as mounted on the KITTI car."""

    elevations_deg: tuple[float, ...] = HDL64_ELEVATIONS_DEG
    azimuth_steps: int = 2000            # columns per revolution (HDL-64E at 10 Hz: ~0.18 deg)
    max_range: float = 120.0             # metres
    min_range: float = 1.0               # returns closer than this are discarded (HDL-64E spec: ~0.9 m)
    # the ego car in the sensor frame (xmin, xmax, ymin, ymax, zmin, zmax): rays that hit it first give no
    # return, which leaves KITTI's empty patch in front of and behind the car in the lowest beams
    ego_box: tuple[float, float, float, float, float, float] | None = (-2.7, 1.2, -0.9, 0.9, -1.6, -0.55)
    mount_height: float = 1.73           # sensor height above the road surface (KITTI)
    range_noise: float = 0.02            # std of the range error, metres
    dropout: float = 0.03                # probability that a return is lost
    far_dropout: float = 0.4             # extra loss probability at max_range (grows as (r/max)^4)
    intensity_falloff: float = 90.0      # metres over which intensity decays by 1/e
    rate_hz: float = 10.0                # revolutions per second (drives the pose spacing)

    def __post_init__(self) -> None:
        if self.azimuth_steps < 8:
            raise ValueError(f"SensorConfig.azimuth_steps must be >= 8, got {self.azimuth_steps}")
        if len(self.elevations_deg) < 1:
            raise ValueError("SensorConfig.elevations_deg must not be empty")
        if not 0 <= self.min_range < self.max_range:
            raise ValueError(f"SensorConfig: need 0 <= min_range < max_range, got {self.min_range}, {self.max_range}")

    @property
    def elevations(self) -> np.ndarray:
        """Beam elevations in radians, sorted from highest to lowest (row order of a scan)."""
        return np.sort(np.radians(np.asarray(self.elevations_deg, dtype=np.float64)))[::-1]

    @property
    def azimuths(self) -> np.ndarray:
        """Column azimuths in the sensor frame, radians in [-pi, pi), increasing (counter-clockwise)."""
        step = 2.0 * np.pi / self.azimuth_steps
        return -np.pi + (np.arange(self.azimuth_steps) + 0.5) * step


@dataclass
class Scene:
    """A list of primitives, each with a raw SemanticKITTI id, an instance id and a reflectivity.

    Sizes are full extents. ``velocity`` (vx, vy) moves a primitive linearly with scan time, which is
    how moving traffic is simulated. ``retro`` marks retro-reflective surfaces (traffic signs): their
    return does not weaken with incidence angle.
    """

    ground_height: float | None = None   # infinite horizontal plane z = ground_height (None: no plane)
    ground_label: int = 72
    ground_reflectivity: float = 0.3
    _rows: list[tuple] = field(default_factory=list, repr=False)
    _arrays: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self._rows)

    def _add(self, kind: int, center, half, yaw: float, label: int, reflectivity: float, instance: int,
             velocity, retro: bool) -> int:
        half = tuple(float(h) for h in half)
        if min(half) <= 0:
            raise ValueError(f"Scene: primitive sizes must be positive, got half extents {half}")
        if not 0 <= label < 1 << 16 or not 0 <= instance < 1 << 16:
            raise ValueError(f"Scene: label {label} / instance {instance} must fit in 16 bits")
        self._rows.append((kind, *map(float, center), *half, float(yaw), int(label), int(instance),
                           float(reflectivity), float(velocity[0]), float(velocity[1]), bool(retro)))
        self._arrays = None
        return len(self._rows) - 1

    def add_box(self, center, size, yaw: float = 0.0, *, label: int, reflectivity: float = 0.3,
                instance: int = 0, velocity=(0.0, 0.0), retro: bool = False) -> int:
        """Box with centre (x, y, z), full size (length along its x, width, height), rotated by yaw about z."""
        return self._add(BOX, center, np.asarray(size, dtype=float) / 2, yaw, label, reflectivity, instance,
                         velocity, retro)

    def add_cylinder(self, x: float, y: float, z0: float, z1: float, radius: float, *, label: int,
                     reflectivity: float = 0.3, instance: int = 0, velocity=(0.0, 0.0), retro: bool = False) -> int:
        """Vertical cylinder (axis along z) from z0 to z1, closed by flat caps."""
        if z1 <= z0:
            raise ValueError(f"Scene.add_cylinder: need z1 > z0, got {z0}, {z1}")
        return self._add(CYLINDER, (x, y, (z0 + z1) / 2), (radius, radius, (z1 - z0) / 2), 0.0, label,
                         reflectivity, instance, velocity, retro)

    def add_ellipsoid(self, center, radii, yaw: float = 0.0, *, label: int, reflectivity: float = 0.3,
                      instance: int = 0, velocity=(0.0, 0.0), retro: bool = False) -> int:
        """Ellipsoid with semi-axes (a, b, c) along its (x, y, z), rotated by yaw about z."""
        return self._add(ELLIPSOID, center, radii, yaw, label, reflectivity, instance, velocity, retro)

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """Struct-of-arrays view of the primitives (built once, reused by every scan)."""
        if self._arrays is None:
            rows = np.asarray(self._rows, dtype=np.float64).reshape(-1, 14)
            self._arrays = {
                "kind": rows[:, 0].astype(np.int8),
                "center": rows[:, 1:4].copy(),
                "half": rows[:, 4:7].copy(),
                "yaw": rows[:, 7].copy(),
                "label": rows[:, 8].astype(np.uint16),
                "instance": rows[:, 9].astype(np.uint16),
                "reflectivity": rows[:, 10].copy(),
                "velocity": rows[:, 11:13].copy(),
                "retro": rows[:, 13].astype(bool),
            }
        return self._arrays

    def centers_at(self, time: float) -> np.ndarray:
        """Primitive centres at scan time ``time`` (moving primitives advance by velocity * time)."""
        a = self.arrays
        c = a["center"].copy()
        c[:, :2] += a["velocity"] * time
        return c


@dataclass
class SimScan:
    """One simulated revolution. ``points`` are float32 (x, y, z, intensity) in the sensor frame."""

    points: np.ndarray       # float32 [N, 4]
    semantic: np.ndarray     # uint16 [N] raw SemanticKITTI ids
    instance: np.ndarray     # uint16 [N]
    primitive: np.ndarray    # int32 [N] index into the scene's primitives, GROUND for the ground plane
    ring: np.ndarray         # int16 [N] beam row (0 = highest beam)
    column: np.ndarray       # int16 [N] azimuth column
    range_true: np.ndarray   # float32 [N] noise-free range (for geometry checks)


# ----------------------------------------------------------------------------------------- intersections
# Each function takes the ray origin (scalars) and direction component arrays that broadcast to one
# sub-grid shape, and returns the hit distance (inf where the ray misses).

def _box_t(o, c, h, yaw, dx, dy, dz):
    cy, sy = np.cos(yaw), np.sin(yaw)
    rx, ry = o[0] - c[0], o[1] - c[1]
    lo = (cy * rx + sy * ry, -sy * rx + cy * ry, o[2] - c[2])
    ld = (cy * dx + sy * dy, -sy * dx + cy * dy, dz)
    tnear = tfar = None
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            inv = 1.0 / ld[axis]
            t1 = (-h[axis] - lo[axis]) * inv
            t2 = (h[axis] - lo[axis]) * inv
            tn, tf = np.minimum(t1, t2), np.maximum(t1, t2)
            tnear = tn if tnear is None else np.maximum(tnear, tn)
            tfar = tf if tfar is None else np.minimum(tfar, tf)
    return np.where((tnear <= tfar) & (tnear > 0), tnear, np.inf)


def _cylinder_t(o, c, h, dx, dy, dz):
    r, z0, z1 = h[0], c[2] - h[2], c[2] + h[2]
    rx, ry = o[0] - c[0], o[1] - c[1]
    a = dx * dx + dy * dy
    b = 2.0 * (rx * dx + ry * dy)
    cc = rx * rx + ry * ry - r * r
    disc = b * b - 4.0 * a * cc
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
        z = o[2] + t * dz
        t_side = np.where((disc >= 0) & (t > 0) & (z >= z0) & (z <= z1), t, np.inf)
        best = t_side
        for zc in (z1, z0):   # flat caps
            tc = (zc - o[2]) / dz
            px, py = rx + tc * dx, ry + tc * dy
            ok = (tc > 0) & (px * px + py * py <= r * r)
            best = np.minimum(best, np.where(ok, tc, np.inf))
    return best


def _ellipsoid_t(o, c, h, yaw, dx, dy, dz):
    cy, sy = np.cos(yaw), np.sin(yaw)
    rx, ry = o[0] - c[0], o[1] - c[1]
    lox, loy, loz = (cy * rx + sy * ry) / h[0], (-sy * rx + cy * ry) / h[1], (o[2] - c[2]) / h[2]
    ldx, ldy, ldz = (cy * dx + sy * dy) / h[0], (-sy * dx + cy * dy) / h[1], dz / h[2]
    a = ldx * ldx + ldy * ldy + ldz * ldz
    b = 2.0 * (lox * ldx + loy * ldy + loz * ldz)
    cc = lox * lox + loy * loy + loz * loz - 1.0
    disc = b * b - 4.0 * a * cc
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
    return np.where((disc >= 0) & (t > 0), t, np.inf)


def _normals(kind, center, half, yaw, prim, p):
    """World-frame unit normals at hit points ``p`` [N, 3] of primitives ``prim`` [N] (>= 0)."""
    n = np.zeros_like(p)
    k = kind[prim]
    c, h, ya = center[prim], half[prim], yaw[prim]
    cy, sy = np.cos(ya), np.sin(ya)
    rel = p - c
    lx, ly, lz = cy * rel[:, 0] + sy * rel[:, 1], -sy * rel[:, 0] + cy * rel[:, 1], rel[:, 2]
    local = np.stack([lx, ly, lz], 1)
    # boxes: the face whose slab the point sits on
    m = k == BOX
    if m.any():
        u = np.abs(local[m]) / h[m]
        ax = np.argmax(u, 1)
        ln = np.zeros((int(m.sum()), 3))
        ln[np.arange(ax.size), ax] = np.sign(local[m][np.arange(ax.size), ax])
        n[m] = _rot_z(ln, cy[m], sy[m])
    # cylinders: radial on the side, vertical on the caps
    m = k == CYLINDER
    if m.any():
        rr = np.hypot(lx[m], ly[m])
        cap = rr < h[m, 0] * (1 - 1e-6)
        side = np.stack([rel[m, 0], rel[m, 1], np.zeros(rr.size)], 1) / np.maximum(rr, 1e-12)[:, None]
        top = np.zeros_like(side)
        top[:, 2] = np.sign(lz[m])
        n[m] = np.where(cap[:, None], top, side)
    # ellipsoids: gradient of the implicit function
    m = k == ELLIPSOID
    if m.any():
        n[m] = _rot_z(local[m] / h[m] ** 2, cy[m], sy[m])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def _rot_z(v, c, s):
    return np.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1], v[:, 2]], 1)


def _pose_origin_yaw(pose: np.ndarray) -> tuple[np.ndarray, float]:
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape not in ((4, 4), (3, 4)):
        raise ValueError(f"simulate_scan: pose must be 4x4 or 3x4, got {pose.shape}")
    r = pose[:3, :3]
    yaw = float(np.arctan2(r[1, 0], r[0, 0]))
    cy, sy = np.cos(yaw), np.sin(yaw)
    if not np.allclose(r, [[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]], atol=1e-6):
        raise ValueError("simulate_scan: the sensor pose must be a rotation about z (yaw) plus a translation")
    return pose[:3, 3].copy(), yaw


@functools.lru_cache(maxsize=8)
def _ego_depth(sensor: SensorConfig) -> np.ndarray:
    """Distance along every ray of the grid to the ego car box (inf: no hit); fixed in the sensor frame."""
    elev, az = sensor.elevations, sensor.azimuths
    if sensor.ego_box is None:
        return np.full((elev.size, az.size), np.inf)
    x0, x1, y0, y1, z0, z1 = sensor.ego_box
    c = np.array([(x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2])
    h = np.array([(x1 - x0) / 2, (y1 - y0) / 2, (z1 - z0) / 2])
    dx = np.cos(elev)[:, None] * np.cos(az)[None, :]
    dy = np.cos(elev)[:, None] * np.sin(az)[None, :]
    t = _box_t(np.zeros(3), c, h, 0.0, dx, dy, np.sin(elev)[:, None])
    t.setflags(write=False)
    return t


# ----------------------------------------------------------------------------------------- culling

def _windows(scene: Scene, centers: np.ndarray, origin: np.ndarray, yaw: float, sensor: SensorConfig,
             elev: np.ndarray, cull: bool):
    """Per primitive: beam rows [r0, r1) and azimuth column start / count (count 0 = culled)."""
    a = scene.arrays
    n_prim = len(scene)
    n_rows, n_cols = elev.size, sensor.azimuth_steps
    if not cull:
        return (np.zeros(n_prim, int), np.full(n_prim, n_rows), np.zeros(n_prim, int),
                np.full(n_prim, n_cols))
    half, pyaw = a["half"], a["yaw"]
    hx, hy, hz = half[:, 0], half[:, 1], half[:, 2]
    # cylinders are symmetric; their footprint square is axis-aligned (yaw stored as 0)
    cy, sy = np.cos(pyaw), np.sin(pyaw)
    rx, ry = centers[:, 0] - origin[0], centers[:, 1] - origin[1]          # primitive centre rel. sensor
    ox, oy = -(cy * rx + sy * ry), -(-sy * rx + cy * ry)                   # sensor in primitive frame
    gx, gy = np.maximum(np.abs(ox) - hx, 0.0), np.maximum(np.abs(oy) - hy, 0.0)
    inside = (gx == 0) & (gy == 0)
    dmin = np.hypot(gx, gy)
    sx = np.array([1, 1, -1, -1])[None, :] * hx[:, None]
    syy = np.array([1, -1, 1, -1])[None, :] * hy[:, None]
    kx = rx[:, None] + cy[:, None] * sx - sy[:, None] * syy
    ky = ry[:, None] + sy[:, None] * sx + cy[:, None] * syy
    dmax = np.sqrt(kx * kx + ky * ky).max(1)
    zlo = centers[:, 2] - hz - origin[2]
    zhi = centers[:, 2] + hz - origin[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        el_hi = np.where(zhi > 0, np.arctan2(zhi, dmin), np.arctan2(zhi, dmax))
        el_lo = np.where(zlo < 0, np.arctan2(zlo, dmin), np.arctan2(zlo, dmax))
    # azimuth window from the footprint corners, unwrapped around the centre direction
    az_c = np.arctan2(ry, rx)
    rel = np.angle(np.exp(1j * (np.arctan2(ky, kx) - az_c[:, None])))
    lo = az_c + rel.min(1) - yaw
    hi = az_c + rel.max(1) - yaw
    step = 2.0 * np.pi / n_cols
    pad = 1e-9
    c_lo = np.ceil((lo + np.pi) / step - 0.5 - pad).astype(np.int64) - 1
    c_hi = np.floor((hi + np.pi) / step - 0.5 + pad).astype(np.int64) + 1
    count = np.clip(c_hi - c_lo + 1, 0, n_cols)
    full = inside | (count >= n_cols) | (rel.max(1) - rel.min(1) >= np.pi - 1e-9)
    start = np.where(full, 0, np.mod(c_lo, n_cols))
    count = np.where(full, n_cols, count)
    neg = -elev                                                           # ascending
    r0 = np.searchsorted(neg, -el_hi - pad, side="left")
    r1 = np.searchsorted(neg, -el_lo + pad, side="right")
    visible = (dmin <= sensor.max_range) & (r1 > r0)
    count = np.where(visible, count, 0)
    return r0, r1, start, count


# ----------------------------------------------------------------------------------------- scan

def simulate_scan(scene: Scene, pose: np.ndarray, sensor: SensorConfig | None = None, *,
                  rng: np.random.Generator | int | None = None, time: float = 0.0,
                  cull: bool = True, noise: bool = True) -> SimScan:
    """Ray-cast one revolution of ``sensor`` at ``pose`` (sensor -> world, yaw + translation).

    ``time`` places moving primitives; ``rng`` (or a seed) drives range noise, intensity noise and
    dropout, so equal seeds give identical scans; ``noise=False`` gives exact ranges and no dropout.
    ``cull=False`` intersects every primitive with every ray (the slow reference the culling must equal).
    """
    sensor = sensor or SensorConfig()
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    origin, yaw = _pose_origin_yaw(pose)
    elev, az = sensor.elevations, sensor.azimuths
    n_rows, n_cols = elev.size, az.size
    ce, se = np.cos(elev), np.sin(elev)
    ca, sa = np.cos(az + yaw), np.sin(az + yaw)      # world-frame column directions

    depth = np.full((n_rows, n_cols), np.inf)
    prim_id = np.full((n_rows, n_cols), _NO_HIT, dtype=np.int32)
    if scene.ground_height is not None:
        with np.errstate(divide="ignore"):
            tg = (scene.ground_height - origin[2]) / se
        tg = np.where((se < 0) & (tg > 0), tg, np.inf)
        depth[:] = tg[:, None]
        prim_id[np.isfinite(depth)] = GROUND

    a = scene.arrays
    if len(scene):
        centers = scene.centers_at(time)
        r0, r1, start, count = _windows(scene, centers, origin, yaw, sensor, elev, cull)
        kind, half, pyaw = a["kind"], a["half"], a["yaw"]
        for i in np.flatnonzero(count):
            rs = slice(int(r0[i]), int(r1[i]))
            s, n = int(start[i]), int(count[i])
            spans = [(s, s + n)] if s + n <= n_cols else [(s, n_cols), (0, s + n - n_cols)]
            for c0, c1 in spans:
                dx = ce[rs, None] * ca[None, c0:c1]
                dy = ce[rs, None] * sa[None, c0:c1]
                dz = se[rs, None]
                k = kind[i]
                if k == BOX:
                    t = _box_t(origin, centers[i], half[i], pyaw[i], dx, dy, dz)
                elif k == CYLINDER:
                    t = _cylinder_t(origin, centers[i], half[i], dx, dy, dz)
                else:
                    t = _ellipsoid_t(origin, centers[i], half[i], pyaw[i], dx, dy, dz)
                sub_d = depth[rs, c0:c1]
                closer = t < sub_d
                if closer.any():
                    sub_d[closer] = t[closer]
                    prim_id[rs, c0:c1][closer] = i

    hit = ((prim_id != _NO_HIT) & (depth >= sensor.min_range) & (depth <= sensor.max_range)
           & (depth < _ego_depth(sensor)))
    rows, cols = np.nonzero(hit)                      # beam-major order, like a ring-ordered scan
    t = depth[rows, cols]
    pid = prim_id[rows, cols]
    dir_s = np.stack([ce[rows] * np.cos(az[cols]), ce[rows] * np.sin(az[cols]), se[rows]], 1)  # sensor frame
    dir_w = np.stack([ce[rows] * ca[cols], ce[rows] * sa[cols], se[rows]], 1)

    # intensity: class reflectivity x incidence (Lambert-like, except retro-reflectors) x range decay
    is_obj = pid >= 0
    refl = np.full(t.shape, scene.ground_reflectivity)
    retro = np.zeros(t.shape, dtype=bool)
    normal = np.zeros((t.size, 3))
    normal[:, 2] = 1.0
    if is_obj.any():
        ip = pid[is_obj]
        refl[is_obj] = a["reflectivity"][ip]
        retro[is_obj] = a["retro"][ip]
        p_world = origin + t[is_obj, None] * dir_w[is_obj]
        normal[is_obj] = _normals(a["kind"], centers, a["half"], a["yaw"], ip, p_world)
    cos_inc = np.abs(np.einsum("ij,ij->i", normal, dir_w))
    intensity = refl * np.where(retro, 1.0, 0.3 + 0.7 * cos_inc) * np.exp(-t / sensor.intensity_falloff)

    keep = np.ones(t.shape, dtype=bool)
    t_meas = t
    if noise:
        t_meas = t + rng.normal(0.0, sensor.range_noise, t.shape)
        intensity = intensity * rng.lognormal(0.0, 0.15, t.shape)
        p_drop = sensor.dropout + sensor.far_dropout * (t / sensor.max_range) ** 4
        keep = (rng.random(t.shape) >= p_drop) & (t_meas >= sensor.min_range) & (t_meas <= sensor.max_range)
    intensity = np.round(np.clip(intensity, 0.0, 0.99), 2)

    labels = np.where(is_obj, a["label"][np.maximum(pid, 0)] if len(scene) else 0, scene.ground_label)
    inst = np.where(is_obj, a["instance"][np.maximum(pid, 0)] if len(scene) else 0, 0)
    pts = np.concatenate([dir_s * t_meas[:, None], intensity[:, None]], 1)[keep]
    return SimScan(points=pts.astype(np.float32), semantic=labels[keep].astype(np.uint16),
                   instance=inst[keep].astype(np.uint16), primitive=pid[keep].astype(np.int32),
                   ring=rows[keep].astype(np.int16), column=cols[keep].astype(np.int16),
                   range_true=t[keep].astype(np.float32))
