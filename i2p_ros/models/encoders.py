"""Inflated sparse encoders: ResNet-18..152 and EfficientNet-Lite0..2 over SparseTensors.

Each encoder has two parts, and the FIP modes treat them differently:

* ``stem`` and ``ds`` — **new input layers**. The 2D stems (ResNet's 7×7/stride-2 conv + max-pool,
  Lite's 3-channel 3×3/stride-2 conv) take RGB pixels, which LiDAR voxels do not have; as in the
  Image2Point reference code, they are replaced by a randomly initialised 3×3×3 stem for the configured
  input features (x, y, z, intensity by default), followed by a 2×2×2 stride-2 downsampling conv.
* the **inflated** body (``layer1..4`` / ``_blocks``, and Lite's ``_conv_head``/``_bn1`` when kept), whose
  module names equal the 2D network's, so its weights come from an ImageNet state dict by name.

``forward`` returns the multi-scale features ``[stem (stride 1), ..., deepest]`` for a UNet decoder;
``feature_channels`` and ``feature_strides`` describe them.
"""

from __future__ import annotations

from torch import nn

from ..sparse import BatchNorm, Conv3d, ReLU6, SparseTensor
from .efficientnet2d import HEAD_CHANNELS, LITE_BN_EPS, STEM_CHANNELS, lite_block_specs
from .resnet2d import RESNET_SPECS, STAGE_PLANES
from .sparse_blocks import BasicBlock3d, Bottleneck3d, ConvBNAct, MBConv3d

__all__ = ["SparseResNet", "SparseEfficientNetLite", "NEW_INPUT_MODULES"]

# Top-level encoder children that are new (not inflated from the 2D prior).
NEW_INPUT_MODULES = ("stem", "ds")


class SparseResNet(nn.Module):
    """Inflated ResNet-``depth`` (torchvision layout for ``layer1..4``) with a new LiDAR stem."""

    def __init__(self, depth: int = 18, in_channels: int = 4, stem_channels: int = 64, stem_kernel: int = 3) -> None:
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"unsupported ResNet depth {depth}; expected one of {sorted(RESNET_SPECS)}")
        spec = RESNET_SPECS[depth]
        block = BasicBlock3d if spec.block == "basic" else Bottleneck3d
        self.depth = depth
        self.stem = nn.Sequential(ConvBNAct(in_channels, stem_channels, stem_kernel),
                                  ConvBNAct(stem_channels, 64, stem_kernel))
        self.ds = ConvBNAct(64, 64, 2, stride=2)
        cin = 64
        channels = [64]
        for i, (planes, n) in enumerate(zip(STAGE_PLANES, spec.layers)):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, stride=2 if (j == 0 and i > 0) else 1))
                cin = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            channels.append(cin)
        self.feature_channels = channels
        self.feature_strides = [1, 2, 4, 8, 16]
        self.prior_kind = f"resnet{depth}"

    def forward(self, x: SparseTensor) -> list[SparseTensor]:
        x = self.stem(x)
        feats = [x]
        x = self.ds(x)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            feats.append(x)
        return feats


class SparseEfficientNetLite(nn.Module):
    """Inflated EfficientNet-Lite (MBConv, ReLU6, depthwise 3³/5³ kernels) with a new LiDAR stem.

    The new stem keeps full resolution (so the decoder has a stride-1 skip) and ``ds`` halves it, playing
    the role of the 2D stem's stride 2; the MBConv stages then downsample as in 2D, to stride 32 overall.
    ``with_head`` keeps the inflated 1×1×1 ``_conv_head`` (320 -> 1280), used by the classifier.
    ``stages`` < 7 keeps only the first MBConv stages (``_blocks`` keep their 2D indices, so the prior still
    maps by name): on LiDAR scans the wide stride-32 stages cost most of the compute, because a scan has
    thousands of occupied stride-32 voxels where a 224² image has 49 positions.
    """

    def __init__(self, variant: str = "lite0", in_channels: int = 4, with_head: bool = False,
                 stages: int = 7, stem_kernel: int = 3) -> None:
        super().__init__()
        all_specs = lite_block_specs(variant)
        num_stages = all_specs[-1].stage + 1
        if not 1 <= stages <= num_stages:
            raise ValueError(f"stages must be in 1..{num_stages} for EfficientNet-{variant}, got {stages}")
        if with_head and stages != num_stages:
            raise ValueError("the 1x1 head (classification) follows the last stage: keep all stages with it")
        specs = [s for s in all_specs if s.stage < stages]
        self.stages = stages
        self.variant = variant
        self.stem = ConvBNAct(in_channels, STEM_CHANNELS, stem_kernel, act="relu6", bn_eps=LITE_BN_EPS)
        self.ds = ConvBNAct(STEM_CHANNELS, STEM_CHANNELS, 2, stride=2, act="relu6", bn_eps=LITE_BN_EPS)
        self._blocks = nn.ModuleList(MBConv3d(s.cin, s.cout, s.kernel, s.stride, s.expand) for s in specs)
        # features are taken at the end of every stage after which the resolution drops (and at the end)
        self._taps = []
        for i, s in enumerate(specs):
            last_of_stage = i + 1 == len(specs) or specs[i + 1].stage != s.stage
            next_strided = i + 1 == len(specs) or specs[i + 1].stride > 1
            if last_of_stage and next_strided:
                self._taps.append(i)
        self.with_head = with_head
        if with_head:
            self._conv_head = Conv3d(specs[-1].cout, HEAD_CHANNELS, 1)
            self._bn1 = BatchNorm(HEAD_CHANNELS, eps=LITE_BN_EPS)
            self._head_act = ReLU6()
        self.feature_channels = [STEM_CHANNELS] + [specs[i].cout for i in self._taps]
        strides, s = [], 2
        for i, spec in enumerate(specs):
            s *= spec.stride
            if i in self._taps:
                strides.append(s)
        self.feature_strides = [1] + strides
        self.head_channels = HEAD_CHANNELS if with_head else self.feature_channels[-1]
        self.prior_kind = f"efficientnet_{variant}"

    def forward(self, x: SparseTensor) -> list[SparseTensor]:
        x = self.stem(x)
        feats = [x]
        x = self.ds(x)
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self._taps:
                feats.append(x)
        return feats

    def head(self, x: SparseTensor) -> SparseTensor:
        """The inflated 1×1×1 head (classification); identity when built without it."""
        if not self.with_head:
            return x
        return self._head_act(self._bn1(self._conv_head(x)))
