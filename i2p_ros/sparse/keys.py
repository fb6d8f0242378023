"""Sorting packed integer keys: the one primitive voxelization and coarse coordinate sets share."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sorted_unique"]


def sorted_unique(key: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``torch.unique(key, sorted=True, return_inverse=True)`` plus what it computes and drops: the sort order
    (points grouped by voxel) and where each voxel's run starts in it. Stable, so a voxel's points keep their
    input order and the feature sums are reproducible."""
    sorted_key, order = torch.sort(key, stable=True)
    n = key.numel()
    first = torch.ones(n, dtype=torch.bool, device=key.device)
    torch.ne(sorted_key[1:], sorted_key[:-1], out=first[1:])
    starts = torch.nonzero(first).squeeze(1)
    uniq = sorted_key.index_select(0, starts).to(torch.int64)
    inv = torch.empty(n, dtype=torch.int64, device=key.device)
    inv.scatter_(0, order, torch.cumsum(first, 0).sub_(1))
    return uniq, inv, order, starts
