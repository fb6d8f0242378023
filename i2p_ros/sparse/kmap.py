"""Kernel maps: which input row feeds which output row through which kernel offset.

Conventions (DESIGN.md §2, torchsparse-compatible):

* odd k: offsets ``(dx, dy, dz)`` in ``-r..r`` (``r = k // 2``), index ``i = (dz+r)*k*k + (dy+r)*k + (dx+r)``
  (x fastest); even k (only kernel == stride): offsets ``0..k-1``, index ``i = dx*k*k + dy*k + dz`` (x slowest).
* ``out[p] = sum_i in[p + s_in * dilation * offset_i] @ W[i]`` with ``s_in`` the input tensor stride.
* strided, kernel == stride: output sites are ``floor(c / s_out) * s_out`` of the input sites;
  otherwise every multiple of ``s_out`` reachable as ``c - s_in*offset``, not below the minimum input
  coordinate (per axis, over the whole batch). Optional torchsparse-1.x rule (:func:`floor_downsample_map`,
  ``Conv3d(sites="floor")``): ``floor(c / s_out) * s_out`` for every kernel size.
* transposed: the exact transpose of the down map from the finer coordinates (so it returns to them).

How: coordinates of one set are packed into int64 keys ``(b, x, y, z)`` (z fastest, axes padded so that
neighbour queries never carry into the next axis), sorted once (skipped when already sorted, as voxelize's
output is), and neighbours found with ``searchsorted``. For dilation 1 one search per ``(dx, dy)`` column
finds all ``dz`` neighbours (they are consecutive keys, hence consecutive positions), and many columns are
searched per op (a 5³ map takes a few dozen ops, not a few per offset); submanifold maps are
symmetric (offset ``-o`` is offset ``o`` with input and output swapped), so only half the offsets are
searched, and the centre offset is the identity and is not stored at all. No Python loops over points.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .cache import KernelMapCache
from .keys import sorted_unique
from .plan import ReducePlan, block_pairs_for, build_plan

# A map's plan serves convs whose preferred block size is up to this factor away (so the workspace stays
# within this factor of plan.WORKSPACE_ELEMENTS).
PLAN_REUSE_FACTOR = 4

__all__ = ["KernelMap", "kernel_offsets", "offset_index", "submanifold_map", "downsample_map", "floor_downsample_map",
           "floor_cells", "transposed_map", "neighbour_table", "SortedCoords"]


# ---------------------------------------------------------------------------------------------- offsets
def kernel_offsets(kernel_size: int) -> list[tuple[int, int, int]]:
    """Offsets ``(dx, dy, dz)`` in weight-index order (odd k: x fastest, centred; even k: x slowest, 0..k-1)."""
    k = int(kernel_size)
    if k < 1:
        raise ValueError(f"kernel_size must be >= 1, got {k}")
    if k % 2 == 1:
        r = k // 2
        return [(dx, dy, dz) for dz in range(-r, r + 1) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    return [(dx, dy, dz) for dx in range(k) for dy in range(k) for dz in range(k)]


def offset_index(kernel_size: int, dx: int, dy: int, dz: int) -> int:
    """Weight index of offset ``(dx, dy, dz)`` (the formulas of DESIGN.md §2)."""
    k = int(kernel_size)
    if k % 2 == 1:
        r = k // 2
        return (dz + r) * k * k + (dy + r) * k + (dx + r)
    return dx * k * k + dy * k + dz


# ---------------------------------------------------------------------------------------------- map type
@dataclass
class KernelMap:
    """Per-offset (input row, output row) pairs; rows index the input / output tensors' features.

    ``in_idx[i]`` / ``out_idx[i]`` are int64 vectors of equal length (None for the identity offset, whose
    pairs are ``(j, j)`` for every row; then ``n_in == n_out``). Within one offset every output row appears
    at most once, so accumulation per offset never collides.
    """

    in_idx: list[Tensor | None]
    out_idx: list[Tensor | None]
    n_in: int
    n_out: int
    kernel_size: int
    identity: int | None = None  # offset index whose map is the identity (submanifold centre)
    out_coords: Tensor | None = None  # coords of the output (strided maps create new ones)
    symmetric: bool = False  # offset K-1-i holds the pairs of offset i swapped (submanifold maps)
    # every output (input) row is in exactly one pair over all offsets (kernel == stride maps: each fine site
    # has one parent cell). A conv on a unique_out map writes each output once, with no reduction.
    unique_out: bool = False
    unique_in: bool = False
    _transposed: KernelMap | None = field(default=None, repr=False)
    # the map this one is the transpose of, held weakly: a strong back-reference would make every map and its
    # transpose a reference cycle, freed only by the cyclic GC (late and rarely for long-lived generations),
    # so each frame's maps and plans would pile up in memory between collections
    _transposed_of: weakref.ref | None = field(default=None, repr=False)
    _plans: dict[int, ReducePlan] = field(default_factory=dict, repr=False)

    @property
    def kernel_volume(self) -> int:
        return len(self.in_idx)

    @property
    def num_pairs(self) -> int:
        n = sum(int(t.numel()) for t in self.in_idx if t is not None)
        return n + (self.n_in if self.identity is not None else 0)

    def transposed(self) -> KernelMap:
        """The same pairs with input and output swapped (for transposed convs and input gradients)."""
        partner = self._partner()
        if partner is None:
            partner = KernelMap(list(self.out_idx), list(self.in_idx), self.n_out, self.n_in, self.kernel_size,
                                self.identity, None, self.symmetric, unique_out=self.unique_in,
                                unique_in=self.unique_out)
            partner._transposed_of = weakref.ref(self)
            self._transposed = partner
        return partner

    def _partner(self) -> KernelMap | None:
        """The transpose already made from this map, or the map this one is the transpose of."""
        if self._transposed is not None:
            return self._transposed
        return self._transposed_of() if self._transposed_of is not None else None

    def plan(self, block_pairs: int | None = None) -> ReducePlan:
        """The scatter strategy's execution plan for a block size.

        Plans are built once per map and shared by every conv on it whose block size is within
        ``PLAN_REUSE_FACTOR`` of the plan's (block size only tunes the workspace; a plan costs as much as the
        map), and a symmetric map's transpose relabels its plans instead of building new ones.
        """
        bp = block_pairs_for(64) if block_pairs is None else int(block_pairs)
        plan = self._find_plan(bp)
        if plan is None:
            other = self._partner()
            src = other._find_plan(bp) if self.symmetric and other is not None else None
            if src is not None:
                plan = src.relabeled(self.kernel_volume)
            else:
                plan = build_plan(self.in_idx, self.out_idx, self.n_out, self.identity, bp)
            self._plans[plan.block_pairs] = plan
        return plan

    def _find_plan(self, bp: int) -> ReducePlan | None:
        plan = self._plans.get(bp)
        if plan is not None:
            return plan
        near = [p for b, p in self._plans.items() if b * PLAN_REUSE_FACTOR >= bp and b <= bp * PLAN_REUSE_FACTOR]
        return min(near, key=lambda p: abs(p.block_pairs.bit_length() - bp.bit_length()), default=None)


# ---------------------------------------------------------------------------------------------- key index
class SortedCoords:
    """Sorted int64 keys of one coordinate set, in units of its stride, with padded axes."""

    def __init__(self, coords: Tensor, stride: int, pad: int) -> None:
        c = coords.to(torch.int64)
        n = c.shape[0]
        if n:
            if stride > 1:
                c = torch.cat([c[:, :1], torch.div(c[:, 1:], stride, rounding_mode="floor")], dim=1)
            lo = c.min(dim=0).values
            hi = c.max(dim=0).values
            lo_l, hi_l = lo.tolist(), hi.tolist()
        else:
            lo_l, hi_l = [0, 0, 0, 0], [0, 0, 0, 0]
        self.stride = int(stride)
        self.pad = int(pad)
        self.lo = [lo_l[0]] + [v - pad for v in lo_l[1:]]
        self.ext = [hi_l[0] - lo_l[0] + 1] + [h - lo + 1 + 2 * pad for h, lo in zip(hi_l[1:], lo_l[1:])]
        ex, ey, ez = self.ext[1], self.ext[2], self.ext[3]
        if self.ext[0] * ex * ey * ez >= 2**62:
            raise ValueError(f"kernel map: coordinate extents {self.ext} too large to pack into int64 keys")
        self.mult = (ex * ey * ez, ey * ez, ez, 1)  # multipliers of (b, x, y, z)
        self.n = n
        self._keys_ext: Tensor | None = None
        if n:
            key = (c[:, 0] - self.lo[0]) * self.mult[0]
            for a in (1, 2, 3):
                key = key + (c[:, a] - self.lo[a]) * self.mult[a]
        else:
            key = torch.zeros(0, dtype=torch.int64, device=coords.device)
        if n > 1 and bool((key[1:] > key[:-1]).all()):
            self.keys = key
            self.perm: Tensor | None = None  # already sorted: position == row
        else:
            self.keys, perm = torch.sort(key)
            self.perm = perm
            if n > 1 and bool((self.keys[1:] == self.keys[:-1]).any()):
                raise ValueError("kernel map: coords contain duplicate (batch, x, y, z) rows")

    @property
    def keys_ext(self) -> Tensor:
        """``keys`` plus a sentinel (int64 max) at position ``n``: any ``searchsorted`` result indexes it without
        clamping, and it never equals a query."""
        if self._keys_ext is None:
            sentinel = torch.full((1,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=self.keys.device)
            self._keys_ext = torch.cat([self.keys, sentinel])
        return self._keys_ext

    def rows(self, positions: Tensor) -> Tensor:
        """Original row indices of sorted positions."""
        return positions if self.perm is None else self.perm.index_select(0, positions)

    def delta(self, dx: int, dy: int, dz: int) -> int:
        """Key difference of an offset given in stride units."""
        return dx * self.mult[1] + dy * self.mult[2] + dz * self.mult[3]

    def lookup(self, query: Tensor) -> tuple[Tensor, Tensor]:
        """(found mask, sorted position) of arbitrary query keys (the position only means something where found)."""
        if self.n == 0:
            z = torch.zeros_like(query, dtype=torch.bool)
            return z, torch.zeros_like(query)
        pos = torch.searchsorted(self.keys, query)
        return self.keys_ext.index_select(0, pos.reshape(-1)).view(pos.shape) == query, pos


def sorted_coords(cache: KernelMapCache, cid: int, reach: int) -> SortedCoords:
    """The cached key index of coordinate set ``cid``, padded for queries up to ``reach`` stride units."""
    sc = cache.sorted_keys.get(cid)
    if sc is None or sc.pad < reach:
        sc = SortedCoords(cache.coords(cid), cache.stride(cid), max(reach, 4))
        cache.sorted_keys[cid] = sc
    return sc


# ---------------------------------------------------------------------------------------------- builders
# Elements (queries x kernel depth) one vectorised column search handles at once: bounds the transient
# int64 position tensors of map building to ~64 MB (positions + their stacked copy), however large the input.
SEARCH_ELEMENTS = 2 ** 22


def _column_walk(sc: SortedCoords, base: Tensor, columns: list[tuple[int, int]], k: int,
                 d: int) -> list[tuple[tuple[int, int, int], Tensor, Tensor]]:
    """Neighbours of every query key ``base`` at offsets ``(dx, dy, dz)`` for the given ``(dx, dy)`` columns and
    ``dz`` in ``-r..r`` (dilation ``d``), searching many columns per op.

    For dilation 1 the ``dz`` neighbours of one column are consecutive keys, hence consecutive sorted
    positions: one ``searchsorted`` per column finds the first, and ``k`` compare-and-step passes find the rest.
    The hits of a whole chunk of columns are then turned into pairs with one ``nonzero``, so the op count does not
    grow with the number of columns (25 for a 5³ strided conv). Returns ``((dx, dy, dz), query index, sorted
    position of the neighbour)`` for every offset, queries increasing within an offset.
    """
    r = k // 2
    n = base.numel()
    out: list[tuple[tuple[int, int, int], Tensor, Tensor]] = []
    if n == 0 or not columns:
        return out
    keys, keys_ext = sc.keys, sc.keys_ext
    per = max(1, SEARCH_ELEMENTS // max(n * k, 1))
    for c0 in range(0, len(columns), per):
        cols = columns[c0:c0 + per]
        deltas = torch.tensor([sc.delta(dx * d, dy * d, 0) for dx, dy in cols], dtype=torch.int64,
                              device=base.device)
        q = base.unsqueeze(0) + deltas.unsqueeze(1)  # [C, n] column centres
        hit_t = torch.empty((len(cols), k, n), dtype=torch.bool, device=base.device)
        pos_t = torch.empty((len(cols), k, n), dtype=torch.int64, device=base.device)
        if d == 1:
            q0 = q - r * sc.mult[3]
            cur = torch.searchsorted(keys, q0)  # in 0..n; keys_ext[n] is a sentinel that never matches
            for j in range(k):
                torch.eq(keys_ext.index_select(0, cur.view(-1)).view(cur.shape), q0 + j if j else q0,
                         out=hit_t[:, j])
                pos_t[:, j] = cur
                if j + 1 < k:
                    cur = cur + hit_t[:, j]
        else:
            for j in range(k):
                hit, pos = sc.lookup((q + (j - r) * d * sc.mult[3]).reshape(-1))
                hit_t[:, j] = hit.view(q.shape)
                pos_t[:, j] = pos.view(q.shape)
        idx = torch.nonzero(hit_t.view(-1)).squeeze(1)  # (column, dz, query)-major: queries increase per offset
        counts = hit_t.sum(2).view(-1).tolist()
        found = pos_t.view(-1).index_select(0, idx)
        qidx = idx.remainder_(n)
        groups = zip(torch.split(qidx, counts), torch.split(found, counts))
        for (dx, dy) in cols:
            for j in range(k):
                qa, pa = next(groups)
                out.append(((dx, dy, j - r), qa, pa))
    return out


def _cached_larger_submanifold(cache: KernelMapCache, cid: int, k: int, d: int) -> KernelMap | None:
    """An already built submanifold map of a larger odd kernel (same set, same dilation), if any."""
    for kk in range(k + 2, 9, 2):
        name = f"sub_c{cid}_k{kk}_d{d}"
        if cache.has_map(name):
            return cache.get_map(name, lambda: None)
    return None


def submanifold_map(cache: KernelMapCache, cid: int, kernel_size: int, dilation: int = 1) -> KernelMap:
    """Map of a stride-1 conv of odd ``kernel_size`` on coordinate set ``cid`` (output coords = input coords)."""
    k = int(kernel_size)
    if k % 2 == 0:
        raise ValueError(f"submanifold conv needs an odd kernel size, got {k} (even kernels only as kernel == stride)")
    d = int(dilation)
    r = k // 2
    larger = _cached_larger_submanifold(cache, cid, k, d)
    if larger is not None:  # a 3³ neighbourhood is the centre of a 5³ one: take its offsets, no search
        inner = [offset_index(larger.kernel_size, *o) for o in kernel_offsets(k)]
        return KernelMap([larger.in_idx[i] for i in inner], [larger.out_idx[i] for i in inner], larger.n_in,
                         larger.n_out, k, identity=offset_index(k, 0, 0, 0), out_coords=larger.out_coords,
                         symmetric=True)
    sc = sorted_coords(cache, cid, r * d)
    n = sc.n
    kv = k ** 3
    centre = offset_index(k, 0, 0, 0)
    in_idx: list[Tensor | None] = [None] * kv
    out_idx: list[Tensor | None] = [None] * kv
    keys = sc.keys
    dev = keys.device

    def put(o: tuple[int, int, int], a: Tensor, b: Tensor) -> None:
        # rows a whose neighbour a + o exists, and that neighbour's rows b
        i = offset_index(k, *o)
        j = offset_index(k, -o[0], -o[1], -o[2])
        in_idx[i], out_idx[i] = b, a  # out[p] += in[p + o] W[i]
        in_idx[j], out_idx[j] = a, b  # symmetric: out[p + o] += in[p] W[j]

    if r > 0 and n > 0:
        # half of the offsets: (dx, dy) columns with dx > 0 or (dx == 0 and dy > 0), plus (0, 0, dz > 0)
        columns = [(dx, dy) for dx in range(0, r + 1) for dy in range(-r, r + 1) if dx > 0 or dy > 0]
        for o, q, p in _column_walk(sc, keys, columns, k, d):
            put(o, sc.rows(q), sc.rows(p))
        if d == 1:
            # (0, 0, dz>0): the neighbour key + j sits right after row i (keys unique and sorted)
            keys_ext = sc.keys_ext
            cur = torch.arange(1, n + 1, device=dev)
            for j in range(1, r + 1):
                hit = keys_ext.index_select(0, cur) == keys + j
                sel = torch.nonzero(hit).squeeze(1)
                put((0, 0, j), sc.rows(sel), sc.rows(cur.index_select(0, sel)))
                if j < r:
                    cur = cur + hit
        else:
            for j in range(1, r + 1):
                hit, pos = sc.lookup(keys + sc.delta(0, 0, j * d))
                sel = torch.nonzero(hit).squeeze(1)
                put((0, 0, j), sc.rows(sel), sc.rows(pos.index_select(0, sel)))
    elif r > 0:
        empty = torch.zeros(0, dtype=torch.int64, device=dev)
        for i in range(kv):
            if i != centre:
                in_idx[i], out_idx[i] = empty, empty
    return KernelMap(in_idx, out_idx, n, n, k, identity=centre, out_coords=cache.coords(cid), symmetric=True)


def _out_sites_kernel_eq_stride(u: Tensor, s_ratio: int) -> tuple[Tensor, Tensor]:
    """Kernel == stride: each input u (stride units) -> its cell floor(u / S) and offset index u - S*cell."""
    cell = torch.div(u, s_ratio, rounding_mode="floor")
    o = u - cell * s_ratio
    oi = (o[:, 0] * s_ratio + o[:, 1]) * s_ratio + o[:, 2]
    return cell, oi


def downsample_map(cache: KernelMapCache, cid: int, kernel_size: int, stride: int,
                   dilation: int = 1) -> KernelMap:
    """Map of a strided conv on coordinate set ``cid``; creates (in ``out_coords``) the coarser coordinates."""
    k, s_ratio, d = int(kernel_size), int(stride), int(dilation)
    if s_ratio < 2:
        raise ValueError(f"downsample_map: stride must be >= 2, got {s_ratio}")
    if k % 2 == 0 and k != s_ratio:
        raise ValueError(f"strided conv with even kernel {k} needs kernel == stride (got stride {s_ratio})")
    if k % 2 == 0 and d != 1:
        raise ValueError("strided conv with kernel == stride does not support dilation")
    n = cache.coords(cid).shape[0]
    kv = k ** 3
    if k % 2 == 0:
        # kernel == stride: every input has exactly one output (its floor cell), through the offset given by its
        # position inside that cell; the cells are the shared floor set of (cid, stride)
        out_coords, inv, oi = floor_cells(cache, cid, s_ratio)
        # group the pairs by offset; a stable sort keeps input rows (and so, for sorted coords, output rows)
        # increasing within each offset
        order = torch.sort(oi, stable=True).indices
        counts = torch.bincount(oi, minlength=kv).tolist()
        in_idx = list(torch.split(order, counts))
        out_idx = list(torch.split(inv.index_select(0, order), counts))
        return KernelMap(in_idx, out_idx, n, int(out_coords.shape[0]), k, identity=None, out_coords=out_coords,
                         unique_in=True)

    coords = cache.coords(cid)
    s_in = cache.stride(cid)
    dev = coords.device
    c64 = coords.to(torch.int64)
    b = c64[:, 0]
    u = torch.div(c64[:, 1:], s_in, rounding_mode="floor")  # stride units of the input
    r = k // 2
    umin = u.min(dim=0).values if n else torch.zeros(3, dtype=torch.int64, device=dev)
    # per axis and offset value: does u - o*d land on a multiple of S, not below the minimum?
    vals = [o * d for o in range(-r, r + 1)]
    ok = [[torch.remainder(u[:, a] - v, s_ratio) == 0 for v in vals] for a in range(3)]
    for a in range(3):
        for t, v in enumerate(vals):
            ok[a][t] &= (u[:, a] - v) >= umin[a]
    bs, cells, counts, pts = [], [], [], []
    for dx, dy, dz in kernel_offsets(k):
        m = ok[0][dx + r] & ok[1][dy + r] & ok[2][dz + r]
        sel = torch.nonzero(m).squeeze(1)
        counts.append(int(sel.numel()))
        shift = torch.tensor([dx * d, dy * d, dz * d], dtype=torch.int64, device=dev)
        cells.append(torch.div(u.index_select(0, sel) - shift, s_ratio, rounding_mode="floor"))
        bs.append(b.index_select(0, sel))
        pts.append(sel)
    out_coords, inv = _unique_cells(torch.cat(bs), torch.cat(cells), s_in * s_ratio)
    in_idx = list(torch.split(torch.cat(pts), counts))
    out_idx = list(torch.split(inv, counts))
    return KernelMap(in_idx, out_idx, n, int(out_coords.shape[0]), k, identity=None, out_coords=out_coords)


def floor_cells(cache: KernelMapCache, cid: int, ratio: int) -> tuple[Tensor, Tensor, Tensor]:
    """The floor-site coarse set of ``cid`` at stride ratio ``ratio``, computed once per forward pass.

    Returns ``(coarse coords, coarse row of every input row, offset index of every input row inside its
    cell)``, the offset index in the even-kernel order ``dx*S*S + dy*S + dz``. Every floor-site strided conv of
    one input (3³/5³ with ``sites="floor"``, 2³ kernel == stride) shares it, and since every fine site has
    exactly one parent cell, a 2×2×2 stride-2 map (and its transpose, the decoder's up-conv) is read off
    ``(row, parent, offset)`` with no neighbour search.
    """
    key = (int(cid), int(ratio))
    hit = cache.floor_cells.get(key)
    if hit is None:
        coords = cache.coords(cid)
        c64 = coords.to(torch.int64)
        u = torch.div(c64[:, 1:], cache.stride(cid), rounding_mode="floor")
        cell, oi = _out_sites_kernel_eq_stride(u, int(ratio))
        out_coords, inv = _unique_cells(c64[:, 0], cell, cache.stride(cid) * int(ratio))
        hit = (out_coords, inv, oi)
        cache.floor_cells[key] = hit
    return hit


def _unique_cells(b: Tensor, cells: Tensor, s_out: int) -> tuple[Tensor, Tensor]:
    """Unique (b, cell) rows sorted by (b, x, y, z) -> (int32 coords ``cell * s_out``, row of each input)."""
    dev = cells.device
    if b.numel() == 0:
        return torch.zeros((0, 4), dtype=torch.int32, device=dev), torch.zeros(0, dtype=torch.int64, device=dev)
    lo_t, hi_t = torch.aminmax(cells, dim=0)
    bl, bh = torch.aminmax(b)
    lo, hi, (bl, bh) = lo_t.tolist(), hi_t.tolist(), (int(bl), int(bh))  # one sync for all extents
    ext = [h - lo_ + 1 for lo_, h in zip(lo, hi)]
    key = (b - bl) * ext[0]
    for a in range(3):
        if a:
            key *= ext[a]
        key += cells[:, a] - lo[a]
    if (bh - bl + 1) * ext[0] * ext[1] * ext[2] < 2**31:  # 4-byte keys sort about twice as fast
        key = key.to(torch.int32)
    ukey, inv, _, _ = sorted_unique(key)
    z = ukey % ext[2]
    rest = ukey // ext[2]
    y = rest % ext[1]
    rest = rest // ext[1]
    x = rest % ext[0]
    bb = rest // ext[0] + bl
    out = torch.stack([bb, (x + lo[0]) * s_out, (y + lo[1]) * s_out, (z + lo[2]) * s_out], 1)
    return out.to(torch.int32), inv


def floor_downsample_map(cache: KernelMapCache, cid: int, kernel_size: int, stride: int,
                         dilation: int = 1) -> KernelMap:
    """Strided conv of odd kernel with torchsparse-1.x output sites: ``floor(c / s_out) * s_out`` of the inputs.

    Unlike the torchsparse-2 rule (every reachable multiple), the coarse set never grows with the kernel, so a
    5x5x5 stride-2 conv halves the resolution like a 2x2x2 one. Pairs: ``out[q] += in[q + s_in*d*o] @ W[o]``.
    """
    k, s_ratio, d = int(kernel_size), int(stride), int(dilation)
    if k % 2 == 0:
        return downsample_map(cache, cid, k, s_ratio, d)
    coords = cache.coords(cid)
    s_in = cache.stride(cid)
    out_coords = floor_cells(cache, cid, s_ratio)[0]
    r = k // 2
    sc = sorted_coords(cache, cid, r * d + s_ratio)
    q = out_coords.to(torch.int64)
    qu = torch.div(q[:, 1:], s_in, rounding_mode="floor")
    base = (q[:, 0] - sc.lo[0]) * sc.mult[0]
    for a in range(3):
        base = base + (qu[:, a] - sc.lo[a + 1]) * sc.mult[a + 1]
    kv = k ** 3
    in_idx: list[Tensor | None] = [None] * kv
    out_idx: list[Tensor | None] = [None] * kv
    columns = [(dx, dy) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    for o, q, p in _column_walk(sc, base, columns, k, d):
        t = offset_index(k, *o)
        in_idx[t], out_idx[t] = sc.rows(p), q
    return KernelMap(in_idx, out_idx, int(coords.shape[0]), int(out_coords.shape[0]), k, identity=None,
                     out_coords=out_coords)


def transposed_map(cache: KernelMapCache, coarse_cid: int, fine_cid: int, kernel_size: int, stride: int,
                   dilation: int = 1) -> KernelMap:
    """Map of a transposed conv from ``coarse_cid`` back to ``fine_cid``, searched directly.

    Used when the down map that produced the coarse set is not in the cache (e.g. it used another kernel).
    Pairs: fine site ``p`` receives coarse site ``q = p - s_fine*d*o`` through offset ``o``.
    """
    k, s_ratio, d = int(kernel_size), int(stride), int(dilation)
    fine = cache.coords(fine_cid)
    s_f = cache.stride(fine_cid)
    if cache.stride(coarse_cid) != s_f * s_ratio:
        raise ValueError(f"transposed conv: coarse stride {cache.stride(coarse_cid)} != "
                         f"fine stride {s_f} * conv stride {s_ratio}")
    reach = max(k, 2) * d
    sc = sorted_coords(cache, coarse_cid, reach)
    c64 = fine.to(torch.int64)
    u = torch.div(c64[:, 1:], s_f, rounding_mode="floor")
    offsets = kernel_offsets(k)
    in_idx: list[Tensor | None] = []
    out_idx: list[Tensor | None] = []
    for dx, dy, dz in offsets:
        shift = torch.tensor([dx * d, dy * d, dz * d], dtype=torch.int64, device=fine.device)
        q = u - shift
        ok = (torch.remainder(q, s_ratio) == 0).all(dim=1)
        sel = torch.nonzero(ok).squeeze(1)
        qc = torch.div(q.index_select(0, sel), s_ratio, rounding_mode="floor")
        key = (c64[:, 0].index_select(0, sel) - sc.lo[0]) * sc.mult[0]
        inside = torch.ones_like(sel, dtype=torch.bool)
        for a in range(3):
            va = qc[:, a] - sc.lo[a + 1]
            inside &= (va >= 0) & (va < sc.ext[a + 1])
            key = key + va * sc.mult[a + 1]
        hit, pos = sc.lookup(key)
        hit &= inside
        m = torch.nonzero(hit).squeeze(1)
        in_idx.append(sc.rows(pos.index_select(0, m)))
        out_idx.append(sel.index_select(0, m))
    return KernelMap(in_idx, out_idx, sc.n, int(fine.shape[0]), k, identity=None, out_coords=fine)


# ---------------------------------------------------------------------------------------------- tables
def neighbour_table(kmap: KernelMap) -> Tensor:
    """Output-stationary table ``[n_out, K]``: input row feeding each output through each offset, or
    ``n_in`` (the index of an appended zero row) where there is none."""
    dev = next((t.device for t in kmap.in_idx if t is not None), None)
    if dev is None:
        dev = kmap.out_coords.device if kmap.out_coords is not None else torch.device("cpu")
    table = torch.full((kmap.n_out, kmap.kernel_volume), kmap.n_in, dtype=torch.int64, device=dev)
    for i, (a, b) in enumerate(zip(kmap.in_idx, kmap.out_idx)):
        if i == kmap.identity:
            table[:, i] = torch.arange(kmap.n_out, device=dev)
        elif a is not None and a.numel():
            table[:, i].index_put_((b,), a)
    return table
