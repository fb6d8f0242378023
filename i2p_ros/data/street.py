"""Procedural street scenes and drives for the LiDAR simulator.

A street runs along the world x axis with the road surface at z = 0. Its cross-section on each side is
road lanes (lane markings), an optional kerb-side lane (parking or road shoulder), a raised sidewalk with
street furniture (trees, lamp posts, signs, bins, parked bicycles) and pedestrians, then a frontage that
changes every 25-70 m: buildings, fenced yards with houses and bushes, green strips with trees and
hedges, parking lots, or a crossing street. Traffic moves along the lanes (moving-* raw ids), so
consecutive scans see the same static world plus moving things, like a real drive.

Everything is drawn from one ``numpy`` generator seeded by (seed, sequence): same seed, same drive.
Raw ids are SemanticKITTI's (see config/semantic-kitti.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .raycast import Scene, SensorConfig, SimScan, simulate_scan

__all__ = ["Drive", "RawId", "generate_drive"]


class RawId:
    """SemanticKITTI raw label ids used by the generator."""

    CAR, BICYCLE, BUS, MOTORCYCLE, TRUCK, OTHER_VEHICLE = 10, 11, 13, 15, 18, 20
    PERSON, BICYCLIST = 30, 31
    ROAD, PARKING, SIDEWALK, OTHER_GROUND = 40, 44, 48, 49
    BUILDING, FENCE, OTHER_STRUCTURE, LANE_MARKING = 50, 51, 52, 60
    VEGETATION, TRUNK, TERRAIN, POLE, TRAFFIC_SIGN, OTHER_OBJECT = 70, 71, 72, 80, 81, 99
    MOVING_CAR, MOVING_BICYCLIST, MOVING_PERSON = 252, 253, 254
    MOVING_BUS, MOVING_TRUCK, MOVING_OTHER_VEHICLE = 257, 258, 259


R = RawId
# (mean, spread) of the surface reflectivity per raw id: dark asphalt, bright paint, retro-reflective signs
_REFLECTIVITY: dict[int, tuple[float, float]] = {
    R.ROAD: (0.10, 0.02), R.PARKING: (0.14, 0.03), R.SIDEWALK: (0.26, 0.05), R.OTHER_GROUND: (0.22, 0.05),
    R.TERRAIN: (0.32, 0.06), R.LANE_MARKING: (0.60, 0.05), R.BUILDING: (0.30, 0.10), R.FENCE: (0.35, 0.10),
    R.OTHER_STRUCTURE: (0.30, 0.08), R.VEGETATION: (0.42, 0.06), R.TRUNK: (0.30, 0.05), R.POLE: (0.38, 0.08),
    R.TRAFFIC_SIGN: (0.93, 0.03), R.CAR: (0.28, 0.15), R.TRUCK: (0.32, 0.10), R.OTHER_VEHICLE: (0.32, 0.10),
    R.BUS: (0.32, 0.08), R.BICYCLE: (0.30, 0.08), R.MOTORCYCLE: (0.30, 0.08), R.PERSON: (0.25, 0.06),
    R.BICYCLIST: (0.25, 0.06), R.OTHER_OBJECT: (0.30, 0.10),
}
_MOVING_OF = {R.CAR: R.MOVING_CAR, R.TRUCK: R.MOVING_TRUCK, R.OTHER_VEHICLE: R.MOVING_OTHER_VEHICLE,
              R.BUS: R.MOVING_BUS, R.BICYCLIST: R.MOVING_BICYCLIST, R.PERSON: R.MOVING_PERSON}
_STATIC_OF = {v: k for k, v in _MOVING_OF.items()}
_GROUND_BOTTOM = -0.4   # ground patches are slabs from here up to their surface height


@dataclass
class Drive:
    """A simulated drive: one scene, the sensor poses (sensor -> world) and scan times."""

    scene: Scene
    poses: np.ndarray       # float64 [N, 4, 4]
    times: np.ndarray       # float64 [N] seconds from the first scan
    sensor: SensorConfig
    seed: int
    sequence: int

    def __len__(self) -> int:
        return self.poses.shape[0]

    def scan(self, index: int) -> SimScan:
        """Scan ``index`` (deterministic: its noise is seeded by (seed, sequence, index))."""
        rng = np.random.default_rng([self.seed, self.sequence, index, 1])
        return simulate_scan(self.scene, self.poses[index], self.sensor, rng=rng, time=float(self.times[index]))

    def relative_poses(self) -> np.ndarray:
        """Poses relative to the first scan (what KITTI stores, before the camera-frame conversion)."""
        return np.linalg.inv(self.poses[0]) @ self.poses


class _Builder:
    """Adds street parts to a Scene; holds the random generator and the instance counter."""

    def __init__(self, rng: np.random.Generator, scene: Scene):
        self.rng, self.scene, self._next_instance = rng, scene, 1

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def refl(self, label: int) -> float:
        mean, spread = _REFLECTIVITY[_STATIC_OF.get(label, label)]
        return float(np.clip(self.rng.normal(mean, spread), 0.02, 0.99))

    def instance(self) -> int:
        """A fresh instance id (things only; stuff keeps 0). Wraps inside 16 bits for very long drives."""
        i = self._next_instance
        self._next_instance = i % 65535 + 1
        return i

    # --- basic parts ------------------------------------------------------------------------
    def box(self, center, size, yaw=0.0, *, label, instance=0, velocity=(0.0, 0.0), refl=None, retro=False):
        self.scene.add_box(center, size, yaw, label=label, instance=instance, velocity=velocity,
                           reflectivity=self.refl(label) if refl is None else refl, retro=retro)

    def ground(self, x0, x1, y0, y1, top, label):
        """A ground slab covering x in [x0, x1], y in [y0, y1] (any order) with its surface at ``top``."""
        (xa, xb), (ya, yb) = sorted((x0, x1)), sorted((y0, y1))
        self.box(((xa + xb) / 2, (ya + yb) / 2, (top + _GROUND_BOTTOM) / 2), (xb - xa, yb - ya, top - _GROUND_BOTTOM),
                 label=label)

    def local_box(self, x, y, yaw, offset, size, z0, z1, **kw):
        """A box placed at ``offset`` (along, across) in an object's frame at (x, y, yaw)."""
        c, s = np.cos(yaw), np.sin(yaw)
        self.box((x + c * offset[0] - s * offset[1], y + s * offset[0] + c * offset[1], (z0 + z1) / 2),
                 (size[0], size[1], z1 - z0), yaw, **kw)

    # --- things -----------------------------------------------------------------------------
    def vehicle(self, kind: int, x, y, yaw, velocity=(0.0, 0.0), moving=False, x_is_start=False) -> float:
        """A car / van / truck / bus made of boxes at centre (x, y), or starting at x (yaw ~ 0 or pi).

        Returns the vehicle length, so callers can pack vehicles along a lane without overlap.
        """
        label = _MOVING_OF[kind] if moving else kind
        kw = dict(label=label, instance=self.instance(), velocity=velocity, refl=self.refl(label))
        if kind == R.CAR:
            length, width = self.u(3.9, 4.8), self.u(1.7, 1.9)
            parts = [((0, 0), (length, width), 0.2, 0.95),
                     ((-0.08 * length, 0), (0.55 * length, width - 0.14), 0.95, self.u(1.42, 1.6))]
        elif kind == R.OTHER_VEHICLE:   # van / camper
            length, width = self.u(4.8, 6.0), self.u(1.9, 2.1)
            parts = [((0, 0), (length, width), 0.3, self.u(2.0, 2.6))]
        elif kind == R.TRUCK:
            cab, cargo, width = self.u(1.8, 2.3), self.u(4.5, 8.0), self.u(2.3, 2.5)
            length = cab + cargo + 0.3
            parts = [((length / 2 - cab / 2, 0), (cab, width), 0.5, self.u(2.8, 3.2)),
                     ((-length / 2 + cargo / 2, 0), (cargo, width + 0.05), 0.9, self.u(3.3, 3.9))]
        elif kind == R.BUS:
            length, width = self.u(10.5, 12.5), 2.5
            parts = [((0, 0), (length, width), 0.35, self.u(2.9, 3.2))]
        else:
            raise ValueError(f"vehicle: unknown kind {kind}")
        if x_is_start:
            x = x + length / 2
        for offset, size, z0, z1 in parts:
            self.local_box(x, y, yaw, offset, size, z0, z1, **kw)
        return length

    def two_wheeler(self, kind: int, x, y, yaw, velocity=(0.0, 0.0), moving=False):
        """Bicycle (11), motorcycle (15) or a bicyclist (31/253: rider and bike share the label)."""
        label = _MOVING_OF.get(kind, kind) if moving else kind
        kw = dict(label=label, instance=self.instance(), velocity=velocity, refl=self.refl(label))
        if kind == R.MOTORCYCLE:
            self.local_box(x, y, yaw, (0, 0), (2.0, 0.45), 0.15, 0.85, **kw)
            self.local_box(x, y, yaw, (-0.1, 0), (1.0, 0.6), 0.85, 1.15, **kw)
            return
        self.local_box(x, y, yaw, (0, 0), (1.72, 0.07), 0.0, 0.72, **kw)          # wheels + frame
        self.local_box(x, y, yaw, (0.05, 0), (1.0, 0.45), 0.78, 1.0, **kw)        # handlebar .. saddle
        if kind == R.BICYCLIST:
            c, s = np.cos(yaw), np.sin(yaw)
            ekw = dict(label=label, instance=kw["instance"], velocity=velocity, reflectivity=kw["refl"])
            self.scene.add_ellipsoid((x - 0.1 * c, y - 0.1 * s, 1.35), (0.22, 0.2, 0.38), yaw, **ekw)
            self.scene.add_ellipsoid((x + 0.05 * c, y + 0.05 * s, 1.85), (0.11, 0.11, 0.13), yaw, **ekw)

    def person(self, x, y, velocity=(0.0, 0.0), moving=False):
        label = R.MOVING_PERSON if moving else R.PERSON
        h = self.u(1.55, 1.9)
        yaw = self.u(-np.pi, np.pi)
        kw = dict(label=label, instance=self.instance(), velocity=velocity, reflectivity=self.refl(label))
        self.scene.add_cylinder(x, y, 0.0, 0.47 * h, 0.16, **kw)                   # legs
        self.scene.add_ellipsoid((x, y, 0.7 * h), (0.24, 0.16, 0.25 * h), yaw, **kw)  # torso
        self.scene.add_ellipsoid((x, y, 0.93 * h), (0.1, 0.1, 0.07 * h), yaw, **kw)   # head

    def tree(self, x, y, z0=0.0, big=1.0, street=False):
        """Trunk + ellipsoid crown; street trees are pruned high so the crown clears traffic."""
        trunk_h = self.u(3.0, 4.5) if street else self.u(1.8, 3.5) * big
        self.scene.add_cylinder(x, y, z0, z0 + trunk_h + 0.5, self.u(0.12, 0.3) * big, label=R.TRUNK,
                                reflectivity=self.refl(R.TRUNK))
        a, c = self.u(1.4, 3.2) * big, self.u(1.4, 3.0) * big
        self.scene.add_ellipsoid((x, y, z0 + trunk_h + 0.9 * c), (a, a * self.u(0.8, 1.2), c), self.u(0, np.pi),
                                 label=R.VEGETATION, reflectivity=self.refl(R.VEGETATION))

    def bush(self, x, y, z0=0.0):
        r = self.u(0.6, 2.0)
        self.scene.add_ellipsoid((x, y, z0 + 0.6 * r), (r * self.u(0.8, 1.8), r, r * self.u(0.6, 1.0)),
                                 self.u(0, np.pi), label=R.VEGETATION, reflectivity=self.refl(R.VEGETATION))

    def pole(self, x, y, z0, height, radius):
        self.scene.add_cylinder(x, y, z0, z0 + height, radius, label=R.POLE, reflectivity=self.refl(R.POLE))

    def sign(self, x, y, z0, toward: float):
        """Sign post: pole with one or two retro-reflective plates facing the traffic."""
        h = self.u(2.0, 2.6)
        self.pole(x, y, z0, h + 0.3, 0.04)
        for k in range(1 + int(self.chance(0.3))):
            w, hh = self.u(0.5, 0.8), self.u(0.5, 0.8)
            zc = z0 + h - k * (hh + 0.1)
            self.box((x + 0.05 * toward, y, zc), (0.04, w, hh), label=R.TRAFFIC_SIGN, refl=self.refl(R.TRAFFIC_SIGN),
                     retro=True)

    def lamp(self, x, y, z0, side: float):
        h = self.u(6.0, 9.0)
        self.pole(x, y, z0, h, self.u(0.08, 0.13))
        arm = self.u(1.0, 2.0)
        self.box((x, y - side * arm / 2, z0 + h - 0.1), (0.12, arm, 0.12), label=R.POLE)
        self.box((x, y - side * arm, z0 + h - 0.25), (0.5, 0.3, 0.2), label=R.POLE)

    def building(self, x0, x1, y_near, depth, height, side):
        self.ground(x0, x1, y_near, y_near + side * depth, height, R.BUILDING)  # a slab from below ground to roof
        if self.chance(0.3):   # roof structure
            w = self.u(2, 5)
            xc = self.u(x0 + w, max(x1 - w, x0 + w + 0.1))
            self.box((xc, y_near + side * depth / 2, height + 0.8), (w, min(w, depth * 0.6), 1.6), label=R.BUILDING)


@dataclass(frozen=True)
class _Street:
    lanes: int
    lane_w: float
    shoulder: tuple[float, float]   # width of the kerb-side lane per side (index 0: y < 0, 1: y > 0)
    sidewalk: tuple[float, float]
    kerb: tuple[float, float]       # sidewalk surface heights

    @property
    def half_road(self) -> float:
        return self.lanes * self.lane_w

    def curb(self, side_idx: int) -> float:
        return self.half_road + self.shoulder[side_idx]


def _sides():
    return ((0, -1.0), (1, 1.0))   # (index, sign of y)


def _build_static(b: _Builder, st: _Street, x_lo: float, x_hi: float) -> None:
    rng = b.rng
    W = st.half_road
    b.ground(x_lo, x_hi, -W, W, 0.0, R.ROAD)
    # lane markings: dashed centre line (or double solid for 2+2 lanes), dashed separators, solid edges
    mark = dict(label=R.LANE_MARKING)
    if st.lanes == 1:
        for x in np.arange(x_lo, x_hi, 9.0):
            b.box((x + 1.5, 0.0, 0.0), (3.0, 0.15, 0.02), **mark)
    else:
        for y in (-0.12, 0.12):
            b.box(((x_lo + x_hi) / 2, y, 0.0), (x_hi - x_lo, 0.12, 0.02), **mark)
        for y in (-st.lane_w, st.lane_w):
            for x in np.arange(x_lo, x_hi, 9.0):
                b.box((x + 1.5, y, 0.0), (3.0, 0.15, 0.02), **mark)
    for y in (-(W - 0.2), W - 0.2):
        b.box(((x_lo + x_hi) / 2, y, 0.0), (x_hi - x_lo, 0.15, 0.02), **mark)

    # segments along the street; intersections cut across both sides
    edges = [x_lo]
    kinds = []
    while edges[-1] < x_hi:
        if kinds and kinds[-1] != "intersection" and b.chance(0.12):
            kinds.append("intersection")
            edges.append(edges[-1] + b.u(14.0, 20.0))
        else:
            kinds.append("street")
            edges.append(edges[-1] + b.u(25.0, 70.0))
    for (a, e), kind in zip(zip(edges[:-1], edges[1:]), kinds):
        if kind == "intersection":
            _intersection(b, st, a, e)
            continue
        for si, sg in _sides():
            _street_side(b, st, a, e, si, sg, rng)


def _intersection(b: _Builder, st: _Street, a: float, e: float) -> None:
    sw2 = 3.0
    for si, sg in _sides():
        yc, ks = st.curb(si), st.kerb[si]
        b.ground(a + sw2, e - sw2, sg * st.half_road, sg * 90.0, 0.0, R.ROAD)           # crossing road
        for xa, xb in ((a, a + sw2), (e - sw2, e)):                                      # its sidewalks
            b.ground(xa, xb, sg * yc, sg * 90.0, ks, R.SIDEWALK)
        for x in (a + 1.0, e - 1.0):                                                     # traffic lights
            b.pole(x, sg * (yc + 0.6), ks, b.u(3.5, 4.5), 0.1)
            b.box((x, sg * (yc + 0.6), ks + b.u(2.6, 3.2)), (0.35, 0.35, 1.0), label=R.TRAFFIC_SIGN,
                  refl=b.refl(R.TRAFFIC_SIGN), retro=True)
        for x in np.arange(a + sw2 + 0.5, e - sw2 - 0.5, 1.0):                           # zebra crossing
            b.box((x, sg * (st.half_road + 2.5), 0.0), (0.5, 3.0, 0.02), label=R.LANE_MARKING)


def _street_side(b: _Builder, st: _Street, a: float, e: float, si: int, sg: float, rng) -> None:
    W, yc, sw, ks = st.half_road, st.curb(si), st.sidewalk[si], st.kerb[si]
    ys = yc + sw   # where the frontage starts (distance from the centre line)
    # kerb-side lane: parking with parked vehicles, or plain road shoulder
    if st.shoulder[si] > 0:
        parking = b.chance(0.4)
        b.ground(a, e, sg * W, sg * yc, 0.0, R.PARKING if parking else R.ROAD)
        x = a + b.u(0.5, 4.0)
        while parking and x < e - 5.0:
            if b.chance(0.5):
                x += b.u(1.0, 7.0)
                continue
            kind = rng.choice([R.CAR, R.OTHER_VEHICLE, R.TRUCK, R.MOTORCYCLE], p=[0.86, 0.07, 0.02, 0.05])
            yaw = (0.0 if sg < 0 else np.pi) + rng.normal(0, 0.03)
            y = sg * (W + st.shoulder[si] / 2 + rng.normal(0, 0.1))
            if kind == R.MOTORCYCLE:
                b.two_wheeler(R.MOTORCYCLE, x + 1.0, y, yaw)
                x += 2.5
                continue
            length = b.vehicle(int(kind), x, y, yaw, x_is_start=True)
            x += length + b.u(0.6, 2.0)
    # sidewalk, sometimes with a grass verge between kerb and footpath (the furniture stands in it)
    verge = sw * b.u(0.35, 0.45) if b.chance(0.4) else 0.0
    if verge:
        b.ground(a, e, sg * yc, sg * (yc + verge), ks + 0.02, R.TERRAIN)
    b.ground(a, e, sg * (yc + verge), sg * ys, ks, R.SIDEWALK)

    # street furniture in a strip next to the kerb
    yf = sg * (yc + max(0.55, verge / 2))
    x = a + b.u(1.0, 6.0)
    while x < e - 1.0:
        item = rng.choice(["tree", "lamp", "sign", "bike", "bin", "shelter", "moto", "none"],
                          p=[0.45, 0.12, 0.13, 0.07, 0.08, 0.03, 0.03, 0.09])
        if item == "tree":
            b.tree(x, yf, ks, street=True)
        elif item == "lamp":
            b.lamp(x, yf, ks, sg)
        elif item == "sign":
            b.sign(x, yf, ks, toward=-1.0 if sg < 0 else 1.0)
        elif item == "bike":
            for k in range(1 + int(rng.integers(0, 3))):
                b.two_wheeler(R.BICYCLE, x + 0.6 * k, yf + sg * 0.4, np.pi / 2 + rng.normal(0, 0.1))
        elif item == "bin":
            b.box((x, yf, ks + 0.5), (0.6, 0.6, 1.0), b.u(0, 1), label=R.OTHER_OBJECT)
        elif item == "shelter":
            b.box((x, yf + sg * 0.8, ks + 2.35), (3.0, 1.6, 0.1), label=R.OTHER_STRUCTURE)
            b.box((x, yf + sg * 1.55, ks + 1.15), (3.0, 0.06, 2.3), label=R.OTHER_STRUCTURE)
        elif item == "moto":
            b.two_wheeler(R.MOTORCYCLE, x, yf + sg * 0.5, rng.normal(0, 0.2))
        x += b.u(4.0, 12.0)

    # people standing near the frontage side of the sidewalk
    for _ in range(rng.poisson(0.015 * (e - a))):
        b.person(b.u(a + 0.5, e - 0.5), sg * (ys - 0.5 + rng.normal(0, 0.1)))

    kind = rng.choice(["buildings", "yard", "green", "lot"], p=[0.33, 0.26, 0.35, 0.06])
    if kind == "buildings":
        setback = 0.0 if b.chance(0.5) else b.u(0.5, 4.0)
        depth = b.u(8.0, 16.0)
        label = rng.choice([R.SIDEWALK, R.TERRAIN, R.OTHER_GROUND], p=[0.45, 0.35, 0.2])
        b.ground(a, e, sg * ys, sg * (ys + setback + depth + 6.0), ks, int(label))
        x = a
        while x < e - 3.0:
            length = min(b.u(8.0, 30.0), e - x)
            b.building(x, x + length, sg * (ys + setback), depth, b.u(5.0, 22.0), sg)
            x += length + (0.0 if b.chance(0.5) else b.u(1.5, 5.0))
        if b.chance(0.5):   # a second row behind, visible above the first
            b.building(a, e, sg * (ys + setback + depth + 6.0), b.u(8, 15), b.u(12.0, 30.0), sg)
    elif kind == "yard":
        b.ground(a, e, sg * ys, sg * (ys + 30.0), ks + 0.02, R.TERRAIN)
        hedge = b.chance(0.4)
        x = a
        while x < e - 1.0:   # fence panels or hedges, with occasional gates
            length = min(b.u(5.0, 20.0), e - x)
            if hedge:
                height, thick = b.u(1.0, 2.2), b.u(0.6, 1.2)
                b.box((x + length / 2, sg * (ys + 0.2 + thick / 2), ks + height / 2), (length, thick, height),
                      label=R.VEGETATION)
            else:
                height = b.u(0.9, 2.0)
                b.box((x + length / 2, sg * (ys + 0.25), ks + height / 2), (length, 0.06, height), label=R.FENCE)
            x += length + (b.u(1.0, 3.0) if b.chance(0.3) else 0.0)
        for _ in range(int((e - a) / 5)):
            b.bush(b.u(a, e), sg * (ys + b.u(1.5, 9.0)), ks)
        for _ in range(int((e - a) / 14)):
            b.tree(b.u(a, e), sg * (ys + b.u(2.0, 12.0)), ks)
        x = a + b.u(0, 6)
        while x < e - 8.0:   # houses
            length = b.u(8.0, 14.0)
            b.building(x, min(x + length, e), sg * (ys + b.u(9.0, 14.0)), b.u(8.0, 12.0), b.u(5.0, 9.0), sg)
            x += length + b.u(4.0, 12.0)
        if b.chance(0.15):
            b.box((b.u(a, e), sg * (ys + b.u(3.0, 7.0)), ks + 1.3), (6.0, 2.4, 2.6), b.u(0, 3),
                  label=R.OTHER_OBJECT)   # container / shed
    elif kind == "green":
        b.ground(a, e, sg * ys, sg * (ys + 40.0), ks + 0.02, R.TERRAIN)
        if b.chance(0.6):
            height = b.u(0.8, 2.0)
            b.box(((a + e) / 2, sg * (ys + 0.8), ks + height / 2), (e - a, b.u(0.6, 1.2), height),
                  label=R.VEGETATION)   # hedge
        for _ in range(int((e - a) / 3)):
            b.tree(b.u(a, e), sg * (ys + b.u(2.0, 30.0)), ks, big=b.u(0.8, 1.4))
        for _ in range(int((e - a) / 5)):
            b.bush(b.u(a, e), sg * (ys + b.u(1.0, 20.0)), ks)
    else:   # parking lot with perpendicular rows
        lot = b.u(15.0, 24.0)
        b.ground(a, e, sg * ys, sg * (ys + lot), 0.02, R.PARKING)
        b.ground(a, e, sg * (ys + lot), sg * (ys + lot + 20.0), 0.05, R.TERRAIN)
        for row in (3.0, lot - 3.0):
            for x in np.arange(a + 1.5, e - 1.5, 2.6):
                if b.chance(0.65):
                    vk = R.CAR if b.chance(0.9) else R.OTHER_VEHICLE
                    b.vehicle(vk, x, sg * (ys + row), np.pi / 2 + (np.pi if b.chance(0.5) else 0.0))
        for _ in range(int((e - a) / 20)):
            b.tree(b.u(a, e), sg * (ys + lot + b.u(1.0, 10.0)), 0.05)


def _build_traffic(b: _Builder, st: _Street, x_lo: float, x_hi: float, t_end: float, ego_x0: float,
                   ego_speed: float) -> None:
    rng = b.rng
    lane_y = [st.lane_w * (j + 0.5) for j in range(st.lanes)]
    kinds, probs = [R.CAR, R.TRUCK, R.OTHER_VEHICLE, R.BUS], [0.85, 0.06, 0.06, 0.03]
    for sg in (-1.0, 1.0):
        for j, ly in enumerate(lane_y):
            if sg < 0 and j == 0:   # the ego lane: traffic at the ego speed keeps its distance
                speed = ego_speed
                starts = [ego_x0 + b.u(18.0, 45.0)] if b.chance(0.5) else []
                starts += [ego_x0 - b.u(18.0, 45.0)] if b.chance(0.4) else []
            else:
                speed = b.u(6.0, 14.0)
                span = speed * t_end
                starts, x = [], x_lo - span + b.u(0.0, 30.0)
                while x < x_hi + span:
                    starts.append(x)
                    x += b.u(30.0, 120.0)
            vx = -sg * speed   # y < 0 lanes drive towards +x
            for x in starts:
                b.vehicle(int(rng.choice(kinds, p=probs)), x, sg * ly, 0.0 if sg < 0 else np.pi,
                          velocity=(vx, 0.0), moving=True)
        # cyclists at the road edge, pedestrians on the sidewalk: one speed per side keeps them apart
        # (on the ego side only with two lanes, so the ego car never brushes past a cyclist)
        movers = [(R.PERSON, st.curb(0 if sg < 0 else 1) + 0.55 + 0.45 * (st.sidewalk[0 if sg < 0 else 1] - 0.5),
                   b.u(1.0, 1.6), (25.0, 120.0))]
        if sg > 0 or st.lanes > 1:
            movers.append((R.BICYCLIST, st.half_road - 0.3, b.u(4.0, 6.5), (40.0, 150.0)))
        for label, y, speed, gap in movers:
            direction = -sg if b.chance(0.7) or label == R.BICYCLIST else sg
            vx = direction * speed
            x = x_lo - speed * t_end + b.u(0.0, gap[0])
            while x < x_hi + speed * t_end:
                if label == R.BICYCLIST:
                    b.two_wheeler(R.BICYCLIST, x, sg * y, 0.0 if vx > 0 else np.pi, velocity=(vx, 0.0), moving=True)
                else:
                    b.person(x, sg * y, velocity=(vx, 0.0), moving=True)
                x += b.u(*gap)


def generate_drive(n_scans: int, *, seed: int = 0, sequence: int = 0, sensor: SensorConfig | None = None) -> Drive:
    """A drive of ``n_scans`` scans through a fresh street; deterministic in (seed, sequence)."""
    if n_scans < 1:
        raise ValueError(f"generate_drive: n_scans must be >= 1, got {n_scans}")
    if seed < 0 or sequence < 0:
        raise ValueError(f"generate_drive: seed and sequence must be >= 0, got {seed}, {sequence}")
    sensor = sensor or SensorConfig()
    rng = np.random.default_rng([seed, sequence])
    b = _Builder(rng, Scene(ground_height=-0.05, ground_label=R.TERRAIN, ground_reflectivity=0.3))
    lanes = 1 if rng.random() < 0.8 else 2
    st = _Street(lanes=lanes, lane_w=float(rng.uniform(3.0, 3.5)),
                 shoulder=tuple(float(2.2 if rng.random() < 0.6 else 0.0) for _ in range(2)),
                 sidewalk=tuple(float(rng.uniform(2.5, 5.0)) for _ in range(2)),
                 kerb=tuple(float(rng.uniform(0.1, 0.16)) for _ in range(2)))
    speed = float(rng.uniform(5.0, 11.0))
    dt = 1.0 / sensor.rate_hz
    times = np.concatenate([[0.0], np.cumsum(dt * (1.0 + rng.uniform(-0.01, 0.01, n_scans - 1)))])
    x = speed * times
    phase, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.3)
    y = -st.lane_w / 2 + amp * np.sin(2 * np.pi * x / 80.0 + phase)
    yaw = np.arctan(amp * 2 * np.pi / 80.0 * np.cos(2 * np.pi * x / 80.0 + phase))
    poses = np.tile(np.eye(4), (n_scans, 1, 1))
    poses[:, 0, 0], poses[:, 0, 1] = np.cos(yaw), -np.sin(yaw)
    poses[:, 1, 0], poses[:, 1, 1] = np.sin(yaw), np.cos(yaw)
    poses[:, 0, 3], poses[:, 1, 3], poses[:, 2, 3] = x, y, sensor.mount_height

    margin = sensor.max_range + 20.0
    x_lo, x_hi = float(x[0] - margin), float(x[-1] + margin)
    _build_static(b, st, x_lo, x_hi)
    _build_traffic(b, st, x_lo, x_hi, float(times[-1]), float(x[0]), speed)
    return Drive(scene=b.scene, poses=poses, times=times, sensor=sensor, seed=seed, sequence=sequence)
