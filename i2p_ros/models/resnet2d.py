"""Torchvision-compatible 2D ResNets in plain PyTorch (no torchvision dependency).

The module tree mirrors ``torchvision.models.resnet`` exactly (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``layerN.0.downsample.0/1``, ``fc``), so a torchvision ImageNet ``.pth`` file loads with strict key and
shape checks, and the 2D weights that the 3D encoders inflate have well-known names. Bottleneck blocks
put the stride on the 3×3 conv (torchvision's "ResNet v1.5").

:func:`synthetic_resnet_state_dict` builds a torchvision-format state dict from the naming rules alone
(no model instance), for tests that must not depend on user-supplied files.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ..weights import load_weights

__all__ = [
    "RESNET_SPECS",
    "STAGE_PLANES",
    "ResNetSpec",
    "BasicBlock2d",
    "Bottleneck2d",
    "ResNet2d",
    "resnet2d",
    "synthetic_resnet_state_dict",
]


@dataclass(frozen=True)
class ResNetSpec:
    block: str                 # "basic" or "bottleneck"
    layers: tuple[int, ...]    # blocks per stage (layer1..layer4)

    @property
    def expansion(self) -> int:
        return 1 if self.block == "basic" else 4


RESNET_SPECS: dict[int, ResNetSpec] = {
    18: ResNetSpec("basic", (2, 2, 2, 2)),
    34: ResNetSpec("basic", (3, 4, 6, 3)),
    50: ResNetSpec("bottleneck", (3, 4, 6, 3)),
    101: ResNetSpec("bottleneck", (3, 4, 23, 3)),
    152: ResNetSpec("bottleneck", (3, 8, 36, 3)),
}
STAGE_PLANES = (64, 128, 256, 512)


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


def _downsample(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))


class BasicBlock2d(nn.Module):
    """3×3 → 3×3 residual block (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv(cin, planes, 3, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv(planes, planes, 3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(cin, planes, stride) if stride != 1 or cin != planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck2d(nn.Module):
    """1×1 → 3×3 (strided) → 1×1 residual block (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = _conv(cin, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv(planes, cout, 1)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, cout, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet2d(nn.Module):
    """ImageNet ResNet with torchvision's state-dict layout."""

    def __init__(self, depth: int = 18, num_classes: int = 1000) -> None:
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"unsupported ResNet depth {depth}; expected one of {sorted(RESNET_SPECS)}")
        self.depth = depth
        self.spec = spec = RESNET_SPECS[depth]
        block = BasicBlock2d if spec.block == "basic" else Bottleneck2d
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        for i, (planes, n) in enumerate(zip(STAGE_PLANES, spec.layers)):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, stride=2 if (j == 0 and i > 0) else 1))
                cin = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the stem (stride 4, after max-pool) and of layer1..layer4 (strides 4, 8, 16, 32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = [x]
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)[-1]
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet2d(depth: int = 18, num_classes: int = 1000, weights: str | None = None) -> ResNet2d:
    """Build a ResNet-``depth``; ``weights`` is an optional torchvision-format ``.pth`` file (strictly checked)."""
    model = ResNet2d(depth, num_classes)
    if weights is not None:
        load_weights(model, weights)
    return model


def _bn_entries(prefix: str, c: int, gen: torch.Generator, dtype: torch.dtype,
                with_nbt: bool, gamma: float) -> list[tuple[str, torch.Tensor]]:
    out = [
        (f"{prefix}.weight", gamma * (1.0 + 0.1 * torch.randn(c, generator=gen, dtype=dtype))),
        (f"{prefix}.bias", 0.1 * torch.randn(c, generator=gen, dtype=dtype)),
        (f"{prefix}.running_mean", 0.1 * torch.randn(c, generator=gen, dtype=dtype)),
        (f"{prefix}.running_var", 0.5 + torch.rand(c, generator=gen, dtype=dtype)),
    ]
    if with_nbt:
        out.append((f"{prefix}.num_batches_tracked", torch.tensor(0, dtype=torch.int64)))
    return out


def synthetic_resnet_state_dict(
    depth: int = 18,
    num_classes: int = 1000,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    num_batches_tracked: bool = True,
) -> OrderedDict[str, torch.Tensor]:
    """A random state dict with exactly torchvision's ResNet-``depth`` keys, shapes and key order.

    Built from the torchvision naming rules, independently of :class:`ResNet2d`, so tests can compare the
    two. Conv weights are He-scaled normals, BN statistics are plausible (positive variances); the last BN of
    each residual branch has a small scale (~0.2) so activations stay O(1) even through ResNet-152.
    ``num_batches_tracked=False`` mimics the oldest torchvision files, which lack those buffers.
    """
    if depth not in RESNET_SPECS:
        raise ValueError(f"unsupported ResNet depth {depth}; expected one of {sorted(RESNET_SPECS)}")
    spec = RESNET_SPECS[depth]
    gen = torch.Generator().manual_seed(seed)
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()

    def conv(name: str, cout: int, cin: int, k: int) -> None:
        std = (2.0 / (cin * k * k)) ** 0.5
        sd[f"{name}.weight"] = std * torch.randn(cout, cin, k, k, generator=gen, dtype=dtype)

    def bn(name: str, c: int, gamma: float = 1.0) -> None:
        sd.update(_bn_entries(name, c, gen, dtype, num_batches_tracked, gamma))

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    cin = 64
    for i, (planes, n) in enumerate(zip(STAGE_PLANES, spec.layers)):
        cout = planes * spec.expansion
        for j in range(n):
            p = f"layer{i + 1}.{j}"
            stride = 2 if (j == 0 and i > 0) else 1
            if spec.block == "basic":
                conv(f"{p}.conv1", planes, cin, 3)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3)
                bn(f"{p}.bn2", planes, gamma=0.2)
            else:
                conv(f"{p}.conv1", planes, cin, 1)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3)
                bn(f"{p}.bn2", planes)
                conv(f"{p}.conv3", cout, planes, 1)
                bn(f"{p}.bn3", cout, gamma=0.2)
            if stride != 1 or cin != cout:
                conv(f"{p}.downsample.0", cout, cin, 1)
                bn(f"{p}.downsample.1", cout)
            cin = cout
    sd["fc.weight"] = 0.01 * torch.randn(num_classes, cin, generator=gen, dtype=dtype)
    sd["fc.bias"] = torch.zeros(num_classes, dtype=dtype)
    return sd
