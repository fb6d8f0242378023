"""rosbag2 files of LiDAR frames with ground truth, through ``rosbags`` (no rclpy needed).

Layout written by ``i2p-bag-write`` and read by ``i2p-bag-eval``:

``/points``     sensor_msgs/PointCloud2, fields x, y, z, intensity (float32), one message per scan
``/points_gt``  sensor_msgs/PointCloud2 with the same header (stamp, frame_id) and the same points in the
                same order: fields x, y, z (float32) and ``label`` (uint32, the raw SemanticKITTI
                semantic id, instance bits removed), so it can be shown in RViz coloured by label.

The bag's receive timestamp of each message equals its header stamp.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from . import pointcloud2 as pc

__all__ = ["CLOUD_TYPE", "DEFAULT_GT_TOPIC", "DEFAULT_TOPIC", "BagFrame", "read_frames", "stamp_ns", "typestore"]

CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"
DEFAULT_TOPIC = "/points"
DEFAULT_GT_TOPIC = "/points_gt"


@lru_cache(maxsize=1)
def typestore() -> Any:
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


@dataclass
class BagFrame:
    """One scan of a bag: the raw CDR bytes (publishable as is), its stamp and the ground truth."""

    stamp_ns: int
    frame_id: str
    cdr: bytes                     # serialized sensor_msgs/PointCloud2 as stored
    num_points: int
    xyz: np.ndarray                # float32 [N, 3] (row-major point order), to check what comes back
    gt_labels: np.ndarray | None   # uint32 [N] raw ids, None when the bag has no ground truth for this stamp


def read_frames(bag: str | os.PathLike, topic: str = DEFAULT_TOPIC, gt_topic: str | None = DEFAULT_GT_TOPIC,
                *, max_frames: int | None = None) -> Iterator[BagFrame]:
    """Frames of ``topic`` in bag order, each with the ``label`` field of the ``gt_topic`` message of its stamp.

    Ground truth is matched by header stamp; the bag writer puts it right after its cloud, so at most a few
    ground-truth messages are held at a time.
    """
    from rosbags.rosbag2 import Reader

    path = Path(bag)
    if not path.exists():
        raise FileNotFoundError(f"bag {path} does not exist")
    store = typestore()
    with Reader(path) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            raise ValueError(f"bag {path} has no topic {topic!r} (topics: {sorted(reader.topics)})")
        bad = [c.msgtype for c in conns if c.msgtype != CLOUD_TYPE]
        if bad:
            raise ValueError(f"bag {path}: topic {topic!r} has type {bad[0]}, expected {CLOUD_TYPE}")
        gt_conns = [c for c in reader.connections if gt_topic and c.topic == gt_topic]
        pending: dict[int, BagFrame] = {}
        gt: dict[int, np.ndarray] = {}
        emitted = 0
        for conn, _, raw in reader.messages(connections=conns + gt_conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            stamp = stamp_ns(msg.header)
            if conn.topic == topic:
                pending[stamp] = BagFrame(stamp, msg.header.frame_id, bytes(raw), int(msg.width) * int(msg.height),
                                          pc.xyz(pc.decode(msg)), None)
            else:
                gt[stamp] = pc.decode(msg)["label"].astype(np.uint32).reshape(-1)
            # a frame is complete once its ground truth arrived, or a later frame began (no ground truth)
            for s in sorted(pending):
                if s in gt or not gt_conns or any(t > s for t in pending):
                    frame = pending.pop(s)
                    frame.gt_labels = gt.pop(s, None)
                    yield frame
                    emitted += 1
                    if max_frames is not None and emitted >= max_frames:
                        return
                else:
                    break
        for s in sorted(pending):
            frame = pending.pop(s)
            frame.gt_labels = gt.pop(s, None)
            yield frame
            emitted += 1
            if max_frames is not None and emitted >= max_frames:
                return
