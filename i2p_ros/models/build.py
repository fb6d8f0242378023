"""Model configuration (``config/models/*.yaml``) and the factory that builds a network from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from torch import nn

from ..config import ConfigError, from_mapping, load_config
from .encoders import SparseEfficientNetLite, SparseResNet
from .prior import PriorReport, load_prior
from .resnet2d import RESNET_SPECS
from .segmentation import ClassificationNet, SegmentationNet, UNetDecoder

__all__ = ["EncoderConfig", "DecoderConfig", "InflationConfig", "ModelConfig", "build_model",
           "load_model_config", "MODEL_CONFIG_DIR"]

MODEL_CONFIG_DIR = Path(__file__).resolve().parents[2] / "config" / "models"
FEATURE_NAMES = ("x", "y", "z", "intensity")


@dataclass(frozen=True)
class EncoderConfig:
    type: Literal["resnet", "efficientnet_lite"] = "efficientnet_lite"
    depth: int = 18                                          # resnet
    variant: Literal["lite0", "lite1", "lite2"] = "lite0"    # efficientnet_lite
    stem_channels: int = 64                                  # resnet: width of the new stem's first conv
    stages: int = 7                                          # efficientnet_lite: MBConv stages kept (1..7)
    stem_kernel: int = 3                                     # the new full-resolution stem's kernel (3 or 1)

    def __post_init__(self) -> None:
        if self.type == "resnet" and self.depth not in RESNET_SPECS:
            raise ValueError(f"encoder.depth must be one of {sorted(RESNET_SPECS)}, got {self.depth}")
        if self.stem_kernel not in (1, 3, 5):
            raise ValueError(f"encoder.stem_kernel must be 1, 3 or 5, got {self.stem_kernel}")


@dataclass(frozen=True)
class DecoderConfig:
    channels: list[int] = field(default_factory=lambda: [96, 64, 48, 32, 32])  # coarse -> fine
    blocks: int = 1
    block: Literal["conv", "residual"] = "conv"
    dropout: float = 0.0
    kernels: list[int] | None = None  # fuse-conv kernel per up-stage, coarse -> fine (None: all 3)

    def __post_init__(self) -> None:
        if self.kernels is not None:
            if len(self.kernels) != len(self.channels):
                raise ValueError(f"decoder.kernels needs one kernel size per up-stage ({len(self.channels)}), "
                                 f"got {list(self.kernels)}")
            if any(k not in (1, 3, 5) for k in self.kernels):
                raise ValueError(f"decoder.kernels must be 1, 3 or 5, got {list(self.kernels)}")


@dataclass(frozen=True)
class InflationConfig:
    axis: Literal["x", "y", "z"] = "y"
    mode: Literal["repeat", "average", "center"] = "repeat"


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network; stored in checkpoints and checked by the node."""

    name: str
    task: Literal["segmentation", "classification"] = "segmentation"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    num_classes: int = 19
    in_features: list[str] = field(default_factory=lambda: list(FEATURE_NAMES))
    voxel_size: float = 0.05
    inflation: InflationConfig = field(default_factory=InflationConfig)
    prior: str = "imagenet"      # imagenet (embedded Lite weights) | none | path to a 2D weight file

    def __post_init__(self) -> None:
        unknown = [f for f in self.in_features if f not in FEATURE_NAMES]
        if unknown or not self.in_features:
            raise ValueError(f"in_features must be a non-empty subset of {FEATURE_NAMES}, got {self.in_features}")
        if self.voxel_size <= 0:
            raise ValueError(f"voxel_size must be > 0, got {self.voxel_size}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")


def load_model_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ModelConfig:
    """A shipped config by name (``lite0``, ``r18``) or a YAML path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = MODEL_CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            shipped = sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.yaml"))
            raise ConfigError(f"unknown model config {name_or_path!r}; shipped: {shipped}")
    return load_config(ModelConfig, path, overrides)


def model_config_from_dict(data: dict, source: str = "checkpoint") -> ModelConfig:
    return from_mapping(ModelConfig, data, source)


def build_encoder(cfg: ModelConfig) -> nn.Module:
    cin = len(cfg.in_features)
    if cfg.encoder.type == "resnet":
        return SparseResNet(cfg.encoder.depth, in_channels=cin, stem_channels=cfg.encoder.stem_channels,
                            stem_kernel=cfg.encoder.stem_kernel)
    return SparseEfficientNetLite(cfg.encoder.variant, in_channels=cin, with_head=cfg.task == "classification",
                                  stages=cfg.encoder.stages, stem_kernel=cfg.encoder.stem_kernel)


def build_model(cfg: ModelConfig, prior: str | None = None) -> tuple[nn.Module, PriorReport | None]:
    """Build the network; load and inflate the 2D prior unless ``prior`` (or ``cfg.prior``) is ``none``."""
    encoder = build_encoder(cfg)
    if cfg.task == "segmentation":
        d = cfg.decoder
        model: nn.Module = SegmentationNet(
            encoder, UNetDecoder(encoder.feature_channels, list(d.channels), d.blocks, d.block, d.dropout,
                                 kernels=list(d.kernels) if d.kernels is not None else None),
            cfg.num_classes)
    else:
        model = ClassificationNet(encoder, cfg.num_classes, dropout=cfg.decoder.dropout)
    source = cfg.prior if prior is None else prior
    report = None
    if source != "none":
        report = load_prior(encoder, source, axis=cfg.inflation.axis, mode=cfg.inflation.mode)
    return model, report
