"""BatchNorm and activations applied to SparseTensor features.

``BatchNorm`` *is* an ``nn.BatchNorm1d`` over the ``[N, C]`` feature rows (statistics over all voxels of the
batch), so its state-dict keys (weight, bias, running_mean, running_var, num_batches_tracked) and train/eval
semantics are BatchNorm1d's, and inflated BatchNorm2d parameters copy across verbatim.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .tensor import SparseTensor

__all__ = ["BatchNorm", "ReLU", "ReLU6", "LeakyReLU", "SiLU"]


class BatchNorm(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` on the features of a SparseTensor."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats)

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(super().forward(x.feats))


class ReLU(nn.Module):
    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(F.relu(x.feats, inplace=self.inplace))


class ReLU6(nn.Module):
    """min(max(x, 0), 6): EfficientNet-Lite's activation."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(F.relu6(x.feats, inplace=self.inplace))


class LeakyReLU(nn.Module):
    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(F.leaky_relu(x.feats, self.negative_slope, inplace=self.inplace))


class SiLU(nn.Module):
    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(F.silu(x.feats, inplace=self.inplace))
