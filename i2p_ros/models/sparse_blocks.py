"""Sparse 3D building blocks whose module names mirror their 2D ImageNet counterparts.

Names matter: a block's parameters are called exactly like the 2D block's (torchvision's
``conv1``/``bn1``/``downsample.0``, efficientnet_pytorch's ``_expand_conv``/``_bn0``/...), so inflating a
2D state dict is a walk over matching names (see :mod:`i2p_ros.models.prior`).
"""

from __future__ import annotations

from torch import nn

from ..sparse import BatchNorm, Conv3d, ReLU, ReLU6, SparseTensor

__all__ = ["ConvBNAct", "BasicBlock3d", "Bottleneck3d", "MBConv3d", "SITES"]

# Strided convs put their outputs at floor(c / 2) * 2 (torchsparse 1.x, which the Image2Point reference
# used): a 3³ or 5³ stride-2 conv then halves the resolution like the 2×2×2 shortcut does, lands on the
# very same coarse sites (the engine shares one floor set per input and stride, so residual sums line
# up), and the coarse levels never grow — with the torchsparse-2 "reachable" rule a LiDAR scan's
# stride-8 level of the Lite encoder held more voxels than the input.
SITES = "floor"


class ConvBNAct(nn.Sequential):
    """Conv3d -> BatchNorm -> activation (``relu``, ``relu6`` or ``none``)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, *, transposed: bool = False,
                 act: str = "relu", bn_eps: float = 1e-5) -> None:
        layers: list[nn.Module] = [Conv3d(cin, cout, kernel_size, stride=stride, transposed=transposed),
                                   BatchNorm(cout, eps=bn_eps)]
        if act == "relu":
            layers.append(ReLU())
        elif act == "relu6":
            layers.append(ReLU6())
        elif act != "none":
            raise ValueError(f"unknown activation {act!r}; expected relu, relu6 or none")
        super().__init__(*layers)


def _shortcut(cin: int, cout: int, stride: int, bn_eps: float) -> nn.Sequential | None:
    """torchvision's ``downsample``: 1×1 conv (+BN); a stride-2 1×1 becomes a 2×2×2 stride-2 conv."""
    if stride == 1 and cin == cout:
        return None
    k = 2 if stride == 2 else 1
    return nn.Sequential(Conv3d(cin, cout, k, stride=stride), BatchNorm(cout, eps=bn_eps))


class BasicBlock3d(nn.Module):
    """ResNet-18/34 block: 3×3×3 -> 3×3×3 plus shortcut (torchvision names)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, bn_eps: float = 1e-5, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv1 = Conv3d(cin, planes, kernel_size, stride=stride, sites=SITES)
        self.bn1 = BatchNorm(planes, eps=bn_eps)
        self.relu = ReLU()
        self.conv2 = Conv3d(planes, planes, kernel_size)
        self.bn2 = BatchNorm(planes, eps=bn_eps)
        self.downsample = _shortcut(cin, planes, stride, bn_eps)

    def forward(self, x: SparseTensor) -> SparseTensor:
        identity = self.downsample(x) if self.downsample is not None else x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out.replace(out.feats + identity.feats))


class Bottleneck3d(nn.Module):
    """ResNet-50/101/152 block: 1×1×1 -> 3×3×3 (stride) -> 1×1×1, expansion 4 (torchvision v1.5 names)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, bn_eps: float = 1e-5) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = Conv3d(cin, planes, 1)
        self.bn1 = BatchNorm(planes, eps=bn_eps)
        self.conv2 = Conv3d(planes, planes, 3, stride=stride, sites=SITES)
        self.bn2 = BatchNorm(planes, eps=bn_eps)
        self.conv3 = Conv3d(planes, out, 1)
        self.bn3 = BatchNorm(out, eps=bn_eps)
        self.relu = ReLU()
        self.downsample = _shortcut(cin, out, stride, bn_eps)

    def forward(self, x: SparseTensor) -> SparseTensor:
        identity = self.downsample(x) if self.downsample is not None else x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out.replace(out.feats + identity.feats))


class MBConv3d(nn.Module):
    """EfficientNet-Lite MBConv: 1×1×1 expand -> k³ depthwise (stride) -> 1×1×1 project (+ identity).

    ReLU6, no squeeze-excitation (Lite). Names follow efficientnet_pytorch: ``_expand_conv``, ``_bn0``,
    ``_depthwise_conv``, ``_bn1``, ``_project_conv``, ``_bn2``; no expand conv when the ratio is 1.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, expand: int,
                 bn_eps: float = 1e-3) -> None:
        super().__init__()
        hidden = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv3d(cin, hidden, 1)
            self._bn0 = BatchNorm(hidden, eps=bn_eps)
        self._depthwise_conv = Conv3d(hidden, hidden, kernel_size, stride=stride, depthwise=True, sites=SITES)
        self._bn1 = BatchNorm(hidden, eps=bn_eps)
        self._project_conv = Conv3d(hidden, cout, 1)
        self._bn2 = BatchNorm(cout, eps=bn_eps)
        self.act = ReLU6()
        self.residual = stride == 1 and cin == cout

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = x
        if self.has_expand:
            out = self.act(self._bn0(self._expand_conv(out)))
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if self.residual:
            out = out.replace(out.feats + x.feats)
        return out
