"""Conv3d on SparseTensors: submanifold, strided, transposed, depthwise; scatter or gather execution.

Weights follow torchsparse: ``kernel`` is ``[K, Cin, Cout]`` (depthwise ``[K, C]``) with ``K = k**3`` and the
offset order of DESIGN.md §2 (see :func:`i2p_ros.sparse.kmap.kernel_offsets`). Maps and neighbour tables are
taken from / stored in the input's cache under deterministic names:

* ``sub_c{cid}_k{k}_d{d}``            stride 1 (submanifold; output coords = input coords)
* ``subT_c{cid}_k{k}_d{d}``           stride 1, transposed (mirrored offsets)
* ``down_c{cid}_k{k}_s{s}_d{d}``      strided; creates a new, coarser coordinate set (``_floor`` appended for
  ``sites="floor"`` with an odd kernel)
* ``up_c{cid}_k{k}_s{s}_d{d}``        transposed strided; returns to the finer set ``cid`` came from
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .cache import KernelMapCache
from .functional import STRATEGIES, gather_conv, get_strategy, scatter_conv
from .kmap import (
    KernelMap,
    downsample_map,
    floor_downsample_map,
    neighbour_table,
    offset_index,
    submanifold_map,
    transposed_map,
)
from .tensor import SparseTensor

__all__ = ["Conv3d", "conv_map"]


def conv_map(x: SparseTensor, kernel_size: int, stride: int = 1, dilation: int = 1,
             transposed: bool = False, build: bool = True,
             sites: str = "reachable") -> tuple[str, KernelMap | None, Tensor, int]:
    """Find (or build) the kernel map of a conv applied to ``x``.

    ``sites`` (strided, odd kernel): ``"reachable"`` = torchsparse 2 output sites (every multiple of the output
    stride reachable from an input), ``"floor"`` = torchsparse 1.x (``floor(c / s) * s``, the set never grows).

    Returns ``(name, kmap, out_coords, out_stride)``; ``kmap`` is None when ``build`` is False and the map is not
    cached (export replay, where only neighbour tables are available).
    """
    cache = x.cache
    cid = cache.coords_id(x.coords, x.stride)
    k, s, d = int(kernel_size), int(stride), int(dilation)
    if s == 1 and k == 1:  # 1x1x1: a plain matmul on the rows, no map needed
        return f"sub_c{cid}_k1_d{d}", None, x.coords, x.stride
    if s == 1:
        base = f"sub_c{cid}_k{k}_d{d}"
        name = ("subT" + base[3:]) if transposed else base
        kmap = None
        if build or cache.has_map(base):
            kmap = cache.get_map(base, lambda: submanifold_map(cache, cid, k, d))
            if transposed:
                kmap = kmap.transposed()
        return name, kmap, x.coords, x.stride
    if sites not in ("reachable", "floor"):
        raise ValueError(f"sites must be 'reachable' or 'floor', got {sites!r}")
    floor = sites == "floor" and k % 2 == 1
    suffix = "_floor" if floor else ""
    if not transposed:
        name = f"down_c{cid}_k{k}_s{s}_d{d}{suffix}"
        out_cid = cache.output(name)
        kmap = None
        builder = floor_downsample_map if floor else downsample_map
        if build or cache.has_map(name):
            kmap = cache.get_map(name, lambda: builder(cache, cid, k, s, d))
        # floor sites (kernel == stride, or sites="floor") are one coordinate set per (input, stride)
        shared = floor or k == s
        if out_cid is None and shared:
            out_cid = cache.floor_child(cid, s)
            if out_cid is not None:
                if kmap is not None and not torch.equal(kmap.out_coords, cache.coords(out_cid)):
                    raise RuntimeError(f"strided conv {name}: floor sites differ from the shared stride-{s} set")
                cache.set_output(name, out_cid)
        if out_cid is None:
            coords = kmap.out_coords if kmap is not None else cache.next_preloaded_coords()
            if coords is None:
                raise KeyError(f"strided conv {name}: no kernel map and no preloaded output coordinates")
            out_cid = cache.coords_id(coords, x.stride * s)
            cache.set_output(name, out_cid)
            cache.set_parent(out_cid, cid)
            if shared:
                cache.set_floor_child(cid, s, out_cid)
        return name, kmap, cache.coords(out_cid), x.stride * s
    # transposed, strided: back to the finer coordinates this set was produced from
    fine = cache.parent(cid)
    if fine is None:
        raise ValueError(f"transposed conv (stride {s}) on a stride-{x.stride} tensor whose finer coordinates are "
                         "unknown: it must come from a strided conv earlier in the same forward pass (same cache)")
    if cache.stride(fine) * s != x.stride:
        raise ValueError(f"transposed conv stride {s}: input stride {x.stride} came from stride "
                         f"{cache.stride(fine)}, which is not input stride / {s}")
    name = f"up_c{cid}_k{k}_s{s}_d{d}"
    kmap = None
    if build or cache.has_map(name):
        down_name = f"down_c{fine}_k{k}_s{s}_d{d}{suffix}"

        def _build() -> KernelMap:
            if cache.has_map(down_name) and cache.output(down_name) == cid:
                return cache.get_map(down_name, lambda: None).transposed()
            if k == s and cache.floor_child(fine, s) == cid:
                # the coarse set is the floor set of the finer one (whichever strided conv made it): a 2x2x2 map
                # follows from each fine site's parent cell, no search (see kmap.floor_cells)
                return cache.get_map(down_name, lambda: downsample_map(cache, fine, k, s, d)).transposed()
            return transposed_map(cache, cid, fine, k, s, d)

        kmap = cache.get_map(name, _build)
    return name, kmap, cache.coords(fine), cache.stride(fine)


class Conv3d(nn.Module):
    """Sparse 3D convolution (torchsparse semantics and weight layout).

    ``stride=1``: submanifold (output sites = input sites). ``stride>1``: downsampling (kernel 2 = stride, or odd
    kernel). ``transposed=True`` with ``stride>1``: upsampling back to the finer sites the input came from.
    ``strategy``: ``"scatter"``/``"gather"`` for this module, or None to follow the global setting.
    ``sites`` (strided convs with an odd kernel): ``"reachable"`` (default, torchsparse 2 / DESIGN.md rule: every
    multiple of the output stride reachable from an input, not below the minimum) or ``"floor"`` (torchsparse
    1.x: ``floor(c / s) * s``, so e.g. a 5x5x5 stride-2 conv does not grow the coarse set); a transposed conv
    should use the same value as the strided conv it undoes.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, bias: bool = False, transposed: bool = False, depthwise: bool = False,
                 strategy: str | None = None, sites: str = "reachable") -> None:
        super().__init__()
        k = int(kernel_size)
        if k < 1:
            raise ValueError(f"Conv3d: kernel_size must be >= 1, got {kernel_size}")
        if stride < 1 or dilation < 1:
            raise ValueError(f"Conv3d: stride and dilation must be >= 1, got {stride}, {dilation}")
        if k % 2 == 0 and k != stride:
            raise ValueError(f"Conv3d: even kernel_size {k} is only supported with stride == kernel_size")
        if depthwise and in_channels != out_channels:
            raise ValueError(f"Conv3d: depthwise needs in_channels == out_channels, got {in_channels}, {out_channels}")
        if sites not in ("reachable", "floor"):
            raise ValueError(f"Conv3d: sites must be 'reachable' or 'floor', got {sites!r}")
        if strategy is not None and strategy not in STRATEGIES:
            raise ValueError(f"Conv3d: unknown strategy {strategy!r}; choose one of {STRATEGIES}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = k
        self.stride = int(stride)
        self.dilation = int(dilation)
        self.transposed = bool(transposed)
        self.depthwise = bool(depthwise)
        self.strategy = strategy
        self.sites = sites
        kv = k ** 3
        shape = (kv, self.in_channels) if depthwise else (kv, self.in_channels, self.out_channels)
        self.kernel = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(fan), 1/sqrt(fan)) with fan = channels * K, as torchsparse does."""
        fan = (1 if self.depthwise else (self.out_channels if self.transposed else self.in_channels))
        std = 1.0 / math.sqrt(fan * self.kernel.shape[0])
        nn.init.uniform_(self.kernel, -std, std)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -std, std)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != 1:
            s += f", stride={self.stride}"
        if self.dilation != 1:
            s += f", dilation={self.dilation}"
        for flag in ("transposed", "depthwise"):
            if getattr(self, flag):
                s += f", {flag}=True"
        if self.bias is None:
            s += ", bias=False"
        if self.sites != "reachable" and self.stride > 1:
            s += f", sites={self.sites!r}"
        return s

    def forward(self, x: SparseTensor) -> SparseTensor:
        if x.feats.shape[1] != self.in_channels:
            raise ValueError(f"Conv3d({self.extra_repr()}): input has {x.feats.shape[1]} channels")
        mode = self.strategy or get_strategy()
        cache: KernelMapCache = x.cache
        replay = cache.preloaded
        if replay and mode != "gather":
            raise RuntimeError("Conv3d: a preloaded (export) cache only serves the 'gather' strategy")
        name, kmap, out_coords, out_stride = conv_map(x, self.kernel_size, self.stride, self.dilation,
                                                      self.transposed, build=not replay, sites=self.sites)
        if self.kernel_size == 1 and self.stride == 1:
            out = x.feats * self.kernel[0] if self.depthwise else torch.matmul(x.feats, self.kernel[0])
            if self.bias is not None:
                out = out + self.bias
        elif mode == "scatter":
            out = scatter_conv(x.feats, kmap, self.kernel, self.bias)
        else:
            table = cache.get_table(name, lambda: neighbour_table(kmap))
            identity = offset_index(self.kernel_size, 0, 0, 0) if self.stride == 1 else None
            out = gather_conv(x.feats, table, self.kernel, self.bias, identity)
        return SparseTensor(out, out_coords, out_stride, cache)
