"""Torch Dataset over SemanticKITTI sequences: augmentation, voxelization, labels, and the way back.

Each item is one scan voxelized by the engine's voxelizer (voxel = ``floor(point / voxel_size)``,
features = mean of x, y, z, intensity of its points, after augmentation). A sample keeps what evaluation
needs to score *every* point: the point -> voxel ``inverse`` map, the point count, per-point training
labels and raw ids, and the sequence / frame it came from. :func:`collate` stacks samples into a
:class:`Batch` whose ``coords`` carry the batch column (DESIGN.md: ``(batch, x, y, z)``).

Voxel labels are the **majority vote** of the labels of the voxel's points, where ignored points
(training index 255) do not vote; a voxel whose points are all ignored is ignored; ties go to the
smaller class index. Training targets are ``voxel_labels``; evaluation compares
``Batch.point_predictions(voxel_logits)`` with ``point_labels``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..sparse.voxelize import voxelize
from .labels import IGNORE_INDEX, LabelConfig, load_label_config
from .semantic_kitti import ScanRef, list_scans, read_scan, resolve_split

__all__ = [
    "AugmentConfig",
    "Batch",
    "Sample",
    "SemanticKittiDataset",
    "augment_points",
    "collate",
    "make_sample",
    "random_transform",
    "voxel_majority",
]


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation of the xyz columns (intensity is left alone).

    Defaults follow the Image2Point reference recipe: random yaw and a scale in 0.95-1.05; flips and
    jitter are available but off.
    """

    yaw: bool = True                                  # rotation about z, uniform in [0, 2 pi)
    scale: tuple[float, float] | None = (0.95, 1.05)  # isotropic scale range
    flip_x: bool = False                              # mirror x -> -x with probability 0.5
    flip_y: bool = False                              # mirror y -> -y with probability 0.5
    jitter_sigma: float = 0.0                         # per-point Gaussian xyz noise (metres)
    jitter_clip: float = 0.05                         # |noise| is clipped to this

    @classmethod
    def from_dict(cls, d: dict | None) -> AugmentConfig | None:
        """From a training-config mapping; ``None`` / ``{}`` / ``False`` means no augmentation."""
        if not d:
            return None
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise KeyError(f"AugmentConfig: unknown keys {sorted(unknown)} (known: {sorted(names)})")
        if "scale" in d and d["scale"] is not None:
            d = {**d, "scale": tuple(float(v) for v in d["scale"])}
        return cls(**d)


def random_transform(cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """A random 3x3 linear map (flips, then yaw, then scale) drawn from ``cfg``."""
    m = np.eye(3)
    if cfg.flip_x and rng.random() < 0.5:
        m = np.diag([-1.0, 1.0, 1.0]) @ m
    if cfg.flip_y and rng.random() < 0.5:
        m = np.diag([1.0, -1.0, 1.0]) @ m
    if cfg.yaw:
        a = rng.uniform(0.0, 2.0 * np.pi)
        c, s = np.cos(a), np.sin(a)
        m = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ m
    if cfg.scale is not None:
        m = rng.uniform(*cfg.scale) * m
    return m


def augment_points(points: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """A transformed copy of ``[N, F]`` points (columns 0..2 = xyz; the other columns are kept)."""
    out = np.array(points, dtype=np.float32, copy=True)
    m = random_transform(cfg, rng)
    out[:, :3] = out[:, :3] @ m.T.astype(np.float32)
    if cfg.jitter_sigma > 0:
        noise = rng.normal(0.0, cfg.jitter_sigma, (out.shape[0], 3))
        out[:, :3] += np.clip(noise, -cfg.jitter_clip, cfg.jitter_clip).astype(np.float32)
    return out


def voxel_majority(inverse: Tensor, labels: Tensor, num_voxels: int, num_classes: int,
                   ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Per-voxel majority label (int64 ``[num_voxels]``); ignored points do not vote, ties -> smaller index."""
    valid = (inverse >= 0) & (labels != ignore_index)
    if valid.any() and int(labels[valid].max()) >= num_classes:
        raise ValueError(f"voxel_majority: label {int(labels[valid].max())} >= num_classes {num_classes}")
    key = inverse[valid] * num_classes + labels[valid].to(torch.int64)
    counts = torch.bincount(key, minlength=num_voxels * num_classes).view(num_voxels, num_classes)
    out = counts.argmax(1)   # torch returns the first maximum: ties go to the smaller class index
    return torch.where(counts.sum(1) > 0, out, torch.full_like(out, ignore_index))


@dataclass
class Sample:
    """One voxelized scan plus everything needed to score all of its points."""

    coords: Tensor                  # int32 [M, 3] voxel indices (x, y, z)
    feats: Tensor                   # float32 [M, F] mean point features (x, y, z, intensity)
    inverse: Tensor                 # int64 [P] voxel row of every point, -1 if in no kept voxel
    num_points: int                 # P
    voxel_labels: Tensor | None     # int64 [M] training index, 255 = ignore
    point_labels: Tensor | None     # int64 [P] training index, 255 = ignore
    raw_labels: Tensor | None       # int32 [P] raw SemanticKITTI ids as read from the .label file
    sequence: str = ""
    frame: str = ""


def make_sample(points: np.ndarray, raw_labels: np.ndarray | None = None, *, label_config: LabelConfig,
                voxel_size: float = 0.05, max_voxels: int | None = None, augment: AugmentConfig | None = None,
                bounds=None, seed: int | None = None, sequence: str = "", frame: str = "",
                source: str = "labels") -> Sample:
    """Build a :class:`Sample` from raw arrays (what the Dataset does after reading the files)."""
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 4:
        raise ValueError(f"make_sample({source}): points must be [N, 4] (x, y, z, intensity), got {pts.shape}")
    seed = int(np.random.SeedSequence().entropy % (1 << 62)) if seed is None else seed
    rng = np.random.default_rng(seed)
    if augment is not None:
        pts = augment_points(pts, augment, rng)
    gen = torch.Generator().manual_seed(seed)
    vox = voxelize(torch.from_numpy(pts), voxel_size, bounds=bounds, max_voxels=max_voxels, generator=gen)
    point_labels = voxel_labels = raw_t = None
    if raw_labels is not None:
        raw = np.asarray(raw_labels)
        if raw.shape != (pts.shape[0],):
            raise ValueError(f"make_sample({source}): {raw.shape} labels for {pts.shape[0]} points")
        point_labels = torch.from_numpy(label_config.to_train(raw, source).astype(np.int64))
        voxel_labels = voxel_majority(vox.inverse, point_labels, vox.num_voxels, label_config.num_classes)
        raw_t = torch.from_numpy(raw.astype(np.int32))
    return Sample(coords=vox.coords[:, 1:].contiguous(), feats=vox.feats, inverse=vox.inverse,
                  num_points=int(pts.shape[0]), voxel_labels=voxel_labels, point_labels=point_labels,
                  raw_labels=raw_t, sequence=sequence, frame=frame)


class SemanticKittiDataset(Dataset):
    """Scans of a split (``train``/``val``/``test`` from the label YAML's ``split``, or a list of sequences).

    ``augment`` and ``max_voxels`` are for training; leave both None for evaluation so every point maps
    to a voxel. Randomness comes from torch's global generator (one draw per item), so ``torch.manual_seed``
    and DataLoader worker seeding make runs reproducible.
    """

    def __init__(self, root: str | os.PathLike, split: str | Sequence[int | str] = "train", *,
                 label_config: LabelConfig | None = None, voxel_size: float = 0.05,
                 max_voxels: int | None = None, augment: AugmentConfig | None = None, bounds=None,
                 labeled: bool | None = None):
        self.label_config = label_config or load_label_config()
        sequences, default_labeled = resolve_split(split, self.label_config)
        self.labeled = default_labeled if labeled is None else labeled
        self.refs: list[ScanRef] = list_scans(root, sequences, labeled=self.labeled)
        self.root, self.sequences = root, sequences
        self.voxel_size, self.max_voxels, self.augment, self.bounds = voxel_size, max_voxels, augment, bounds

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> Sample:
        ref = self.refs[index]
        scan = read_scan(ref, self.label_config)
        seed = int(torch.randint(0, 1 << 62, (1,)).item())
        return make_sample(scan.points, scan.semantic, label_config=self.label_config, voxel_size=self.voxel_size,
                           max_voxels=self.max_voxels, augment=self.augment, bounds=self.bounds, seed=seed,
                           sequence=ref.sequence, frame=ref.frame, source=str(ref.label or ref.velodyne))


@dataclass
class Batch:
    """Samples stacked for the network; offsets delimit each scan's voxels and points."""

    coords: Tensor                  # int32 [sum M, 4] (batch, x, y, z)
    feats: Tensor                   # float32 [sum M, F]
    inverse: Tensor                 # int64 [sum P] row into the stacked voxels, -1 if none
    voxel_offsets: Tensor           # int64 [B + 1]
    point_offsets: Tensor           # int64 [B + 1]
    voxel_labels: Tensor | None     # int64 [sum M]
    point_labels: Tensor | None     # int64 [sum P]
    raw_labels: Tensor | None       # int32 [sum P]
    sequences: list[str]
    frames: list[str]

    @property
    def batch_size(self) -> int:
        return len(self.frames)

    def _map(self, fn) -> Batch:
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True)."""
        return self._map(lambda t: t.pin_memory())

    def sparse(self):
        """The voxels as a stride-1 :class:`i2p_ros.sparse.SparseTensor`."""
        from ..sparse import SparseTensor

        return SparseTensor(self.feats, self.coords, stride=1)

    def point_predictions(self, voxel_output: Tensor, fill: int = IGNORE_INDEX) -> Tensor:
        """Per-point predicted training indices ``[sum P]`` from voxel logits ``[sum M, C]`` or labels ``[sum M]``.

        Points that are in no kept voxel get ``fill`` (255: they count as unclassified).
        """
        pred = voxel_output.argmax(1) if voxel_output.dim() == 2 else voxel_output
        if pred.shape[0] != self.coords.shape[0]:
            raise ValueError(f"point_predictions: {pred.shape[0]} voxel rows, batch has {self.coords.shape[0]}")
        valid = self.inverse >= 0
        out = pred.index_select(0, self.inverse.clamp(min=0)).to(torch.int64)
        return torch.where(valid, out, torch.full_like(out, fill))

    def split_points(self, values: Tensor) -> list[Tensor]:
        """Split a per-point tensor ``[sum P, ...]`` into one tensor per scan."""
        sizes = (self.point_offsets[1:] - self.point_offsets[:-1]).tolist()
        return list(torch.split(values, sizes))


def collate(samples: Sequence[Sample]) -> Batch:
    """Stack samples: add the batch column, shift each inverse map by the voxels before it."""
    if not samples:
        raise ValueError("collate: empty list of samples")
    labeled = [s.voxel_labels is not None for s in samples]
    if any(labeled) and not all(labeled):
        raise ValueError("collate: cannot mix labeled and unlabeled samples")
    n_vox = torch.tensor([0] + [s.coords.shape[0] for s in samples]).cumsum(0)
    n_pts = torch.tensor([0] + [s.num_points for s in samples]).cumsum(0)
    coords = torch.cat([torch.cat([torch.full((s.coords.shape[0], 1), b, dtype=torch.int32), s.coords], 1)
                        for b, s in enumerate(samples)])
    inverse = torch.cat([torch.where(s.inverse >= 0, s.inverse + n_vox[b], s.inverse) for b, s in enumerate(samples)])
    cat = (lambda name: torch.cat([getattr(s, name) for s in samples])) if all(labeled) else (lambda name: None)
    return Batch(coords=coords, feats=torch.cat([s.feats for s in samples]), inverse=inverse,
                 voxel_offsets=n_vox, point_offsets=n_pts, voxel_labels=cat("voxel_labels"),
                 point_labels=cat("point_labels"), raw_labels=cat("raw_labels"),
                 sequences=[s.sequence for s in samples], frames=[s.frame for s in samples])
