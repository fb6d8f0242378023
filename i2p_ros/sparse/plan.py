"""Execution plan of the scatter strategy: output row blocks, per-block gather lists and reduce lists.

Why: on CPU, ``index_add_`` (and every other scatter-add in torch) costs more than the ``mm`` it accumulates.
So the per-offset products of one block of output rows are written side by side into a small workspace
``Y`` (offset-major within the block, so each offset is one ``mm`` on a slice), and then summed per output row
with one ``embedding_bag(mode="sum")`` — a fused, parallel gather-sum. Blocks keep the workspace small
(cache-resident, no large allocations), so memory stays O(N*C).

Layout of a plan with blocks ``k`` over output rows ``[row_bounds[k], row_bounds[k+1])``:

* ``gather_idx[y]`` / ``out_rows[y]`` / ``offset_idx[y]``: input row / output row / kernel offset of the pair
  stored at workspace position ``y`` (blocks are contiguous: block k owns ``y`` in
  ``[y_bounds[k], y_bounds[k+1])``); ``offset_idx`` lets a depthwise conv multiply a whole block at once
  (``x[gather] * W[offset]``) instead of one small op per offset;
* ``slots[k]``: ``(offset index, count)`` runs of block k in workspace order (one ``mm`` per run);
  ``slot_starts[k]``: block-local start of every slot (empty ones included), ``slot_offsets``: their offsets,
  for per-offset sums of a whole block with one ``embedding_bag`` (depthwise weight gradients);
* ``bag_idx`` / ``bag_offsets``: for each output row, the block-local workspace positions of its pairs
  (the ``embedding_bag`` input/offsets of that block).

Building is vectorised over all pairs (a few passes; only the per-row ranks loop over offsets, three small ops
each), no sort; the per-block Python lists are made only when first asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["ReducePlan", "build_plan", "block_pairs_for", "DEFAULT_BLOCK_PAIRS", "WORKSPACE_ELEMENTS"]

# Pairs per block: None = sized from the channels so that a block's workspace (gathered inputs + products,
# ``pairs * (Cin + Cout)`` values) stays near WORKSPACE_ELEMENTS (8 MB of float32: measured best on this CPU);
# an int forces that size everywhere (tests use tiny blocks).
DEFAULT_BLOCK_PAIRS: int | None = None
WORKSPACE_ELEMENTS = 2 ** 21


def block_pairs_for(channels: int, depthwise: bool = False) -> int:
    """Target pairs per block for ``channels = Cin + Cout`` (a power of two in [1024, 65536]).

    Depthwise convs get half the workspace: they make several elementwise passes over it per block (gather,
    weight lookup, multiply, reduce) and no matmul to amortise them, so staying in a smaller cache wins
    (measured on 2 cores: 5³ depthwise, 240 channels, 72k pairs: 2048-pair blocks 1.35x faster than 4096).
    """
    if DEFAULT_BLOCK_PAIRS is not None:
        return int(DEFAULT_BLOCK_PAIRS)
    budget = WORKSPACE_ELEMENTS // 2 if depthwise else WORKSPACE_ELEMENTS
    target = budget // max(int(channels), 1)
    return int(min(max(1 << max(target.bit_length() - 1, 0), 1024 if depthwise else 2048), 65536))


def _exclusive_cumsum(t: Tensor) -> Tensor:
    return torch.cumsum(t, 0) - t


@dataclass
class ReducePlan:
    row_bounds: list[int]
    y_bounds: list[int]
    gather_idx: Tensor
    out_rows: Tensor
    offset_idx: Tensor
    bag_idx: Tensor
    bag_offsets: Tensor
    slot_offsets: Tensor  # [S] kernel offset of each slot (slot order = increasing offset index)
    slot_counts: Tensor  # [num_blocks, S] pairs of each slot in each block
    block_pairs: int = 0  # the target block size it was built for
    _slots: list[list[tuple[int, int]]] | None = field(default=None, repr=False)
    _sizes: list[list[int]] | None = field(default=None, repr=False)
    _slot_starts: Tensor | None = field(default=None, repr=False)

    @property
    def num_blocks(self) -> int:
        return len(self.row_bounds) - 1

    @property
    def slots(self) -> list[list[tuple[int, int]]]:
        """``(offset index, count)`` runs of each block in workspace order (non-empty runs only)."""
        if self._slots is None:
            offs = self.slot_offsets.tolist()
            self._slots = [[(offs[s], c) for s, c in enumerate(row) if c > 0] for row in self.slot_counts.tolist()]
        return self._slots

    @property
    def sizes(self) -> list[list[int]]:
        """Run lengths of each block's slots (for ``torch.split``)."""
        if self._sizes is None:
            self._sizes = [[c for _, c in blk] for blk in self.slots]
        return self._sizes

    @property
    def slot_starts(self) -> Tensor:
        """``[num_blocks, S]`` block-local workspace start of every slot (empty slots included)."""
        if self._slot_starts is None:
            c = self.slot_counts
            self._slot_starts = (torch.cumsum(c, 1) - c).contiguous()
        return self._slot_starts

    @property
    def max_block_pairs(self) -> int:
        return max((self.y_bounds[k + 1] - self.y_bounds[k] for k in range(self.num_blocks)), default=0)

    def relabeled(self, kernel_volume: int) -> ReducePlan:
        """The same pairs with offset ``i`` renamed ``K-1-i`` (transpose of a symmetric submanifold map).

        Slots keep their order (so the workspace layout is shared); only their offset labels change.
        """
        return ReducePlan(self.row_bounds, self.y_bounds, self.gather_idx, self.out_rows,
                          (kernel_volume - 1) - self.offset_idx, self.bag_idx, self.bag_offsets,
                          (kernel_volume - 1) - self.slot_offsets, self.slot_counts, self.block_pairs,
                          _slot_starts=self._slot_starts)


# Above this many offsets the per-offset rank loop costs more in op dispatch than a dense [offsets, rows] count.
_RANK_LOOP_MAX_SLOTS = 32


def _row_ranks(b: Tensor, counts: list[int], n_out: int) -> tuple[Tensor, Tensor]:
    """For pairs grouped by offset (``counts`` per offset, output rows ``b``, unique within an offset): each pair's
    rank among its output row's pairs in offset order, and the number of pairs per output row.

    Few offsets: counted offset by offset (three small ops each; rows are unique within one offset). Many
    (5³ kernels): one dense ``[offsets, rows]`` occupancy, cumulated over offsets. (A sort of the pair list by
    row would do it in one op, but torch's parallel sort stalls badly when the machine is busy.)
    """
    dev = b.device
    if len(counts) <= _RANK_LOOP_MAX_SLOTS:
        fill = torch.zeros(n_out, dtype=torch.int64, device=dev)
        rank = torch.empty_like(b)
        pos = 0
        for c in counts:
            bs = b[pos:pos + c]
            r = fill.index_select(0, bs)
            rank[pos:pos + c] = r
            fill.index_put_((bs,), r + 1)
            pos += c
        return rank, fill
    slot = torch.repeat_interleave(torch.arange(len(counts), device=dev), torch.tensor(counts, device=dev),
                                   output_size=b.numel())
    cell = slot.mul_(n_out).add_(b)
    occ = torch.zeros(len(counts) * n_out, dtype=torch.int32, device=dev)
    occ.index_fill_(0, cell, 1)
    cum = torch.cumsum(occ.view(len(counts), n_out), 0, dtype=torch.int32)
    rank = cum.view(-1).index_select(0, cell).sub_(1).to(torch.int64)
    return rank, cum[-1].to(torch.int64)


def build_plan(in_idx: list[Tensor | None], out_idx: list[Tensor | None], n_out: int, skip: int | None,
               block_pairs: int | None = None) -> ReducePlan:
    """Plan for pairs ``(in_idx[i][j] -> out_idx[i][j])`` of every offset ``i`` except ``skip`` (identity).

    ``block_pairs``: target pairs per block (default ``block_pairs_for(64)``); blocks are equal runs of output
    rows sized from the mean pairs per row. Pairs of one offset are expected sorted by output row (they are
    sorted here if not), so each block's pairs of an offset are one contiguous slice of it.
    """
    if block_pairs is None:
        block_pairs = block_pairs_for(64)
    block_pairs = max(int(block_pairs), 1)
    offs = [i for i, a in enumerate(in_idx) if i != skip and a is not None and a.numel() > 0]
    dev = next((in_idx[i].device for i in offs), torch.device("cpu"))
    counts = [int(in_idx[i].numel()) for i in offs]
    total = sum(counts)
    n_slots = len(offs)
    rows_per_block = max(1, (block_pairs * n_out) // total) if total else max(n_out, 1)
    row_bounds = list(range(0, n_out, rows_per_block)) + [n_out] if n_out else [0]
    nb = len(row_bounds) - 1
    i64 = dict(dtype=torch.int64, device=dev)
    slot_offsets = torch.tensor(offs, **i64)
    if total == 0:
        z = torch.zeros(0, **i64)
        return ReducePlan(row_bounds, [0] * (nb + 1), z, z, z, z, torch.zeros(n_out, **i64), slot_offsets,
                          torch.zeros((nb, n_slots), **i64), block_pairs)

    a = torch.cat([in_idx[i] for i in offs]) if n_slots > 1 else in_idx[offs[0]]
    b = torch.cat([out_idx[i] for i in offs]) if n_slots > 1 else out_idx[offs[0]]
    slot = torch.repeat_interleave(torch.arange(n_slots, **i64), torch.tensor(counts, **i64), output_size=total)
    # every offset's pairs sorted by output row? (one check for all: rows may only drop where a slot starts)
    if total > 1:
        drop = b[1:] < b[:-1]
        drop &= slot[1:] == slot[:-1]
        if bool(drop.any()):
            order = torch.argsort(slot * max(n_out, 1) + b)
            a, b = a.index_select(0, order), b.index_select(0, order)
    blk = torch.div(b, rows_per_block, rounding_mode="floor")
    group = slot * nb + blk  # slot-major, block-sorted within a slot = the order of the pair list
    cnt_sb = torch.bincount(group, minlength=n_slots * nb)
    src_start = _exclusive_cumsum(cnt_sb)  # position in the pair list where (slot, block) starts
    cnt_bs = cnt_sb.view(n_slots, nb).t().contiguous()  # [nb, S]
    flat_bs = cnt_bs.view(-1)
    dst_start = _exclusive_cumsum(flat_bs).view(nb, n_slots)  # workspace start of (block, slot)
    block_sizes = cnt_bs.sum(1)
    y_bounds_t = torch.zeros(nb + 1, **i64)
    torch.cumsum(block_sizes, 0, out=y_bounds_t[1:])
    # workspace position of pair j: start of its (block, slot) + its rank within that group, i.e. a constant
    # shift per (slot, block) group plus j (pairs of a group are consecutive in both orders)
    shift = dst_start.t().reshape(-1) - src_start  # per group, slot-major like ``group``
    ar = torch.arange(total, **i64)
    ypos = shift.index_select(0, group).add_(ar)
    gather_idx = torch.empty(total, **i64).scatter_(0, ypos, a)
    out_rows = torch.empty(total, **i64).scatter_(0, ypos, b)
    offset_idx = torch.empty(total, **i64).scatter_(0, ypos, slot_offsets.index_select(0, slot))
    local_shift = shift - y_bounds_t[:-1].repeat(n_slots)  # block-local: minus the block's workspace start
    local = local_shift.index_select(0, group).add_(ar)
    # output-major reduce lists: each row's pairs in offset order, i.e. its rank among the row's pairs
    rank, row_counts = _row_ranks(b, counts, n_out)
    starts = _exclusive_cumsum(row_counts)
    bag_idx = torch.empty(total, **i64).scatter_(0, starts.index_select(0, b).add_(rank), local)
    rb = torch.tensor(row_bounds, **i64)
    bag_offsets = starts - y_bounds_t[:-1].repeat_interleave(rb[1:] - rb[:-1], output_size=n_out)
    return ReducePlan(row_bounds, y_bounds_t.tolist(), gather_idx, out_rows, offset_idx, bag_idx, bag_offsets,
                      slot_offsets, cnt_bs, block_pairs)
