"""One segmentation pipeline for every front end: the ROS node, ``i2p-segment`` and bag evaluation.

``points [N, 4] (x, y, z, intensity) -> voxelize -> network -> voxel classes -> every point -> raw ids``.
Because the three front ends share this object, identical input gives identical labels everywhere.
Points that cannot be classified (NaN/Inf, outside the range limits) get raw label 0 "unlabeled";
none is dropped, so the output has exactly one label per input point, in order.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .checkpoint import LoadedModel, load_model
from .models.build import FEATURE_NAMES, ModelConfig
from .sparse import SparseTensor, voxelize

Bounds = tuple[tuple[float, float, float], tuple[float, float, float]]

__all__ = ["SegmentationResult", "SegmentationPipeline", "resolve_device", "default_checkpoint_path"]

DEMO_CHECKPOINT = Path(__file__).resolve().parent / "models" / "weights" / "lite0_sim_demo.pt"


def default_checkpoint_path() -> Path:
    """The shipped demo model (trained on simulated scans only: not for real roads)."""
    return DEMO_CHECKPOINT


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without CUDA is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


def _fold_for_inference(model: nn.Module, example: SparseTensor) -> tuple[nn.Module, int]:
    """A copy of ``model`` with every conv -> BatchNorm pair folded into the conv (inference only).

    Why: an eval-mode BatchNorm is a per-channel affine map; folded into the preceding conv's weights and bias
    it costs nothing, where applied on its own it is a full read and write of every feature map (~7% of a
    lite0 forward on CPU). The fold is checked on ``example`` against the unfolded model and skipped (the
    model is returned unchanged) if it would change the output beyond float rounding.
    """
    from .deploy.fold import FoldError, fold_batchnorm

    if not any(isinstance(m, nn.BatchNorm1d) for m in model.modules()):
        return model, 0
    try:
        with torch.no_grad():
            folded, pairs = fold_batchnorm(model, example)
    except FoldError:
        return model, 0
    return folded.eval(), len(pairs)


@dataclass
class SegmentationResult:
    labels: np.ndarray                       # uint16 [N] raw SemanticKITTI ids, 0 = unlabeled
    confidence: np.ndarray | None            # float32 [N] softmax probability of the label (0 where unlabeled),
                                             # None unless segment(..., confidence=True)
    num_voxels: int
    num_valid_points: int
    timings_ms: dict[str, float] = field(default_factory=dict)


class SegmentationPipeline:
    """Preprocessing + network + postprocessing with per-stage timings.

    ``network`` maps a stride-1 SparseTensor to voxel logits; by default the PyTorch model runs, and the
    deploy backends (ONNX Runtime, TensorRT) plug in their own callable here.
    """

    def __init__(self, model: nn.Module | None, config: ModelConfig, raw_ids: list[int], *,
                 device: str = "auto", bounds: Bounds | None = None,
                 num_threads: int | None = None, network: Callable[[SparseTensor], Tensor] | None = None,
                 warmup: bool = True, fold_bn: bool = True) -> None:
        if model is None and network is None:
            raise ValueError("SegmentationPipeline needs a model or a network callable")
        self.device = resolve_device(device)
        if num_threads and self.device.type == "cpu":
            torch.set_num_threads(int(num_threads))
        self.config = config
        self.columns = [FEATURE_NAMES.index(f) for f in config.in_features]
        self.model = model.to(self.device).eval() if model is not None else None
        self.folded_bn = 0
        if self.model is not None and fold_bn:
            self.model, self.folded_bn = _fold_for_inference(self.model, self._example())
        self._network = network or self._torch_network
        self.bounds = bounds
        if len(raw_ids) != config.num_classes:
            raise ValueError(f"{len(raw_ids)} raw ids for {config.num_classes} classes")
        if not all(0 <= r < 2**15 for r in raw_ids):
            raise ValueError(f"raw label ids must be in [0, 32767], got {raw_ids}")
        self.raw_lut = torch.tensor(list(raw_ids) + [0], dtype=torch.int16, device=self.device)  # last: unlabeled
        self.class_raw_ids = list(raw_ids)
        if warmup:
            self.warmup()

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike | None = None, **kwargs) -> SegmentationPipeline:
        loaded: LoadedModel = load_model(path or DEMO_CHECKPOINT)
        return cls(loaded.model, loaded.config, loaded.raw_ids, **kwargs)

    def _torch_network(self, x: SparseTensor) -> Tensor:
        return self.model(x)

    @staticmethod
    def _synthetic_points() -> Tensor:
        """A fixed random box of x, y, z, intensity points (warm-up and the BatchNorm-folding check)."""
        g = torch.Generator().manual_seed(0)
        scale, shift = torch.tensor([20.0, 20.0, 2.0, 1.0]), torch.tensor([10.0, 10.0, 1.5, 0.0])
        return torch.rand(4096, 4, generator=g) * scale - shift

    def _example(self) -> SparseTensor:
        pts = self._synthetic_points().to(self.device)[:, self.columns]
        vox = voxelize(pts, self.config.voxel_size)
        return SparseTensor(vox.feats, vox.coords)

    def warmup(self) -> None:
        """One pass on a synthetic scan so the first real frame does not pay for allocator/kernels warm-up."""
        self.segment(self._synthetic_points().numpy())

    @torch.inference_mode()
    def segment(self, points: np.ndarray | Tensor, confidence: bool = False) -> SegmentationResult:
        """Label every point of ``points`` ``[N, >=3]`` (columns x, y, z[, intensity]); returns raw ids.

        ``confidence=True`` also returns each point's softmax probability of its label (costs a softmax
        over all voxel logits, ~2 ms on a full scan, so it is off unless asked for).
        """
        timings: dict[str, float] = {}
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        t0 = time.perf_counter()
        pts = torch.as_tensor(points)
        if pts.dim() != 2 or pts.shape[1] < 3:
            raise ValueError(f"points must be [N, >=3] (x, y, z[, intensity]), got shape {tuple(pts.shape)}")
        if max(self.columns) >= pts.shape[1]:
            raise ValueError(f"the model needs features {self.config.in_features}, points have {pts.shape[1]} columns")
        n = pts.shape[0]
        pts = pts.to(self.device, torch.float32, non_blocking=True)
        if self.columns != list(range(len(self.columns))) or pts.shape[1] != len(self.columns):
            pts = pts[:, self.columns]
        vox = voxelize(pts, self.config.voxel_size, bounds=self.bounds, nonfinite="mask")
        sync()
        t1 = time.perf_counter()
        timings["voxelize"] = (t1 - t0) * 1e3
        labels = torch.zeros(n, dtype=torch.int16, device=self.device)
        conf = torch.zeros(n, device=self.device) if confidence else None
        num_valid = 0
        t2 = t1
        if vox.num_voxels:
            x = SparseTensor(vox.feats, vox.coords)
            logits = self._network(x)
            sync()
            t2 = time.perf_counter()
            kmap_ms = getattr(x.cache, "build_ms", None)
            if kmap_ms is not None:  # maps are built lazily inside the forward: report them apart
                timings["kernel_maps"] = float(kmap_ms)
            timings["network"] = (t2 - t1) * 1e3 - timings.get("kernel_maps", 0.0)
            # Raw id per voxel, plus one trailing "unlabeled" entry that dropped points (inverse == -1) index
            # by wrap-around: one gather over the points instead of a where/clamp/lookup chain.
            voxel_raw = torch.cat([self.raw_lut.index_select(0, logits.argmax(dim=1)), self.raw_lut[-1:]])
            labels = voxel_raw[vox.inverse]
            valid = vox.inverse >= 0
            if confidence:
                # max softmax probability = 1 / sum(exp(logit - max logit))
                best = logits.max(dim=1).values
                prob = 1.0 / torch.exp(logits.float() - best.float().unsqueeze(1)).sum(dim=1)
                conf = torch.cat([prob, prob.new_zeros(1)])[vox.inverse]
            num_valid = int(valid.sum())
        else:
            timings["network"] = 0.0
        # int16 holds every raw id (< 2**15); the numpy view reinterprets it as the uint16 the label field needs.
        out_labels = labels.cpu().numpy().view(np.uint16)
        out_conf = conf.float().cpu().numpy() if conf is not None else None
        t3 = time.perf_counter()
        timings["devoxelize"] = (t3 - t2) * 1e3
        timings["total"] = (t3 - t0) * 1e3
        return SegmentationResult(out_labels, out_conf, vox.num_voxels, num_valid, timings)
