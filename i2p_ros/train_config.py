"""Training configuration (``config/train/*.yaml``), validated on load."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .config import ConfigError, apply_overrides, from_mapping, load_yaml

__all__ = ["DataConfig", "AugmentSection", "OptimConfig", "LossConfig", "TrainConfig", "load_train_config",
           "TRAIN_CONFIG_DIR"]

TRAIN_CONFIG_DIR = Path(__file__).resolve().parents[1] / "config" / "train"


@dataclass(frozen=True)
class AugmentSection:
    yaw: bool = True
    scale: tuple[float, float] | None = (0.95, 1.05)
    flip_x: bool = False
    flip_y: bool = False
    jitter_sigma: float = 0.0
    jitter_clip: float = 0.05


@dataclass(frozen=True)
class DataConfig:
    root: str = "data/semantic_kitti"              # folder holding sequences/ (override with --data)
    train_split: str | list[int] = "train"         # split name from the label YAML, or sequence numbers
    val_split: str | list[int] | None = "val"
    label_config: str | None = None                # default: config/semantic-kitti.yaml
    max_voxels: int | None = 80000                 # random voxel subset per training scan
    augment: AugmentSection | None = field(default_factory=AugmentSection)
    bounds: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    num_workers: int = 2


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.24
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1.0e-4
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class LossConfig:
    lovasz_weight: float = 0.0
    class_weighting: Literal["none", "inverse_sqrt_frequency"] = "none"


@dataclass(frozen=True)
class TrainConfig:
    model: str = "lite0"                       # config/models/<name>.yaml or a path
    model_overrides: list[str] = field(default_factory=list)   # e.g. ["decoder.blocks=2"]
    fip: Literal["scratch", "io", "io_bn", "all"] = "all"
    prior: str = "imagenet"                    # imagenet | none | path to a 2D weight file
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    epochs: int = 15
    batch_size: int = 2                        # per process (per GPU)
    max_steps_per_epoch: int | None = None     # cap for quick runs
    checkpoint_every_steps: int | None = None  # extra mid-epoch checkpoints (last.pt)
    val_every_epochs: int = 1
    log_every_steps: int = 10
    seed: int = 0
    device: str = "auto"
    amp: bool = True                           # CUDA only
    sync_bn: bool = False
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")


def load_train_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A shipped recipe by name (``sim``, ``lite0_semantickitti``, ``r18_semantickitti``) or a YAML path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = TRAIN_CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            shipped = sorted(p.stem for p in TRAIN_CONFIG_DIR.glob("*.yaml"))
            raise ConfigError(f"unknown training config {name_or_path!r}; shipped: {shipped}")
    data = apply_overrides(load_yaml(path), overrides)
    return from_mapping(TrainConfig, data, source=str(path))
