"""UNet segmentation and classification models over an inflated sparse encoder.

Segmentation: encoder features at strides 1..S; the decoder climbs back one level at a time with a
2×2×2 stride-2 transposed conv (exactly to the finer sites of the skip), concatenates the skip and runs
``blocks`` 3×3×3 conv blocks; a linear classifier gives per-voxel logits, and
:meth:`SegmentationNet.point_logits` sends them to every input point through the voxelizer's inverse map.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..sparse import GlobalPool, SparseTensor, cat
from .sparse_blocks import BasicBlock3d, ConvBNAct

__all__ = ["UNetDecoder", "SegmentationNet", "ClassificationNet", "point_logits"]


class _FipModel(nn.Module):
    """``train()`` that keeps the BatchNorms named in ``frozen_bn`` in eval mode (FIP-IO, see fip.py)."""

    frozen_bn: tuple[str, ...] = ()

    def train(self, mode: bool = True) -> _FipModel:
        super().train(mode)
        for name in self.frozen_bn:
            self.get_submodule(name).eval()
        return self


class _UpStage(nn.Module):
    def __init__(self, cin: int, skip: int, cout: int, blocks: int, block: str, kernel: int = 3) -> None:
        super().__init__()
        self.up = ConvBNAct(cin, cout, 2, stride=2, transposed=True)
        layers: list[nn.Module] = []
        c = cout + skip
        for _ in range(blocks):
            layers.append(BasicBlock3d(c, cout, kernel_size=kernel) if block == "residual"
                          else ConvBNAct(c, cout, kernel))
            c = cout
        if not layers:
            layers.append(ConvBNAct(c, cout, 1))
        self.fuse = nn.Sequential(*layers)

    def forward(self, x: SparseTensor, skip: SparseTensor) -> SparseTensor:
        return self.fuse(cat([self.up(x), skip]))


class UNetDecoder(nn.Module):
    """One up-stage per encoder level; ``channels[i]`` is the width after up-stage ``i`` (coarse to fine)."""

    def __init__(self, feature_channels: list[int], channels: list[int], blocks: int = 1,
                 block: str = "conv", dropout: float = 0.0, kernels: list[int] | None = None) -> None:
        super().__init__()
        if len(channels) != len(feature_channels) - 1:
            raise ValueError(f"decoder needs {len(feature_channels) - 1} channel widths (one per up-stage) for "
                             f"an encoder with {len(feature_channels)} feature levels, got {len(channels)}")
        if block not in ("conv", "residual"):
            raise ValueError(f"decoder block must be 'conv' or 'residual', got {block!r}")
        kernels = [3] * len(channels) if kernels is None else list(kernels)
        if len(kernels) != len(channels):
            raise ValueError(f"decoder needs one fuse kernel per up-stage ({len(channels)}), got {kernels}")
        skips = feature_channels[-2::-1]
        cins = [feature_channels[-1]] + channels[:-1]
        self.stages = nn.ModuleList(_UpStage(ci, s, co, blocks, block, k)
                                    for ci, s, co, k in zip(cins, skips, channels, kernels))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.out_channels = channels[-1]

    def forward(self, feats: list[SparseTensor]) -> SparseTensor:
        x = feats[-1]
        for stage, skip in zip(self.stages, feats[-2::-1]):
            if self.dropout is not None:
                x = x.replace(self.dropout(x.feats))
            x = stage(x, skip)
        return x


class SegmentationNet(_FipModel):
    """Inflated encoder + UNet decoder + per-voxel linear classifier.

    Module groups (used by the FIP modes): ``encoder.stem``/``encoder.ds`` (new input layers),
    the rest of ``encoder`` (inflated), ``decoder`` and ``classifier`` (new output layers).
    """

    def __init__(self, encoder: nn.Module, decoder: UNetDecoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.classifier = nn.Linear(decoder.out_channels, num_classes)
        self.num_classes = num_classes

    def forward(self, x: SparseTensor) -> Tensor:
        """Per-voxel logits ``[N, num_classes]`` in the order of ``x``'s rows."""
        return self.classifier(self.decoder(self.encoder(x)).feats)

    def features(self, x: SparseTensor) -> Tensor:
        """Per-voxel features before the classifier (for CDNV / neural-collapse analysis)."""
        return self.decoder(self.encoder(x)).feats


class ClassificationNet(_FipModel):
    """Inflated encoder (with the Lite head when present) + global pooling + linear head (ModelNet setting)."""

    def __init__(self, encoder: nn.Module, num_classes: int, pool: str = "avg", dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.pool = GlobalPool(pool)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        width = getattr(encoder, "head_channels", encoder.feature_channels[-1])
        self.classifier = nn.Linear(width, num_classes)
        self.num_classes = num_classes

    def features(self, x: SparseTensor) -> Tensor:
        deepest = self.encoder(x)[-1]
        if hasattr(self.encoder, "head"):
            deepest = self.encoder.head(deepest)
        return self.pool(deepest)

    def forward(self, x: SparseTensor) -> Tensor:
        return self.classifier(self.dropout(self.features(x)))


def point_logits(voxel_logits: Tensor, inverse: Tensor) -> Tensor:
    """Logits of every input point (``inverse[p]`` = its voxel row, -1 for points in no voxel -> zeros)."""
    valid = inverse >= 0
    out = voxel_logits.new_zeros((inverse.shape[0], voxel_logits.shape[1]))
    out[valid] = voxel_logits.index_select(0, inverse[valid])
    return out
