"""2D -> 3D weight inflation (Image2Point): ImageNet conv kernels become sparse 3D kernels.

Pure tensor transforms, no modules: the 3D encoders call them per tensor while mapping a 2D state dict
onto their own.

Output layouts are the sparse engine's (torchsparse order, DESIGN.md §2):

* regular conv ``[K, Cin, Cout]``, depthwise ``[K, C]``, ``K = k**3``;
* odd ``k``: offset ``(dx, dy, dz)`` in ``-r..r`` (``r = k // 2``) has index
  ``i = (dz+r)*k*k + (dy+r)*k + (dx+r)`` — x fastest;
* the 2×2×2 stride-2 shortcut: offsets ``0..1``, ``i = dx*4 + dy*2 + dz`` — x slowest;
* a sparse conv computes ``out[p] = sum_i in[p + stride_in * offset_i] @ W[i]`` (cross-correlation, like
  ``torch.nn.functional.conv2d``), so a 2D tap ``W2[:, :, a, b]`` (row ``a``, column ``b``) multiplies the
  pixel at row offset ``a - r`` and column offset ``b - r``.

``axis`` is the 3D axis along which the 2D kernel is replicated; the other two axes take the kernel's
rows (``kh``) and columns (``kw``). The assignment reproduces the Image2Point reference code
(``weight_transform`` in its ``model_zoo.py``) tiling for tiling, whose option names are *not* the
replicated axis:

=========  ==========  ===========  ==================================  ===================
``axis``   rows ``kh``  cols ``kw``  ``K[dx,dy,dz]`` (repeat)             reference option
=========  ==========  ===========  ==================================  ===================
``"x"``     y           z           ``W2[dy, dz]`` for every ``dx``     ``'x-axis'``
``"y"``     z           x           ``W2[dz, dx]`` for every ``dy``     ``'z-axis'`` (default)
``"z"``     y           x           ``W2[dy, dx]`` for every ``dz``     ``'y-axis'``
=========  ==========  ===========  ==================================  ===================

So ``axis="y"`` (our default) is exactly the reference code's default tiling. An image laid on the plane
orthogonal to ``axis`` puts pixel ``(row, col)`` at the coordinates given by the table (for ``"z"``:
``x = col, y = row``); with ``mode="center"`` an inflated conv then reproduces the 2D conv on that image.

``mode``:

* ``"repeat"`` (default): copy the 2D kernel into all ``k`` slices along ``axis`` (reference behaviour);
* ``"average"``: ``repeat`` divided by the number of copies of each 2D tap (``k``; 8 for the shortcut), so
  the taps of one 2D weight sum to it and a constant input keeps the 2D response;
* ``"center"``: the 2D kernel in the centre slice (offset 0 along ``axis``), zeros elsewhere — on a
  one-voxel-thick planar input this is exactly the 2D convolution.

Stride does not change the weight transform. Alignment of a *strided* sparse conv with a strided 2D conv
(both sample the outputs at multiples of the stride): with the image's first pixel at an even coordinate
and the plane at an even coordinate, sparse sites ``2m`` equal PyTorch's symmetric ``padding=k//2``
outputs ``m``; with the first pixel at an odd coordinate and an even image size, they equal TensorFlow
``'SAME'`` outputs (EfficientNet's padding). See ``test/test_inflate_sparse.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

__all__ = [
    "AXES",
    "MODES",
    "DEFAULT_AXIS",
    "DEFAULT_MODE",
    "PLANE_AXES",
    "REFERENCE_AXIS_NAMES",
    "BN_KEYS",
    "inflate_conv_weight",
    "inflate_shortcut_weight",
    "inflate_bn",
]

Axis = Literal["x", "y", "z"]
Mode = Literal["repeat", "average", "center"]
AXES: tuple[str, ...] = ("x", "y", "z")
MODES: tuple[str, ...] = ("repeat", "average", "center")
DEFAULT_AXIS: Axis = "y"
DEFAULT_MODE: Mode = "repeat"
# axis -> (3D dimension of the kernel rows kh, 3D dimension of the kernel columns kw); 0=x, 1=y, 2=z.
PLANE_AXES: dict[str, tuple[int, int]] = {"x": (1, 2), "y": (2, 0), "z": (1, 0)}
# Image2Point reference ``trans_type`` -> our ``axis`` giving the identical tiling.
REFERENCE_AXIS_NAMES: dict[str, str] = {"x-axis": "x", "z-axis": "y", "y-axis": "z"}
BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def _check(axis: str, mode: str) -> None:
    if axis not in AXES:
        raise ValueError(f"inflation axis must be one of {AXES}, got {axis!r}")
    if mode not in MODES:
        raise ValueError(f"inflation mode must be one of {MODES}, got {mode!r}")


def _to_xyz(w: torch.Tensor, axis: str, mode: str) -> torch.Tensor:
    """``[..., kh, kw]`` -> dense ``[..., kx, ky, kz]`` replicated / centred / averaged along ``axis``."""
    k = w.shape[-1]
    if mode == "center":
        stack = torch.zeros(*w.shape, k, dtype=w.dtype, device=w.device)
        stack[..., k // 2] = w
    else:
        stack = w.unsqueeze(-1).expand(*w.shape, k)
        if mode == "average":
            stack = stack / k
    # stack dims (h, w, a) sit at -3, -2, -1; order them as (x, y, z).
    h_dim, w_dim = PLANE_AXES[axis]
    src = {h_dim: -3, w_dim: -2}
    lead = list(range(w.ndim - 2))
    return stack.permute(*lead, *(src.get(d, -1) % stack.ndim for d in range(3)))


def _xyz_to_ours(dense: torch.Tensor, depthwise: bool) -> torch.Tensor:
    """Dense ``[Cout, Cin, kx, ky, kz]`` (or ``[C, kx, ky, kz]``) -> ``[K, Cin, Cout]`` (or ``[K, C]``), x fastest."""
    k = dense.shape[-1]
    if depthwise:
        return dense.permute(3, 2, 1, 0).reshape(k ** 3, dense.shape[0]).contiguous()
    return dense.permute(4, 3, 2, 1, 0).reshape(k ** 3, dense.shape[1], dense.shape[0]).contiguous()


def inflate_conv_weight(
    w2d: torch.Tensor,
    axis: Axis = DEFAULT_AXIS,
    mode: Mode = DEFAULT_MODE,
    depthwise: bool = False,
) -> torch.Tensor:
    """Inflate a 2D conv weight ``[Cout, Cin, k, k]`` (depthwise: ``[C, 1, k, k]``) to our sparse layout.

    Returns ``[k**3, Cin, Cout]`` (depthwise ``[k**3, C]``), a new tensor with ``w2d``'s dtype and device.
    ``k`` must be odd (1 stays 1×1×1, where all modes agree). The stride of the conv is irrelevant here.
    """
    _check(axis, mode)
    if w2d.ndim != 4:
        raise ValueError(f"expected a 2D conv weight [Cout, Cin, kh, kw], got shape {tuple(w2d.shape)}")
    cout, cin, kh, kw = w2d.shape
    if kh != kw or kh % 2 == 0:
        raise ValueError(f"only square odd 2D kernels inflate to a k×k×k cube, got {kh}×{kw} "
                         f"(weight shape {tuple(w2d.shape)}); use inflate_shortcut_weight for 1×1 stride-2")
    if depthwise:
        if cin != 1:
            raise ValueError(f"a depthwise weight must be [C, 1, k, k], got shape {tuple(w2d.shape)}")
        return _xyz_to_ours(_to_xyz(w2d[:, 0], axis, mode), depthwise=True)
    return _xyz_to_ours(_to_xyz(w2d, axis, mode), depthwise=False)


def inflate_shortcut_weight(w2d: torch.Tensor, mode: Mode = DEFAULT_MODE) -> torch.Tensor:
    """A stride-2 1×1 shortcut ``[Cout, Cin, 1, 1]`` -> 2×2×2 stride-2 sparse conv weight ``[8, Cin, Cout]``.

    The 2×2×2 kernel has offsets ``0..1`` per axis (index ``dx*4 + dy*2 + dz``); output site ``p`` (a multiple
    of 2) gathers the voxels ``p .. p+1``. ``repeat`` copies the 1×1 weight into all 8 offsets (as the
    reference code does), ``average`` divides it by 8 (each tap is spread over 8 copies, so a constant
    input keeps the 2D response), ``center`` puts it only at offset ``(0, 0, 0)`` (index 0) — the voxel a 2D
    1×1 stride-2 conv (padding 0, torchvision's downsample) samples, pixel ``2j``. Axis-independent.
    """
    _check(DEFAULT_AXIS, mode)
    if w2d.ndim != 4 or w2d.shape[-2:] != (1, 1):
        raise ValueError(f"a shortcut weight must be [Cout, Cin, 1, 1], got shape {tuple(w2d.shape)}")
    w = w2d[:, :, 0, 0].t()  # [Cin, Cout]
    if mode == "center":
        out = torch.zeros(8, *w.shape, dtype=w.dtype, device=w.device)
        out[0] = w
        return out
    out = w.unsqueeze(0).expand(8, *w.shape)
    return (out / 8 if mode == "average" else out).contiguous()


def inflate_bn(state: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Copy one BatchNorm2d's entries verbatim for our BatchNorm (``nn.BatchNorm1d`` keys).

    ``state`` is a state dict; ``prefix`` selects the layer (``"layer1.0.bn1"``; empty when ``state`` holds one
    BatchNorm's entries). Returns ``{"weight", "bias", "running_mean", "running_var"[, "num_batches_tracked"]}``
    as clones. Raises ``KeyError`` naming the missing key and ``ValueError`` on inconsistent shapes.
    """
    p = f"{prefix}." if prefix else ""
    out: dict[str, torch.Tensor] = {}
    for name in BN_KEYS:
        if p + name not in state:
            raise KeyError(f"BatchNorm entry {p + name!r} not found (have: {sorted(state)[:8]}...)")
        out[name] = state[p + name].detach().clone()
    c = out["weight"].shape
    bad = {n: tuple(t.shape) for n, t in out.items() if t.ndim != 1 or t.shape != c}
    if bad:
        raise ValueError(f"BatchNorm {prefix or '<state>'} entries must all be [C]; shapes: "
                         f"{ {n: tuple(t.shape) for n, t in out.items()} }")
    if p + "num_batches_tracked" in state:
        out["num_batches_tracked"] = state[p + "num_batches_tracked"].detach().clone()
    return out
