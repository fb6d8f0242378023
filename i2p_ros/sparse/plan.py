"""Execution plan of the scatter strategy: output row blocks, per-block gather lists and reduce lists.

Why: on CPU, ``index_add_`` (and every other scatter-add in torch) costs more than the ``mm`` it accumulates.
So the per-offset products of one block of output rows are written side by side into a small workspace
``Y`` (offset-major within the block, so each offset is one ``mm`` on a slice), and then summed per output row
with one ``embedding_bag(mode="sum")`` — a fused, parallel gather-sum. Blocks keep the workspace small
(cache-resident, no large allocations), so memory stays O(N*C).

Layout of a plan with blocks ``k`` over output rows ``[row_bounds[k], row_bounds[k+1])``:

* ``gather_idx[y]`` / ``out_rows[y]``: input row / output row of the pair stored at workspace position ``y``
  (blocks are contiguous: block k owns ``y`` in ``[y_bounds[k], y_bounds[k+1])``);
* ``slots[k]``: ``(offset index, count)`` runs of block k in workspace order;
* ``bag_idx`` / ``bag_offsets``: for each output row, the block-local workspace positions of its pairs
  (the ``embedding_bag`` input/offsets of that block).
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


def block_pairs_for(channels: int) -> int:
    """Target pairs per block for ``channels = Cin + Cout`` (a power of two in [2048, 65536])."""
    if DEFAULT_BLOCK_PAIRS is not None:
        return int(DEFAULT_BLOCK_PAIRS)
    target = WORKSPACE_ELEMENTS // max(int(channels), 1)
    return int(min(max(1 << max(target.bit_length() - 1, 0), 2048), 65536))


@dataclass
class ReducePlan:
    row_bounds: list[int]
    y_bounds: list[int]
    slots: list[list[tuple[int, int]]]
    gather_idx: Tensor
    out_rows: Tensor
    bag_idx: Tensor
    bag_offsets: Tensor
    _sizes: list[list[int]] | None = field(default=None, repr=False)

    @property
    def num_blocks(self) -> int:
        return len(self.slots)

    @property
    def sizes(self) -> list[list[int]]:
        """Run lengths of each block's slots (for ``torch.split``)."""
        if self._sizes is None:
            self._sizes = [[c for _, c in blk] for blk in self.slots]
        return self._sizes

    @property
    def max_block_pairs(self) -> int:
        return max((self.y_bounds[k + 1] - self.y_bounds[k] for k in range(self.num_blocks)), default=0)

    def relabeled(self, kernel_volume: int) -> ReducePlan:
        """The same pairs with offset ``i`` renamed ``K-1-i`` (transpose of a symmetric submanifold map)."""
        slots = [[(kernel_volume - 1 - i, c) for i, c in blk] for blk in self.slots]
        return ReducePlan(self.row_bounds, self.y_bounds, slots, self.gather_idx, self.out_rows,
                          self.bag_idx, self.bag_offsets)


def build_plan(in_idx: list[Tensor | None], out_idx: list[Tensor | None], n_out: int, skip: int | None,
               block_pairs: int | None = None) -> ReducePlan:
    """Plan for pairs ``(in_idx[i][j] -> out_idx[i][j])`` of every offset ``i`` except ``skip`` (identity).

    ``block_pairs``: target pairs per block (default ``block_pairs_for(64)``); blocks are
    equal runs of output rows sized from the mean pairs per row. No sort: pairs of one offset are sorted by
    output row (sorted here if not), so each block's pairs of an offset are one slice, and a pair's place in
    the output-major reduce list is its row's start plus its rank among the row's offsets.
    """
    if block_pairs is None:
        block_pairs = block_pairs_for(64)
    block_pairs = max(int(block_pairs), 1)
    offs = [i for i, a in enumerate(in_idx) if i != skip and a is not None and a.numel() > 0]
    dev = next((in_idx[i].device for i in offs), torch.device("cpu"))
    ins, outs = [], []
    for i in offs:
        a, b = in_idx[i], out_idx[i]
        if b.numel() > 1 and not bool((b[1:] >= b[:-1]).all()):
            b, order = torch.sort(b, stable=True)
            a = a.index_select(0, order)
        ins.append(a)
        outs.append(b)
    total = sum(int(b.numel()) for b in outs)
    n_slots = len(outs)
    rows_per_block = max(1, (block_pairs * n_out) // total) if total else max(n_out, 1)
    row_bounds = list(range(0, n_out, rows_per_block)) + [n_out]
    if n_out == 0:
        row_bounds = [0]
    nb = len(row_bounds) - 1
    rb = torch.tensor(row_bounds, dtype=torch.int64, device=dev)

    if n_slots:
        seg = torch.stack([torch.searchsorted(b, rb) for b in outs])  # [S, nb+1] pair cuts per offset
    else:
        seg = torch.zeros((0, nb + 1), dtype=torch.int64, device=dev)
    seg_counts = (seg[:, 1:] - seg[:, :-1]).t().contiguous()  # [nb, S]
    block_sizes = seg_counts.sum(1)
    y_bounds_t = torch.zeros(nb + 1, dtype=torch.int64, device=dev)
    y_bounds_t[1:] = torch.cumsum(block_sizes, 0)
    flat = seg_counts.reshape(-1)
    # block-local workspace start of (block k, slot s): offset-major inside the block
    local_start = (torch.cumsum(flat, 0) - flat).reshape(nb, n_slots) - y_bounds_t[:-1, None]
    seg_counts_l = seg_counts.tolist()
    slots = [[(offs[s], c) for s, c in enumerate(row) if c > 0] for row in seg_counts_l]

    # pair j of offset slot s in block k sits at block-local workspace position local_start[k, s] + j - seg[s, k]
    dloc = (local_start - seg[:, :-1].t()).t().contiguous()  # [S, nb]
    y0 = y_bounds_t[:-1]
    ar = torch.arange(max((int(b.numel()) for b in outs), default=0), device=dev)
    gather_idx = torch.empty(total, dtype=torch.int64, device=dev)
    out_rows = torch.empty(total, dtype=torch.int64, device=dev)
    fill = torch.zeros(n_out, dtype=torch.int64, device=dev)
    ranks, locals_ = [], []
    for s, (a, b) in enumerate(zip(ins, outs)):
        blk = torch.div(b, rows_per_block, rounding_mode="floor")
        local = dloc[s].index_select(0, blk).add_(ar[:b.numel()])
        ypos = local + y0.index_select(0, blk)
        gather_idx.scatter_(0, ypos, a)
        out_rows.scatter_(0, ypos, b)
        # output-major reduce lists: rank of the pair among its row's pairs (offsets in order) + row start
        r = fill.index_select(0, b)
        fill.scatter_(0, b, r + 1)  # rows are unique within one offset
        ranks.append(r)
        locals_.append(local)
    counts = fill
    starts = torch.cumsum(counts, 0) - counts
    bag_idx = torch.empty(total, dtype=torch.int64, device=dev)
    for b, r, local in zip(outs, ranks, locals_):
        bag_idx.scatter_(0, starts.index_select(0, b).add_(r), local)
    rows_in_block = rb[1:] - rb[:-1]
    bag_offsets = starts - y_bounds_t[:-1].repeat_interleave(rows_in_block) if n_out else starts
    return ReducePlan(row_bounds, y_bounds_t.tolist(), slots, gather_idx, out_rows, bag_idx, bag_offsets)
