"""SparseTensor: occupied voxel coordinates plus one feature row per voxel.

Coordinates are int32 ``[N, 4]`` = ``(batch, x, y, z)`` (torchsparse 2.1 order) in units of the finest voxel
grid; a tensor at ``stride`` s has coordinates that are multiples of s. Tensors derived from one input share
one :class:`~i2p_ros.sparse.cache.KernelMapCache`, so kernel maps are built once per forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .cache import KernelMapCache

__all__ = ["SparseTensor", "sparse_collate", "cat"]


class SparseTensor:
    """Features ``[N, C]`` at integer voxel coordinates ``[N, 4]`` (batch, x, y, z) at a given stride."""

    def __init__(self, feats: Tensor, coords: Tensor, stride: int = 1,
                 cache: KernelMapCache | None = None) -> None:
        if coords.dim() != 2 or coords.shape[1] != 4:
            raise ValueError(f"SparseTensor: coords must be [N, 4] (batch, x, y, z), got {tuple(coords.shape)}")
        if feats.dim() != 2 or feats.shape[0] != coords.shape[0]:
            raise ValueError(f"SparseTensor: feats must be [N, C] with N = {coords.shape[0]} rows of coords, "
                             f"got {tuple(feats.shape)}")
        if coords.dtype != torch.int32:
            if coords.dtype.is_floating_point:
                raise TypeError(f"SparseTensor: coords must be integer, got {coords.dtype}")
            coords = coords.to(torch.int32)
        if coords.device != feats.device:
            raise ValueError(f"SparseTensor: coords on {coords.device} but feats on {feats.device}")
        stride = int(stride)
        if stride < 1:
            raise ValueError(f"SparseTensor: stride must be >= 1, got {stride}")
        self.feats = feats
        self.coords = coords
        self.stride = stride
        self.cache = cache if cache is not None else KernelMapCache()
        self._batch_size: int | None = None

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    @property
    def shape(self) -> torch.Size:
        return self.feats.shape

    @property
    def num_channels(self) -> int:
        return int(self.feats.shape[1])

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def batch_size(self) -> int:
        """Number of samples = max batch index + 1 (0 for an empty tensor)."""
        if self._batch_size is None:
            n = self.coords.shape[0]
            self._batch_size = int(self.coords[:, 0].max().item()) + 1 if n else 0
        return self._batch_size

    # ------------------------------------------------------------------ derivation
    def replace(self, feats: Tensor) -> SparseTensor:
        """Same coordinates, stride and cache; new features (for norms, activations, residual sums)."""
        if feats.dim() != 2 or feats.shape[0] != self.coords.shape[0]:
            raise ValueError(f"SparseTensor.replace: feats must be [{self.coords.shape[0]}, C], "
                             f"got {tuple(feats.shape)}")
        out = SparseTensor.__new__(SparseTensor)
        out.feats = feats
        out.coords = self.coords
        out.stride = self.stride
        out.cache = self.cache
        out._batch_size = self._batch_size
        return out

    def split(self) -> list[SparseTensor]:
        """One tensor per sample (batch column), rows in their original order, batch column reset to 0."""
        out = []
        b = self.coords[:, 0]
        for i in range(self.batch_size):
            idx = torch.nonzero(b == i).squeeze(1)
            c = self.coords.index_select(0, idx).clone()
            c[:, 0] = 0
            out.append(SparseTensor(self.feats.index_select(0, idx), c, self.stride))
        return out

    def to(self, *args, **kwargs) -> SparseTensor:
        """Move/cast the features (and move the coords to the same device); a new cache is started."""
        feats = self.feats.to(*args, **kwargs)
        return SparseTensor(feats, self.coords.to(feats.device), self.stride)

    def __add__(self, other: SparseTensor) -> SparseTensor:
        """Residual sum of features on identical coordinates."""
        _check_same_coords([self, other], "SparseTensor.__add__")
        return self.replace(self.feats + other.feats)

    def __repr__(self) -> str:
        return (f"SparseTensor(N={self.coords.shape[0]}, C={self.feats.shape[1]}, stride={self.stride}, "
                f"dtype={self.feats.dtype}, device={self.feats.device})")


def _check_same_coords(tensors: Sequence[SparseTensor], where: str) -> None:
    first = tensors[0]
    for i, t in enumerate(tensors[1:], start=1):
        if t.stride != first.stride:
            raise ValueError(f"{where}: tensor {i} has stride {t.stride}, tensor 0 has stride {first.stride}")
        if t.coords is first.coords:
            continue
        if t.coords.shape != first.coords.shape or not torch.equal(t.coords, first.coords):
            raise ValueError(f"{where}: tensor {i} has different coordinates than tensor 0 "
                             f"({t.coords.shape[0]} vs {first.coords.shape[0]} rows); "
                             "concatenation/sum needs identical coords in identical order")


def cat(tensors: Sequence[SparseTensor]) -> SparseTensor:
    """Concatenate features along channels (skip connections); coordinates must be identical."""
    if len(tensors) == 0:
        raise ValueError("cat: need at least one SparseTensor")
    _check_same_coords(tensors, "cat")
    return tensors[0].replace(torch.cat([t.feats for t in tensors], dim=1))


def sparse_collate(coords: Sequence[Tensor], feats: Sequence[Tensor]) -> SparseTensor:
    """Batch per-sample ``[Ni, 3]`` integer coords and ``[Ni, C]`` feats into one tensor (batch column = i)."""
    if len(coords) != len(feats) or len(coords) == 0:
        raise ValueError(f"sparse_collate: need equally many (>0) coords and feats, got {len(coords)} and {len(feats)}")
    rows = []
    for i, (c, f) in enumerate(zip(coords, feats)):
        if c.dim() != 2 or c.shape[1] != 3:
            raise ValueError(f"sparse_collate: coords[{i}] must be [N, 3] (x, y, z), got {tuple(c.shape)}")
        if f.shape[0] != c.shape[0]:
            raise ValueError(f"sparse_collate: feats[{i}] has {f.shape[0]} rows, coords[{i}] has {c.shape[0]}")
        if c.dtype.is_floating_point:
            raise TypeError(f"sparse_collate: coords[{i}] must be integer, got {c.dtype}")
        b = torch.full((c.shape[0], 1), i, dtype=torch.int32, device=c.device)
        rows.append(torch.cat([b, c.to(torch.int32)], dim=1))
    return SparseTensor(torch.cat(list(feats), dim=0), torch.cat(rows, dim=0), stride=1)
