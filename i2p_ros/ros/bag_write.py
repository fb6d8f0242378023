"""``i2p-bag-write``: a SemanticKITTI sequence (real or simulated) as a rosbag2 of PointCloud2 frames.

    i2p-bag-write --sequence data/sequences/08 --out bags/seq08 [--storage mcap|sqlite3]
                  [--topic /points] [--gt-topic /points_gt] [--frame-id velodyne] [--max-frames N]

Stamps: ``--start-time`` (seconds, default 1.6e9 so no stamp is zero) plus ``times.txt`` when the sequence has
one with a time per scan, else 1 / ``--rate-hz`` (10 Hz) apart. Each scan gives a ``/points`` cloud
(x, y, z, intensity float32, 16-byte points: what LiDAR drivers publish) and, when ``labels/`` exists, a
``/points_gt`` cloud with the same header, the same points and a uint32 ``label`` field of raw ids (layout:
:mod:`i2p_ros.ros.bag_io`). Written with ``rosbags`` for ROS 2 Kilted (``ros2 bag play`` reads it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.semantic_kitti import read_label_file, read_points, read_times
from . import pointcloud2 as pc
from .bag_io import CLOUD_TYPE, DEFAULT_GT_TOPIC, DEFAULT_TOPIC, typestore

__all__ = ["BagWriteReport", "main", "write_bag"]

STORAGES = ("mcap", "sqlite3")
DEFAULT_START_S = 1.6e9
POINT_DTYPE = np.dtype({"names": ["x", "y", "z", "intensity"], "formats": ["<f4"] * 4,
                        "offsets": [0, 4, 8, 12], "itemsize": 16})
GT_DTYPE = np.dtype({"names": ["x", "y", "z", "label"], "formats": ["<f4", "<f4", "<f4", "<u4"],
                     "offsets": [0, 4, 8, 12], "itemsize": 16})


@dataclass
class BagWriteReport:
    path: Path
    frames: int
    with_labels: bool
    stamps_ns: list[int]
    time_source: str          # "times.txt" or "<rate> Hz"


def _stamps(seq: Path, n: int, start_s: float, rate_hz: float) -> tuple[np.ndarray, str]:
    times_path = seq / "times.txt"
    if times_path.is_file():
        times = read_times(times_path)
        if len(times) < n:
            raise ValueError(f"{times_path} has {len(times)} times for {n} scans")
        source = "times.txt"
        times = times[:n] - times[0]
    else:
        times, source = np.arange(n) / rate_hz, f"{rate_hz:g} Hz"
    # start and offsets converted apart: a float64 near 1.6e9 s resolves only ~0.2 us
    ns = int(round(start_s * 1e9)) + np.round(times * 1e9).astype(np.int64)
    if n > 1 and not (np.diff(ns) > 0).all():
        raise ValueError(f"{times_path}: times must increase strictly (stamps identify frames)")
    return ns, source


def write_bag(sequence: str | os.PathLike, out: str | os.PathLike, *, storage: str = "mcap",
              topic: str = DEFAULT_TOPIC, gt_topic: str = DEFAULT_GT_TOPIC, frame_id: str = "velodyne",
              start_s: float = DEFAULT_START_S, rate_hz: float = 10.0, max_frames: int | None = None,
              progress: bool = False) -> BagWriteReport:
    """Write the bag (``out`` must not exist); see the module docstring for topics and stamps."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    if rate_hz <= 0:
        raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
    seq = Path(sequence)
    vdir = seq / "velodyne" if (seq / "velodyne").is_dir() else seq
    scans = sorted(vdir.glob("*.bin"))
    if not scans:
        raise FileNotFoundError(f"no .bin scans in {vdir} (expected a SemanticKITTI sequence folder)")
    scans = scans[:max_frames] if max_frames else scans
    ldir = vdir.parent / "labels"
    with_labels = ldir.is_dir() and all((ldir / f"{s.stem}.label").is_file() for s in scans)
    stamps, source = _stamps(vdir.parent, len(scans), start_s, rate_hz)
    store = typestore()
    factory = pc.RosbagsFactory(store)
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    from tqdm import tqdm

    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(Path(out), version=Writer.VERSION_LATEST, storage_plugin=plugin) as writer:
        conn = writer.add_connection(topic, CLOUD_TYPE, typestore=store)
        gt_conn = writer.add_connection(gt_topic, CLOUD_TYPE, typestore=store) if with_labels else None
        for scan, ns in tqdm(list(zip(scans, stamps, strict=True)), unit="scan", disable=not progress,
                             desc="i2p-bag-write"):
            points = read_points(scan)
            header = Header(stamp=Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000)),
                            frame_id=frame_id)
            cloud = pc.cloud_from_points(np.ascontiguousarray(points).view(POINT_DTYPE).reshape(-1), header,
                                         is_dense=bool(np.isfinite(points[:, :3]).all()), factory=factory)
            writer.write(conn, int(ns), store.serialize_cdr(cloud, CLOUD_TYPE))
            if gt_conn is not None:
                semantic, _ = read_label_file(ldir / f"{scan.stem}.label", len(points), points_path=scan)
                gt = np.empty(len(points), GT_DTYPE)
                for k, name in enumerate("xyz"):
                    gt[name] = points[:, k]
                gt["label"] = semantic
                gt_cloud = pc.cloud_from_points(gt, header, is_dense=cloud.is_dense, factory=factory)
                writer.write(gt_conn, int(ns), store.serialize_cdr(gt_cloud, CLOUD_TYPE))
    return BagWriteReport(Path(out), len(scans), with_labels, [int(s) for s in stamps], source)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i2p-bag-write", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sequence", required=True, type=Path, help="sequence folder (holds velodyne/, labels/)")
    p.add_argument("--out", required=True, type=Path, help="bag folder to create (must not exist)")
    p.add_argument("--storage", choices=STORAGES, default="mcap")
    p.add_argument("--topic", default=DEFAULT_TOPIC, help="PointCloud2 topic")
    p.add_argument("--gt-topic", default=DEFAULT_GT_TOPIC, help="ground-truth topic (PointCloud2 with `label`)")
    p.add_argument("--frame-id", default="velodyne")
    p.add_argument("--rate-hz", type=float, default=10.0, help="frame rate when the sequence has no times.txt")
    p.add_argument("--start-time", type=float, default=DEFAULT_START_S, help="stamp of the first scan, seconds")
    p.add_argument("--max-frames", type=int, default=None, help="only the first N scans")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out.exists():
        print(f"i2p-bag-write: {args.out} exists already; not overwriting", file=sys.stderr)
        return 2
    try:
        rep = write_bag(args.sequence, args.out, storage=args.storage, topic=args.topic, gt_topic=args.gt_topic,
                        frame_id=args.frame_id, start_s=args.start_time, rate_hz=args.rate_hz,
                        max_frames=args.max_frames, progress=not args.quiet)
    except (OSError, ValueError) as err:
        print(f"i2p-bag-write: {err}", file=sys.stderr)
        return 2
    print(f"i2p-bag-write: {rep.frames} frames ({rep.time_source}) -> {rep.path} [{args.storage}] on {args.topic}"
          + (f", ground truth on {args.gt_topic}" if rep.with_labels else ", no ground truth (no labels/)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
