"""Weight layout converters: ours (= torchsparse) <-> dense ``conv3d`` <-> spconv 2.x.

Axis orders (all three are cross-correlations, so no kernel flip is involved):

* **ours / torchsparse**: ``[K, Cin, Cout]`` (depthwise ``[K, C]``), ``K = k**3``. Odd k: row
  ``i = (dz+r)*k*k + (dy+r)*k + (dx+r)`` (x fastest, offsets -r..r); even k: ``i = dx*k*k + dy*k + dz``
  (x slowest, offsets 0..k-1). Offsets are along the coordinate columns (x, y, z) of ``coords = (b, x, y, z)``.
* **dense conv3d** on a grid laid out ``[B, C, X, Y, Z]`` (x = dim 2): ``[Cout, Cin, kx, ky, kz]`` with
  ``kx = dx + r`` for odd k (padding r) and ``kx = dx`` for even k (padding 0); ``conv_transpose3d`` weights
  are ``[Cin, Cout, kx, ky, kz]``; depthwise (``groups=C``) ``[C, 1, kx, ky, kz]``.
* **spconv 2.x** (``SubMConv3d`` / ``SparseConv3d``): ``[Cout, k0, k1, k2, Cin]`` where k0..k2 follow spconv's
  index columns 1..3. ``spatial_order="xyz"`` when spconv is fed ``(b, x, y, z)`` indices (as our coords), so
  ``[Cout, kx, ky, kz, Cin]``; ``"zyx"`` for the common ``(b, z, y, x)`` spconv convention
  (``spatial_shape = [Z, Y, X]``), so ``[Cout, kz, ky, kx, Cin]``.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["to_dense_weight", "from_dense_weight", "to_spconv_weight", "from_spconv_weight",
           "kernel_volume_to_size"]


def _k_from_volume(kv: int, where: str) -> int:
    k = round(kv ** (1.0 / 3.0))
    if k ** 3 != kv:
        raise ValueError(f"{where}: first axis {kv} is not a cube k**3")
    return k


def _grid(kernel: Tensor, k: int) -> Tensor:
    """[K, ...] in our offset order -> [kx, ky, kz, ...] in dense index order."""
    rest = tuple(kernel.shape[1:])
    if k % 2:
        # row index = kz*k*k + ky*k + kx -> view as [kz, ky, kx, ...] and swap to [kx, ky, kz, ...]
        return kernel.reshape((k, k, k) + rest).permute((2, 1, 0) + tuple(range(3, 3 + len(rest))))
    return kernel.reshape((k, k, k) + rest)  # row index = kx*k*k + ky*k + kz


def _ungrid(grid: Tensor, k: int) -> Tensor:
    """Inverse of :func:`_grid`: [kx, ky, kz, ...] -> [K, ...]."""
    rest = tuple(grid.shape[3:])
    if k % 2:
        grid = grid.permute((2, 1, 0) + tuple(range(3, 3 + len(rest))))
    return grid.reshape((k ** 3,) + rest).contiguous()


def to_dense_weight(kernel: Tensor, transposed: bool = False) -> Tensor:
    """Ours -> ``conv3d`` ``[Cout, Cin, kx, ky, kz]`` (``transposed``: ``conv_transpose3d`` ``[Cin, Cout, ...]``;
    depthwise ``[K, C]`` -> ``[C, 1, kx, ky, kz]``)."""
    k = _k_from_volume(kernel.shape[0], "to_dense_weight")
    g = _grid(kernel, k)  # [kx, ky, kz, Cin, Cout] or [kx, ky, kz, C]
    if kernel.dim() == 2:
        return g.permute(3, 0, 1, 2).unsqueeze(1).contiguous()
    if kernel.dim() != 3:
        raise ValueError(f"to_dense_weight: expected [K, Cin, Cout] or [K, C], got {tuple(kernel.shape)}")
    perm = (3, 4, 0, 1, 2) if transposed else (4, 3, 0, 1, 2)
    return g.permute(perm).contiguous()


def from_dense_weight(weight: Tensor, transposed: bool = False, depthwise: bool = False) -> Tensor:
    """``conv3d`` ``[Cout, Cin, kx, ky, kz]`` (or ``conv_transpose3d`` ``[Cin, Cout, ...]``, or depthwise
    ``[C, 1, ...]``) -> ours."""
    if weight.dim() != 5 or not (weight.shape[2] == weight.shape[3] == weight.shape[4]):
        raise ValueError(f"from_dense_weight: expected [*, *, k, k, k], got {tuple(weight.shape)}")
    k = weight.shape[2]
    if depthwise:
        if weight.shape[1] != 1:
            raise ValueError(f"from_dense_weight: depthwise weight must be [C, 1, k, k, k], got {tuple(weight.shape)}")
        return _ungrid(weight[:, 0].permute(1, 2, 3, 0), k)
    perm = (2, 3, 4, 0, 1) if transposed else (2, 3, 4, 1, 0)
    return _ungrid(weight.permute(perm), k)


def _spconv_perm(spatial_order: str) -> tuple[int, int, int]:
    if spatial_order == "xyz":
        return (0, 1, 2)
    if spatial_order == "zyx":
        return (2, 1, 0)
    raise ValueError(f"spatial_order must be 'xyz' or 'zyx', got {spatial_order!r}")


def to_spconv_weight(kernel: Tensor, spatial_order: str = "xyz") -> Tensor:
    """Ours ``[K, Cin, Cout]`` -> spconv ``[Cout, k0, k1, k2, Cin]`` (see module doc for ``spatial_order``)."""
    if kernel.dim() != 3:
        raise ValueError(f"to_spconv_weight: expected [K, Cin, Cout] (spconv has no depthwise layout), "
                         f"got {tuple(kernel.shape)}")
    k = _k_from_volume(kernel.shape[0], "to_spconv_weight")
    g = _grid(kernel, k)  # [kx, ky, kz, Cin, Cout]
    a = _spconv_perm(spatial_order)
    return g.permute(4, a[0], a[1], a[2], 3).contiguous()


def from_spconv_weight(weight: Tensor, spatial_order: str = "xyz") -> Tensor:
    """spconv ``[Cout, k0, k1, k2, Cin]`` -> ours ``[K, Cin, Cout]``."""
    if weight.dim() != 5 or not (weight.shape[1] == weight.shape[2] == weight.shape[3]):
        raise ValueError(f"from_spconv_weight: expected [Cout, k, k, k, Cin], got {tuple(weight.shape)}")
    k = weight.shape[1]
    a = _spconv_perm(spatial_order)
    # spconv axis j+1 holds spatial axis a[j]; bring back to [kx, ky, kz, Cin, Cout]
    inv = [0, 0, 0]
    for j, ax in enumerate(a):
        inv[ax] = j + 1
    return _ungrid(weight.permute(inv[0], inv[1], inv[2], 4, 0), k)


def kernel_volume_to_size(kv: int) -> int:
    """k from K = k**3 (helper for checkpoint converters)."""
    return _k_from_volume(kv, "kernel_volume_to_size")
