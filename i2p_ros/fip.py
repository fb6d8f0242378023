"""FIP modes (Image2Point): which parameters finetune and whether the inflated BatchNorm statistics move.

=========  ===========================================  ================================
mode       trains                                       inflated BN running statistics
=========  ===========================================  ================================
scratch    everything (random init, no prior)           updated
io         new input layers (stem), decoder, classifier frozen (BN kept in eval mode)
io_bn      ``io`` + BN affine of the inflated encoder   updated
all        everything (inflated init)                   updated
=========  ===========================================  ================================

Groups: ``input`` = ``encoder.stem``/``encoder.ds``; ``inflated`` = the rest of the encoder (split into
``inflated_conv`` and ``inflated_bn``); ``output`` = decoder and classifier. ``apply_fip`` sets
``requires_grad``, pins the frozen BatchNorms in eval mode (the models' ``train()`` keeps them there),
and returns a plan with optimizer parameter groups and a parameter-count summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from .models.encoders import NEW_INPUT_MODULES
from .sparse import BatchNorm

FipMode = Literal["scratch", "io", "io_bn", "all"]
FIP_MODES: tuple[str, ...] = ("scratch", "io", "io_bn", "all")
GROUPS = ("input", "inflated_conv", "inflated_bn", "output")

__all__ = ["FIP_MODES", "FipPlan", "apply_fip", "optimizer_groups", "parameter_group_of", "uses_prior"]


def uses_prior(mode: str) -> bool:
    """Every mode but ``scratch`` starts the encoder from the inflated 2D weights."""
    _check(mode)
    return mode != "scratch"


def _check(mode: str) -> None:
    if mode not in FIP_MODES:
        raise ValueError(f"unknown FIP mode {mode!r}; expected one of {FIP_MODES}")


def parameter_group_of(name: str, model: nn.Module) -> str:
    """The FIP group of parameter ``name`` (a key of ``model.named_parameters()``)."""
    parts = name.split(".")
    if parts[0] != "encoder":
        return "output"
    if parts[1] in NEW_INPUT_MODULES:
        return "input"
    owner = model.get_submodule(".".join(parts[:-1]))
    return "inflated_bn" if isinstance(owner, BatchNorm) else "inflated_conv"


@dataclass
class FipPlan:
    mode: str
    trainable: dict[str, int] = field(default_factory=dict)   # group -> trainable parameter count
    total: dict[str, int] = field(default_factory=dict)       # group -> parameter count
    frozen_bn: list[str] = field(default_factory=list)        # BatchNorm modules pinned in eval mode

    @property
    def trainable_count(self) -> int:
        return sum(self.trainable.values())

    @property
    def total_count(self) -> int:
        return sum(self.total.values())

    def summary(self) -> str:
        rows = [f"FIP mode {self.mode}: {self.trainable_count:,} / {self.total_count:,} parameters trainable "
                f"({100.0 * self.trainable_count / max(self.total_count, 1):.1f}%)"]
        for g in GROUPS:
            if self.total.get(g):
                rows.append(f"  {g:<14} {self.trainable[g]:>12,} / {self.total[g]:>12,}")
        if self.frozen_bn:
            rows.append(f"  {len(self.frozen_bn)} inflated BatchNorms use frozen ImageNet statistics (eval mode)")
        return "\n".join(rows)


def apply_fip(model: nn.Module, mode: str) -> FipPlan:
    """Freeze/unfreeze ``model`` (a SegmentationNet or ClassificationNet) for FIP ``mode``."""
    _check(mode)
    plan = FipPlan(mode=mode, trainable={g: 0 for g in GROUPS}, total={g: 0 for g in GROUPS})
    for name, p in model.named_parameters():
        group = parameter_group_of(name, model)
        train = (mode in ("scratch", "all") or group in ("input", "output")
                 or (mode == "io_bn" and group == "inflated_bn"))
        p.requires_grad_(train)
        plan.total[group] += p.numel()
        plan.trainable[group] += p.numel() if train else 0
    if mode == "io":
        plan.frozen_bn = [n for n, m in model.named_modules()
                          if isinstance(m, BatchNorm) and n.startswith("encoder.")
                          and n.split(".")[1] not in NEW_INPUT_MODULES]
    if not hasattr(model, "frozen_bn"):
        raise TypeError(f"{type(model).__name__} does not support FIP (no frozen_bn attribute)")
    model.frozen_bn = tuple(plan.frozen_bn)  # the model's train() keeps these in eval mode
    model.train(model.training)
    return plan


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters, without weight decay on BatchNorm affine and biases (standard practice)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        owner = model.get_submodule(".".join(name.split(".")[:-1])) if "." in name else model
        is_norm = isinstance(owner, nn.modules.batchnorm._BatchNorm)  # ours, BatchNorm1d and SyncBatchNorm
        (no_decay if is_norm or name.endswith("bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
