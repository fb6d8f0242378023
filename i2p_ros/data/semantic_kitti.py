"""Reader and writer for the official SemanticKITTI layout, with validation that names file and problem.

Layout (what the dataset ships and the benchmark server accepts)::

    ROOT/sequences/NN/velodyne/NNNNNN.bin      float32 [N, 4]  x, y, z, intensity (sensor frame)
    ROOT/sequences/NN/labels/NNNNNN.label      uint32 [N]      low 16 bits semantic id, high 16 instance id
    ROOT/sequences/NN/predictions/NNNNNN.label uint32 [N]      a submission (raw ids, instance 0)
    ROOT/sequences/NN/poses.txt   one 3x4 row-major pose per scan (KITTI: camera-0 frame, see lidar_poses)
    ROOT/sequences/NN/calib.txt   "P0: ..." .. "P3: ...", "Tr: ..." (velodyne -> camera 0), 12 numbers each
    ROOT/sequences/NN/times.txt   one timestamp in seconds per scan
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .labels import RAW_ID_LIMIT, LabelConfig

__all__ = [
    "SemanticKittiFormatError",
    "Scan",
    "ScanRef",
    "SequenceMeta",
    "camera_poses",
    "frame_name",
    "lidar_poses",
    "list_scans",
    "prediction_path",
    "read_calib",
    "read_label_file",
    "read_points",
    "read_poses",
    "read_scan",
    "read_sequence_meta",
    "read_times",
    "resolve_split",
    "sequence_dir",
    "sequence_name",
    "write_calib",
    "write_label_file",
    "write_points",
    "write_poses",
    "write_predictions",
    "write_scan",
    "write_sequence",
    "write_sequence_meta",
    "write_times",
]

PathLike = str | os.PathLike


class SemanticKittiFormatError(ValueError):
    """A file or directory does not follow the SemanticKITTI layout (message names it and the problem)."""


# --------------------------------------------------------------------------------------------- names

def sequence_name(seq: int | str) -> str:
    """``8`` / ``"8"`` / ``"08"`` -> ``"08"`` (SemanticKITTI sequence folder name)."""
    s = str(seq).strip()
    if not s.isdigit():
        raise ValueError(f"sequence must be a non-negative integer, got {seq!r}")
    return f"{int(s):02d}"


def frame_name(index: int) -> str:
    """Scan index -> the 6-digit file stem (``12`` -> ``"000012"``)."""
    if index < 0 or index > 999_999:
        raise ValueError(f"frame index must be in [0, 999999], got {index}")
    return f"{index:06d}"


def sequence_dir(root: PathLike, seq: int | str) -> Path:
    return Path(root) / "sequences" / sequence_name(seq)


def prediction_path(root: PathLike, seq: int | str, frame: int | str) -> Path:
    """Where the benchmark server expects the prediction of one scan."""
    stem = frame if isinstance(frame, str) else frame_name(frame)
    return sequence_dir(root, seq) / "predictions" / f"{stem}.label"


# --------------------------------------------------------------------------------------------- points / labels

def read_points(path: PathLike) -> np.ndarray:
    """A ``.bin`` scan as float32 ``[N, 4]`` (x, y, z, intensity)."""
    p = Path(path)
    size = p.stat().st_size
    if size % 16:
        raise SemanticKittiFormatError(
            f"{p}: size {size} bytes is not a multiple of 16 (4 float32 per point: x, y, z, intensity)")
    return np.fromfile(p, dtype="<f4").reshape(-1, 4)


def write_points(path: PathLike, points: np.ndarray) -> Path:
    """Write ``[N, 4]`` points as a little-endian float32 ``.bin``."""
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 4:
        raise ValueError(f"write_points({path}): points must be [N, 4] (x, y, z, intensity), got {pts.shape}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(pts, dtype="<f4").tofile(p)
    return p


def read_label_file(path: PathLike, num_points: int | None = None, *, points_path: PathLike | None = None,
                    label_config: LabelConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A ``.label`` file as (semantic uint16 ``[N]``, instance uint16 ``[N]``).

    ``num_points`` checks the count against the scan (``points_path`` is only named in the error);
    ``label_config`` rejects raw ids it does not know.
    """
    p = Path(path)
    size = p.stat().st_size
    if size % 4:
        raise SemanticKittiFormatError(f"{p}: size {size} bytes is not a multiple of 4 (one uint32 per point)")
    raw = np.fromfile(p, dtype="<u4")
    if num_points is not None and raw.shape[0] != num_points:
        other = f" ({points_path})" if points_path is not None else ""
        raise SemanticKittiFormatError(f"{p}: {raw.shape[0]} labels but the scan{other} has {num_points} points")
    semantic = (raw & 0xFFFF).astype(np.uint16)
    instance = (raw >> 16).astype(np.uint16)
    if label_config is not None:
        label_config.check_raw(semantic, source=str(p))
    return semantic, instance


def _pack_labels(semantic: np.ndarray, instance: np.ndarray | None, what: str) -> np.ndarray:
    sem = np.asarray(semantic)
    if sem.ndim != 1:
        raise ValueError(f"{what}: semantic labels must be 1-D, got shape {sem.shape}")
    if sem.size and (sem.min() < 0 or sem.max() >= RAW_ID_LIMIT):
        raise ValueError(f"{what}: semantic ids must fit in 16 bits, got range [{sem.min()}, {sem.max()}]")
    inst = np.zeros_like(sem) if instance is None else np.asarray(instance)
    if inst.shape != sem.shape:
        raise ValueError(f"{what}: instance shape {inst.shape} differs from semantic shape {sem.shape}")
    if inst.size and (inst.min() < 0 or inst.max() >= RAW_ID_LIMIT):
        raise ValueError(f"{what}: instance ids must fit in 16 bits, got range [{inst.min()}, {inst.max()}]")
    return (inst.astype(np.uint32) << 16) | sem.astype(np.uint32)


def write_label_file(path: PathLike, semantic: np.ndarray, instance: np.ndarray | None = None) -> Path:
    """Write raw semantic ids (+ optional instance ids) as an official uint32 ``.label`` file."""
    packed = _pack_labels(semantic, instance, f"write_label_file({path})")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    packed.astype("<u4").tofile(p)
    return p


def write_predictions(root: PathLike, seq: int | str, frame: int | str, raw_labels: np.ndarray,
                      label_config: LabelConfig | None = None) -> Path:
    """Write one scan's predicted raw ids where the benchmark server expects them (instance 0)."""
    path = prediction_path(root, seq, frame)
    if label_config is not None:
        label_config.check_raw(np.asarray(raw_labels), source=f"predictions for {path}")
    return write_label_file(path, raw_labels)


# --------------------------------------------------------------------------------------------- poses etc.

def _read_rows(path: Path, width: int, what: str) -> np.ndarray:
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            vals = [float(v) for v in line.split()]
        except ValueError as exc:
            raise SemanticKittiFormatError(f"{path}:{lineno}: {what}: not a number ({exc})") from None
        if len(vals) != width:
            raise SemanticKittiFormatError(f"{path}:{lineno}: {what}: expected {width} numbers, got {len(vals)}")
        rows.append(vals)
    return np.asarray(rows, dtype=np.float64).reshape(-1, width)


def read_poses(path: PathLike) -> np.ndarray:
    """``poses.txt`` -> float64 ``[N, 4, 4]`` homogeneous poses (3x4 row-major rows + [0 0 0 1])."""
    rows = _read_rows(Path(path), 12, "pose")
    poses = np.tile(np.eye(4), (rows.shape[0], 1, 1))
    poses[:, :3, :4] = rows.reshape(-1, 3, 4)
    return poses


def write_poses(path: PathLike, poses: np.ndarray) -> Path:
    """Write ``[N, 4, 4]`` or ``[N, 3, 4]`` poses as KITTI ``poses.txt``."""
    arr = np.asarray(poses, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] not in ((4, 4), (3, 4)):
        raise ValueError(f"write_poses({path}): poses must be [N, 4, 4] or [N, 3, 4], got {arr.shape}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(p, arr[:, :3, :4].reshape(-1, 12), fmt="%.12e")
    return p


def read_calib(path: PathLike) -> dict[str, np.ndarray]:
    """``calib.txt`` -> {"P0": [3, 4], ..., "Tr": [4, 4]} (Tr made homogeneous: velodyne -> camera 0)."""
    p = Path(path)
    out: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        try:
            vals = [float(v) for v in rest.split()]
        except ValueError:
            vals = []
        if not sep or len(vals) != 12:
            raise SemanticKittiFormatError(f"{p}:{lineno}: expected 'KEY: 12 numbers', got {line[:60]!r}")
        out[key.strip()] = np.asarray(vals).reshape(3, 4)
    if "Tr" not in out:
        raise SemanticKittiFormatError(f"{p}: no 'Tr:' line (velodyne -> camera transform)")
    tr = np.eye(4)
    tr[:3] = out["Tr"]
    out["Tr"] = tr
    return out


def write_calib(path: PathLike, calib: Mapping[str, np.ndarray]) -> Path:
    """Write ``calib.txt``; each value is written as its top 3x4 block (Tr may be given as 4x4)."""
    if "Tr" not in calib:
        raise ValueError(f"write_calib({path}): calib needs a 'Tr' entry (velodyne -> camera 0)")
    lines = []
    for key, mat in calib.items():
        m = np.asarray(mat, dtype=np.float64)
        if m.shape not in ((3, 4), (4, 4)):
            raise ValueError(f"write_calib({path}): '{key}' must be 3x4 or 4x4, got {m.shape}")
        lines.append(f"{key}: " + " ".join(f"{v:.12e}" for v in m[:3].reshape(-1)))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(lines) + "\n")
    return p


def read_times(path: PathLike) -> np.ndarray:
    """``times.txt`` -> float64 ``[N]`` seconds."""
    return _read_rows(Path(path), 1, "time")[:, 0]


def write_times(path: PathLike, times: np.ndarray) -> Path:
    arr = np.asarray(times, dtype=np.float64).reshape(-1)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(p, arr, fmt="%.6e")
    return p


def lidar_poses(cam_poses: np.ndarray, tr: np.ndarray) -> np.ndarray:
    """KITTI ``poses.txt`` (camera-0 frames) -> velodyne poses: ``inv(Tr) @ P @ Tr`` per scan.

    The result maps points of scan i's sensor frame into scan 0's sensor frame.
    """
    tr = _homogeneous(tr)
    return np.linalg.inv(tr) @ np.asarray(cam_poses) @ tr


def camera_poses(velo_poses: np.ndarray, tr: np.ndarray) -> np.ndarray:
    """Inverse of :func:`lidar_poses`: velodyne poses -> what KITTI stores in ``poses.txt``."""
    tr = _homogeneous(tr)
    return tr @ np.asarray(velo_poses) @ np.linalg.inv(tr)


def _homogeneous(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4):
        raise ValueError(f"expected a 3x4 or 4x4 transform, got {m.shape}")
    return m


@dataclass
class SequenceMeta:
    """The optional per-sequence files; each is None when absent."""

    poses: np.ndarray | None      # [N, 4, 4] as stored (camera-0 frame)
    calib: dict[str, np.ndarray] | None
    times: np.ndarray | None

    def velodyne_poses(self) -> np.ndarray:
        """Sensor poses (scan i -> scan 0 sensor frame); needs poses.txt and calib.txt."""
        if self.poses is None or self.calib is None:
            raise ValueError("velodyne_poses needs both poses.txt and calib.txt")
        return lidar_poses(self.poses, self.calib["Tr"])


def read_sequence_meta(root: PathLike, seq: int | str) -> SequenceMeta:
    d = sequence_dir(root, seq)
    return SequenceMeta(poses=read_poses(d / "poses.txt") if (d / "poses.txt").is_file() else None,
                        calib=read_calib(d / "calib.txt") if (d / "calib.txt").is_file() else None,
                        times=read_times(d / "times.txt") if (d / "times.txt").is_file() else None)


def write_sequence_meta(root: PathLike, seq: int | str, *, poses: np.ndarray | None = None,
                        calib: Mapping[str, np.ndarray] | None = None, times: np.ndarray | None = None) -> Path:
    d = sequence_dir(root, seq)
    d.mkdir(parents=True, exist_ok=True)
    if poses is not None:
        write_poses(d / "poses.txt", poses)
    if calib is not None:
        write_calib(d / "calib.txt", calib)
    if times is not None:
        write_times(d / "times.txt", times)
    return d


# --------------------------------------------------------------------------------------------- scans

@dataclass(frozen=True)
class ScanRef:
    """One scan on disk; ``label`` is None for unlabeled splits."""

    sequence: str
    frame: str
    velodyne: Path
    label: Path | None


@dataclass
class Scan:
    points: np.ndarray            # float32 [N, 4]
    semantic: np.ndarray | None   # uint16 [N] raw ids
    instance: np.ndarray | None   # uint16 [N]
    ref: ScanRef | None = None


def resolve_split(split: str | Sequence[int | str], label_config: LabelConfig) -> tuple[list[str], bool]:
    """A split name (``train``/``val``/``valid``/``test``, from the YAML's ``split``) or an explicit list
    of sequences -> (sequence folder names, whether labels are expected). Only ``test`` is unlabeled."""
    if isinstance(split, str):
        seqs = label_config.sequences(split)
        return [sequence_name(s) for s in seqs], split != "test"
    return [sequence_name(s) for s in split], True


def list_scans(root: PathLike, sequences: Iterable[int | str], *, labeled: bool = True) -> list[ScanRef]:
    """All scans of the given sequences, in order; checks the layout before any scan is read."""
    root = Path(root)
    refs: list[ScanRef] = []
    for seq in sequences:
        name = sequence_name(seq)
        d = root / "sequences" / name
        vdir = d / "velodyne"
        if not vdir.is_dir():
            raise SemanticKittiFormatError(f"{vdir}: velodyne directory of sequence {name} does not exist")
        bins = sorted(vdir.glob("*.bin"))
        if not bins:
            raise SemanticKittiFormatError(f"{vdir}: no .bin scans in sequence {name}")
        ldir = d / "labels"
        if labeled:
            if not ldir.is_dir():
                raise SemanticKittiFormatError(
                    f"{ldir}: missing labels directory for sequence {name} of a labeled split")
            missing = [b.stem for b in bins if not (ldir / f"{b.stem}.label").is_file()]
            if missing:
                raise SemanticKittiFormatError(
                    f"{ldir}: {len(missing)} scans have no .label file (first: {missing[0]}.label)")
        refs.extend(ScanRef(name, b.stem, b, (ldir / f"{b.stem}.label") if labeled else None) for b in bins)
    return refs


def read_scan(ref: ScanRef, label_config: LabelConfig | None = None) -> Scan:
    """Read points (and labels if ``ref.label``) with every format check."""
    points = read_points(ref.velodyne)
    if ref.label is None:
        return Scan(points, None, None, ref)
    sem, inst = read_label_file(ref.label, points.shape[0], points_path=ref.velodyne, label_config=label_config)
    return Scan(points, sem, inst, ref)


def write_scan(root: PathLike, seq: int | str, frame: int, points: np.ndarray,
               semantic: np.ndarray | None = None, instance: np.ndarray | None = None) -> ScanRef:
    """Write one scan (and its labels) into the official layout."""
    d = sequence_dir(root, seq)
    stem = frame_name(frame)
    pts = np.asarray(points)
    if semantic is not None and np.asarray(semantic).shape[0] != pts.shape[0]:
        raise ValueError(f"write_scan(sequence {sequence_name(seq)}, frame {stem}): "
                         f"{np.asarray(semantic).shape[0]} labels for {pts.shape[0]} points")
    vpath = write_points(d / "velodyne" / f"{stem}.bin", pts)
    lpath = None
    if semantic is not None:
        lpath = write_label_file(d / "labels" / f"{stem}.label", semantic, instance)
    return ScanRef(sequence_name(seq), stem, vpath, lpath)


def write_sequence(root: PathLike, seq: int | str, scans: Iterable[Scan], *, poses: np.ndarray | None = None,
                   calib: Mapping[str, np.ndarray] | None = None, times: np.ndarray | None = None) -> list[ScanRef]:
    """Write a whole sequence: scans numbered from 0 in order, plus poses/calib/times if given."""
    refs = [write_scan(root, seq, i, s.points, s.semantic, s.instance) for i, s in enumerate(scans)]
    for name, arr in (("poses", poses), ("times", times)):
        if arr is not None and len(arr) != len(refs):
            raise ValueError(f"write_sequence({sequence_name(seq)}): {len(arr)} {name} for {len(refs)} scans")
    write_sequence_meta(root, seq, poses=poses, calib=calib, times=times)
    return refs
