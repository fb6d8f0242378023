"""Checkpoint files: what a model needs to be rebuilt anywhere, plus training state when there is one.

A checkpoint is a plain dict of tensors and primitives, so it loads with ``torch.load(weights_only=True)``:

``format``        ``"i2p_ros/1"``
``model_config``  the resolved :class:`~i2p_ros.models.build.ModelConfig` as a mapping
``model``         the model's state dict (inference-only files may store it in float16)
``classes``       ``{"names": [...], "raw_ids": [...]}`` — training index -> SemanticKITTI name / raw id
``fip``           the FIP mode it was trained with
``engine``        i2p_ros version that wrote it
``train``         optional: optimizer/scheduler/epoch/step/RNG state and the training config (``--resume``)
``metrics``       optional: e.g. ``{"val_miou": ...}``
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import i2p_ros

from .config import ConfigError, to_mapping
from .models.build import ModelConfig, build_model, model_config_from_dict

FORMAT = "i2p_ros/1"

__all__ = ["FORMAT", "CheckpointError", "LoadedModel", "save_atomic", "make_checkpoint", "read_checkpoint",
           "load_model", "export_inference_checkpoint"]


class CheckpointError(ValueError):
    """A checkpoint file is unreadable or does not describe a model we can build; names the file."""


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def make_checkpoint(model: nn.Module, cfg: ModelConfig, class_names: list[str], raw_ids: list[int],
                    fip: str, *, train_state: dict | None = None, metrics: dict | None = None,
                    half: bool = False) -> dict[str, Any]:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "model_config": to_mapping(cfg),
        "model": state,
        "classes": {"names": list(class_names), "raw_ids": [int(r) for r in raw_ids]},
        "fip": fip,
        "engine": i2p_ros.__version__,
    }
    if train_state is not None:
        ckpt["train"] = train_state
    if metrics is not None:
        ckpt["metrics"] = metrics
    return ckpt


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check the structure of a checkpoint (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt files raise many exception types
        raise CheckpointError(f"checkpoint {path} could not be read (weights-only torch file expected): {err}") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"checkpoint {path} is not an i2p_ros checkpoint (format {got!r}, expected {FORMAT!r})")
    for key in ("model_config", "model", "classes"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {path} lacks {key!r}")
    return ckpt


@dataclass
class LoadedModel:
    model: nn.Module
    config: ModelConfig
    class_names: list[str]
    raw_ids: list[int]
    fip: str
    checkpoint: dict[str, Any]


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the network of a checkpoint (no prior download: weights come from the file) in eval mode."""
    ckpt = read_checkpoint(path)
    try:
        cfg = model_config_from_dict(ckpt["model_config"], source=f"{path}:model_config")
    except ConfigError as err:
        raise CheckpointError(str(err)) from err
    names, raw_ids = ckpt["classes"]["names"], ckpt["classes"]["raw_ids"]
    if len(names) != cfg.num_classes or len(raw_ids) != cfg.num_classes:
        raise CheckpointError(f"checkpoint {path}: {len(names)} class names / {len(raw_ids)} raw ids for a model "
                              f"with {cfg.num_classes} classes")
    model, _ = build_model(cfg, prior="none")
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    from .weights import check_state_dict
    try:
        check_state_dict(model.state_dict(), state, path)
    except ValueError as err:
        raise CheckpointError(str(err)) from err
    model.load_state_dict(state)
    model.to(device).eval()
    return LoadedModel(model, cfg, list(names), [int(r) for r in raw_ids], str(ckpt.get("fip", "")), ckpt)


def export_inference_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, half: bool = True) -> Path:
    """Strip training state (and optionally store weights in float16) for shipping a model."""
    ckpt = read_checkpoint(src)
    ckpt.pop("train", None)
    if half:
        ckpt["model"] = {k: (v.half() if v.is_floating_point() else v) for k, v in ckpt["model"].items()}
    return save_atomic(ckpt, dst)
