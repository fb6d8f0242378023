"""Raw points -> voxels (mean features) and the inverse map back to every point.

Voxel index = ``floor(point / voxel_size)`` per axis. Pure torch on the points' device: the points are
reduced with one ``unique`` over packed int64 keys, so CPU and CUDA run the same code. Voxels come out
sorted by (x, y, z), which also makes the engine's key sort cheap.

Points that cannot be placed are never silently put in a voxel: a point is *dropped* (``inverse == -1``)
when any of its F columns is NaN/Inf (``nonfinite="mask"``; ``"raise"`` raises instead), when it lies
outside ``bounds`` (``min <= p < max`` per axis), or when its voxel is removed by ``max_voxels``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .tensor import SparseTensor

__all__ = ["Voxelized", "voxelize", "collate_voxelized"]

_INT32_MAX = 2**31 - 1


@dataclass
class Voxelized:
    """Voxels of one scan (or a batch of scans) and the point -> voxel map.

    coords:  int32 ``[M, 4]`` (batch, x, y, z) voxel indices.
    feats:   ``[M, F]`` mean of the features of the points in each voxel.
    inverse: int64 ``[P]`` voxel row of every input point, -1 for dropped points.
    """

    coords: Tensor
    feats: Tensor
    inverse: Tensor

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])

    def to_points(self, voxel_values: Tensor, fill: float | int = 0) -> Tensor:
        """Send per-voxel values ``[M, ...]`` back to every point ``[P, ...]``; dropped points get ``fill``."""
        if voxel_values.shape[0] != self.coords.shape[0]:
            raise ValueError(f"Voxelized.to_points: voxel_values has {voxel_values.shape[0]} rows, "
                             f"expected {self.coords.shape[0]} (one per voxel)")
        valid = self.inverse >= 0
        out = voxel_values.index_select(0, self.inverse.clamp(min=0))
        if not bool(valid.all()):
            shape = (-1,) + (1,) * (out.dim() - 1)
            out = torch.where(valid.view(shape), out, torch.full_like(out, fill))
        return out

    def to_sparse(self) -> SparseTensor:
        """The voxels as a stride-1 SparseTensor (features = mean point features)."""
        return SparseTensor(self.feats, self.coords, stride=1)


def _voxel_size3(voxel_size: float | Sequence[float], device: torch.device, dtype: torch.dtype) -> Tensor:
    vs = torch.as_tensor(voxel_size, dtype=torch.float64).reshape(-1)
    if vs.numel() == 1:
        vs = vs.expand(3)
    if vs.numel() != 3 or not bool(torch.all(vs > 0)) or not bool(torch.all(torch.isfinite(vs))):
        raise ValueError(f"voxelize: voxel_size must be a positive float or 3 positive floats, got {voxel_size!r}")
    return vs.to(device=device, dtype=dtype)


def _bounds(bounds: tuple[tuple[float, float, float], tuple[float, float, float]]) -> tuple[list[float], list[float]]:
    try:
        lo = [float(v) for v in bounds[0]]
        hi = [float(v) for v in bounds[1]]
    except (TypeError, ValueError, IndexError) as err:
        raise ValueError(f"voxelize: bounds must be ((xmin, ymin, zmin), (xmax, ymax, zmax)), got {bounds!r}") from err
    if len(lo) != 3 or len(hi) != 3 or not all(a < b for a, b in zip(lo, hi)):
        raise ValueError(f"voxelize: bounds must be ((xmin, ymin, zmin), (xmax, ymax, zmax)) with min < max, "
                         f"got {bounds!r}")
    return lo, hi


def voxelize(points: Tensor,
             voxel_size: float | tuple[float, float, float],
             *,
             batch_index: int = 0,
             bounds: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None,
             max_voxels: int | None = None,
             generator: torch.Generator | None = None,
             nonfinite: str = "mask") -> Voxelized:
    """Voxelize ``[P, F]`` points (columns 0..2 = x, y, z; all F columns are averaged as features).

    ``max_voxels`` keeps a uniformly random subset of that many voxels (training); pass ``generator`` for a
    reproducible subset. Kept voxels stay sorted by (x, y, z).
    """
    if points.dim() != 2 or points.shape[1] < 3:
        raise ValueError(f"voxelize: points must be [P, F>=3] (x, y, z, ...), got {tuple(points.shape)}")
    if not points.dtype.is_floating_point:
        raise TypeError(f"voxelize: points must be floating point, got {points.dtype}")
    if nonfinite not in ("mask", "raise"):
        raise ValueError(f"voxelize: nonfinite must be 'mask' or 'raise', got {nonfinite!r}")
    device = points.device
    num_points, feat_dim = points.shape
    # Column-wise masks: a reduction over a 3- or 4-wide row (``.all(dim=1)``) costs several times more on CPU.
    finite = torch.isfinite(points)
    keep = finite[:, 0].clone()
    for c in range(1, feat_dim):
        keep &= finite[:, c]
    if nonfinite == "raise":
        bad = num_points - int(keep.sum().item())
        if bad:
            raise ValueError(f"voxelize: {bad} of {num_points} points have NaN/Inf values "
                             "(pass nonfinite='mask' to drop them)")
    # Coordinates in float64 so that floor() of large / near-boundary values is exact enough.
    xyz = points[:, :3].to(torch.float64)
    if bounds is not None:
        lo, hi = _bounds(bounds)
        for c in range(3):
            col = xyz[:, c]
            keep &= (col >= lo[c]) & (col < hi[c])
    vs = _voxel_size3(voxel_size, device, torch.float64)
    kept_idx = torch.nonzero(keep).squeeze(1)
    inverse = torch.full((num_points,), -1, dtype=torch.int64, device=device)
    if kept_idx.numel() == 0:
        return Voxelized(torch.zeros((0, 4), dtype=torch.int32, device=device),
                         points.new_zeros((0, feat_dim)), inverse)
    grid_f = torch.floor(xyz.index_select(0, kept_idx) / vs)
    if bounds is not None:
        # floor(p / vs) is monotonic in p, so the bounds give the index range without a pass over the points
        gmin_f = torch.floor(torch.tensor(lo, dtype=torch.float64, device=device) / vs)
        gmax_f = torch.floor(torch.tensor(hi, dtype=torch.float64, device=device) / vs)
    else:
        gmin_f, gmax_f = torch.aminmax(grid_f, dim=0)
    extremes = torch.stack([gmin_f, gmax_f]).tolist()  # one device sync for the range checks below
    if max(abs(v) for row in extremes for v in row) > _INT32_MAX:
        raise ValueError(f"voxelize: voxel indices exceed int32 (index range {extremes}); "
                         "use bounds= or a larger voxel_size")
    grid = grid_f.to(torch.int64)
    lo_g = gmin_f.to(torch.int64)
    ext = [int(b) - int(a) + 1 for a, b in zip(*extremes)]
    packed = ext[0] * ext[1] * ext[2] < 2**62  # one int64 key per voxel unless the extent is astronomically large
    if packed:
        g = grid - lo_g
        key = (g[:, 0] * ext[1] + g[:, 1]) * ext[2] + g[:, 2]
        uniq, inv = torch.unique(key, sorted=True, return_inverse=True)
    else:  # row-wise unique: slower, same (x, y, z) lexicographic order
        uniq, inv = torch.unique(grid, dim=0, sorted=True, return_inverse=True)

    if max_voxels is not None and uniq.shape[0] > max_voxels:
        if max_voxels < 0:
            raise ValueError(f"voxelize: max_voxels must be >= 0, got {max_voxels}")
        gen_device = generator.device if generator is not None else device
        chosen = torch.randperm(uniq.shape[0], generator=generator, device=gen_device)[:max_voxels]
        chosen = torch.sort(chosen.to(device)).values
        remap = torch.full((uniq.shape[0],), -1, dtype=torch.int64, device=device)
        remap[chosen] = torch.arange(chosen.numel(), device=device)
        uniq = uniq.index_select(0, chosen)
        inv = remap.index_select(0, inv)
        pt_ok = inv >= 0
        kept_idx = kept_idx[pt_ok]
        inv = inv[pt_ok]

    m = uniq.shape[0]
    coords = torch.empty((m, 4), dtype=torch.int32, device=device)
    coords[:, 0] = int(batch_index)
    if packed:
        rest = torch.div(uniq, ext[2], rounding_mode="floor")
        coords[:, 3] = (uniq - rest * ext[2] + lo_g[2]).to(torch.int32)
        x = torch.div(rest, ext[1], rounding_mode="floor")
        coords[:, 2] = (rest - x * ext[1] + lo_g[1]).to(torch.int32)
        coords[:, 1] = (x + lo_g[0]).to(torch.int32)
    else:
        coords[:, 1:] = uniq.to(torch.int32)

    acc_dtype = torch.float64 if points.dtype == torch.float64 else torch.float32
    sums = torch.zeros((m, feat_dim), dtype=acc_dtype, device=device)
    sums.index_add_(0, inv, points.index_select(0, kept_idx).to(acc_dtype))
    counts = torch.bincount(inv, minlength=m).to(acc_dtype)
    feats = (sums / counts.unsqueeze(1)).to(points.dtype)
    inverse[kept_idx] = inv
    return Voxelized(coords, feats, inverse)


def collate_voxelized(items: Sequence[Voxelized]) -> Voxelized:
    """Concatenate per-scan results (each already voxelized with its own ``batch_index``).

    The inverse maps are concatenated in order, shifted so they index the concatenated voxels.
    """
    if len(items) == 0:
        raise ValueError("collate_voxelized: need at least one Voxelized")
    invs = []
    offset = 0
    for v in items:
        invs.append(torch.where(v.inverse >= 0, v.inverse + offset, v.inverse))
        offset += v.num_voxels
    return Voxelized(torch.cat([v.coords for v in items]), torch.cat([v.feats for v in items]), torch.cat(invs))
