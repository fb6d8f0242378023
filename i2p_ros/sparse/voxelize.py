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
import torch.nn.functional as F
from torch import Tensor

from .keys import sorted_unique
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

    How (the node's per-frame cost, so every pass counts): one key per point for *all* points, dropped points
    given a sentinel key past every real voxel, so one sort groups the kept points by voxel and puts the dropped
    ones in a single trailing run; no gather of the kept rows is ever made.
    """
    if points.dim() != 2 or points.shape[1] < 3:
        raise ValueError(f"voxelize: points must be [P, F>=3] (x, y, z, ...), got {tuple(points.shape)}")
    if not points.dtype.is_floating_point:
        raise TypeError(f"voxelize: points must be floating point, got {points.dtype}")
    if nonfinite not in ("mask", "raise"):
        raise ValueError(f"voxelize: nonfinite must be 'mask' or 'raise', got {nonfinite!r}")
    device = points.device
    num_points, feat_dim = points.shape
    # Coordinates in float64 so that floor() of large / near-boundary values is exact enough.
    xyz = points[:, :3].to(torch.float64)
    vs = _voxel_size3(voxel_size, device, torch.float64)
    lo = hi = None
    if bounds is not None:
        lo, hi = _bounds(bounds)
    finite = None
    if nonfinite == "raise":
        finite = _finite_rows(points)
        bad = num_points - int(finite.sum().item())
        if bad:
            raise ValueError(f"voxelize: {bad} of {num_points} points have NaN/Inf values "
                             "(pass nonfinite='mask' to drop them)")
    keep = _kept_points(points, xyz, lo, hi, finite)
    n_keep = int(keep.sum().item())
    if n_keep == 0:
        return Voxelized(torch.zeros((0, 4), dtype=torch.int32, device=device), points.new_zeros((0, feat_dim)),
                         torch.full((num_points,), -1, dtype=torch.int64, device=device))
    all_kept = n_keep == num_points
    grid_f = torch.floor(xyz / vs)  # dropped points may hold NaN/Inf/huge values here: their keys are replaced
    if lo is not None:
        # floor(p / vs) is monotonic in p, so the bounds give the index range without a pass over the points
        gmin_f = torch.floor(torch.tensor(lo, dtype=torch.float64, device=device) / vs)
        gmax_f = torch.floor(torch.tensor(hi, dtype=torch.float64, device=device) / vs)
    else:
        gmin_f, gmax_f = torch.aminmax(grid_f if all_kept else grid_f[keep], dim=0)
    extremes = torch.stack([gmin_f, gmax_f]).tolist()  # one device sync for the range checks below
    if max(abs(v) for row in extremes for v in row) > _INT32_MAX:
        raise ValueError(f"voxelize: voxel indices exceed int32 (index range {extremes}); "
                         "use bounds= or a larger voxel_size")
    lo_g = [int(v) for v in extremes[0]]
    ext = [int(b) - int(a) + 1 for a, b in zip(*extremes)]
    cells = ext[0] * ext[1] * ext[2]
    # key = ((x - x0) * ey + (y - y0)) * ez + (z - z0) as one float64 matrix-vector product: exact, since every
    # product and partial sum is an integer below 2**53 (cells < 2**53 is checked), and the non-finite values of
    # dropped points are overwritten by the sentinel before the conversion to integers
    if cells >= 2**53:
        return _voxelize_rows(points, grid_f, keep, batch_index, max_voxels, generator)
    mult = torch.tensor([float(ext[1] * ext[2]), float(ext[2]), 1.0], dtype=torch.float64, device=device)
    key_f = torch.mv(grid_f, mult).sub_(lo_g[0] * ext[1] * ext[2] + lo_g[1] * ext[2] + lo_g[2])
    if not all_kept:
        key_f.masked_fill_(~keep, float(cells))  # sentinel: sorts after every real voxel
    # a LiDAR scan's extent fits 4-byte keys, which sort about twice as fast
    key = key_f.to(torch.int32 if cells < _INT32_MAX else torch.int64)
    uniq, inv, order, starts = sorted_unique(key)
    m = uniq.shape[0] - (0 if all_kept else 1)  # the sentinel run, if any, is last
    feats = F.embedding_bag(order[:n_keep], points, starts[:m], mode="mean") \
        if points.dtype in (torch.float32, torch.float64) else _mean_features(points, inv, keep, m)
    uniq = uniq[:m]
    inverse = inv if all_kept else inv.masked_fill_(~keep, -1)

    if max_voxels is not None and m > max_voxels:
        uniq, feats, inverse = _subsample(uniq, feats, inverse, max_voxels, generator)
        m = uniq.shape[0]
    coords = torch.empty((m, 4), dtype=torch.int32, device=device)
    coords[:, 0] = int(batch_index)
    rest = torch.div(uniq, ext[2], rounding_mode="floor")
    coords[:, 3] = (uniq - rest * ext[2] + lo_g[2]).to(torch.int32)
    x = torch.div(rest, ext[1], rounding_mode="floor")
    coords[:, 2] = (rest - x * ext[1] + lo_g[1]).to(torch.int32)
    coords[:, 1] = (x + lo_g[0]).to(torch.int32)
    return Voxelized(coords, feats, inverse)


def _finite_rows(points: Tensor, first_column: int = 0) -> Tensor:
    """Rows whose columns ``first_column..`` are all finite (column-wise: a reduction over a 3- or 4-wide row,
    ``.all(dim=1)``, costs several times more on CPU)."""
    finite = torch.isfinite(points[:, first_column:])
    ok = finite[:, 0].clone()
    for c in range(1, finite.shape[1]):
        ok &= finite[:, c]
    return ok


def _kept_points(points: Tensor, xyz: Tensor, lo: list[float] | None, hi: list[float] | None,
                 finite: Tensor | None) -> Tensor:
    """Points with finite features inside the bounds (``finite``: the all-columns finiteness mask, when the
    caller already has it). A NaN fails every comparison and +-Inf fails the bounds, so with bounds only the
    non-coordinate columns need an explicit finiteness check."""
    if lo is None or hi is None:
        return finite if finite is not None else _finite_rows(points)
    if finite is not None:
        keep = finite.clone()
    elif points.shape[1] > 3:
        keep = _finite_rows(points, 3)
    else:
        keep = torch.ones(points.shape[0], dtype=torch.bool, device=points.device)
    for c in range(3):
        col = xyz[:, c]
        keep &= col >= lo[c]
        keep &= col < hi[c]
    return keep


def _mean_features(points: Tensor, inv: Tensor, keep: Tensor, m: int) -> Tensor:
    """Per-voxel means for dtypes embedding_bag does not take (float16/bfloat16): accumulated in float32."""
    rows = torch.nonzero(keep).squeeze(1)
    idx = inv.index_select(0, rows)
    sums = torch.zeros((m, points.shape[1]), dtype=torch.float32, device=points.device)
    sums.index_add_(0, idx, points.index_select(0, rows).float())
    counts = torch.bincount(idx, minlength=m).to(torch.float32)
    return (sums / counts.unsqueeze(1)).to(points.dtype)


def _subsample(uniq: Tensor, feats: Tensor, inverse: Tensor, max_voxels: int,
               generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """A uniformly random subset of ``max_voxels`` voxels, kept in sorted order; their points keep their
    voxel, the others are dropped (``inverse == -1``)."""
    if max_voxels < 0:
        raise ValueError(f"voxelize: max_voxels must be >= 0, got {max_voxels}")
    device = uniq.device
    m = uniq.shape[0]
    gen_device = generator.device if generator is not None else device
    chosen = torch.randperm(m, generator=generator, device=gen_device)[:max_voxels]
    chosen = torch.sort(chosen.to(device)).values
    remap = torch.full((m + 1,), -1, dtype=torch.int64, device=device)  # last entry: dropped stays dropped
    remap[chosen] = torch.arange(chosen.numel(), device=device)
    return uniq.index_select(0, chosen), feats.index_select(0, chosen), remap[inverse]


def _voxelize_rows(points: Tensor, grid_f: Tensor, keep: Tensor, batch_index: int, max_voxels: int | None,
                   generator: torch.Generator | None) -> Voxelized:
    """Fallback for extents too large to pack into one int64 key: row-wise unique (slower, same order)."""
    device = points.device
    rows = torch.nonzero(keep).squeeze(1)
    uniq, inv = torch.unique(grid_f.index_select(0, rows).to(torch.int64), dim=0, sorted=True, return_inverse=True)
    m = uniq.shape[0]
    inverse = torch.full((points.shape[0],), -1, dtype=torch.int64, device=device)
    inverse[rows] = inv
    feats = _mean_features(points, inverse, keep, m)
    if max_voxels is not None and m > max_voxels:
        uniq, feats, inverse = _subsample(uniq, feats, inverse, max_voxels, generator)
        m = uniq.shape[0]
    coords = torch.empty((m, 4), dtype=torch.int32, device=device)
    coords[:, 0] = int(batch_index)
    coords[:, 1:] = uniq.to(torch.int32)
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
