"""Global pooling per sample: SparseTensor -> dense ``[B, C]`` (classification heads, squeeze-excitation)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .tensor import SparseTensor

__all__ = ["GlobalPool", "global_pool"]


def global_pool(x: SparseTensor, mode: str = "avg", batch_size: int | None = None) -> Tensor:
    """Mean or max of the feature rows of each sample (batch column). Samples with no voxels give 0."""
    if mode not in ("avg", "max"):
        raise ValueError(f"global_pool: mode must be 'avg' or 'max', got {mode!r}")
    b = x.coords[:, 0].to(torch.int64)
    nb = x.batch_size if batch_size is None else int(batch_size)
    c = x.feats.shape[1]
    index = b.unsqueeze(1).expand(-1, c)
    if mode == "avg":
        sums = x.feats.new_zeros((nb, c)).scatter_add(0, index, x.feats)
        counts = torch.bincount(b, minlength=nb).clamp(min=1).to(x.feats.dtype)
        return sums / counts.unsqueeze(1)
    out = x.feats.new_zeros((nb, c)).scatter_reduce(0, index, x.feats, reduce="amax", include_self=False)
    return out


class GlobalPool(nn.Module):
    """``GlobalPool("avg" | "max")``: SparseTensor -> ``[B, C]`` per-sample pooled features."""

    def __init__(self, mode: str = "avg") -> None:
        super().__init__()
        if mode not in ("avg", "max"):
            raise ValueError(f"GlobalPool: mode must be 'avg' or 'max', got {mode!r}")
        self.mode = mode

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"

    def forward(self, x: SparseTensor) -> Tensor:
        return global_pool(x, self.mode)
