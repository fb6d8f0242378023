"""What every deploy runner shares: opening a model file clearly, and turning a runner into a pipeline.

A runner (ONNX Runtime, TensorRT) is a callable ``SparseTensor -> voxel logits`` — the pipeline's
``network`` plug-in. Around it, the pipeline is rebuilt from the file's metadata alone (model config, label
map), and the file is refused at start when it contradicts the node's configuration (voxel size is checked
by :func:`i2p_ros.ros.backends.create_pipeline`; the classes / label map here).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..pipeline import SegmentationPipeline
from ..sparse import SparseTensor
from .metadata import DeployError, ExportMetadata, check_label_config

__all__ = ["build_tables", "check_model_file", "pipeline_for", "label_config_for"]


def check_model_file(path: str | Path, backend: str) -> Path:
    """A readable file that is not a PyTorch checkpoint (those need ``i2p-export`` first)."""
    path = Path(path)
    if not path.is_file():
        raise DeployError(f"ONNX model {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):  # torch.save's zip container
        raise DeployError(f"{path} is a PyTorch checkpoint, but backend {backend!r} needs an exported ONNX file: "
                          f"run  i2p-export --checkpoint {path} --out {path.with_suffix('.onnx')}  and set "
                          "'checkpoint' to the .onnx file (or use backend torch)")
    return path


def build_tables(meta: ExportMetadata, x: SparseTensor) -> dict[str, Tensor]:
    """The graph's neighbour tables for scan ``x`` (on its device), by input name in graph order.

    All of their build time (maps and tables) is recorded as ``x.cache.build_ms``, which the pipeline
    reports as the ``kernel_maps`` stage, apart from the network.
    """
    t0 = time.perf_counter()
    tables = meta.recipe.build(x)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    x.cache.build_ms = (time.perf_counter() - t0) * 1e3
    return tables


def label_config_for(request: Any):
    """The label config the node colours and publishes with (``request.label_config``, else the package's)."""
    from ..data.labels import load_label_config

    path = getattr(request, "label_config", "") or None
    try:
        return load_label_config(path)
    except (OSError, ValueError) as err:
        raise DeployError(f"label config: {err}") from err


def pipeline_for(network: Callable[[SparseTensor], Tensor], meta: ExportMetadata, request: Any,
                 source: str, device: str) -> SegmentationPipeline:
    """The shared pipeline around a runner; refuses a model whose classes differ from the label config."""
    check_label_config(meta, label_config_for(request), source)
    return SegmentationPipeline(None, meta.model_config, meta.raw_ids, network=network, device=device,
                                bounds=request.bounds, num_threads=request.num_threads or None,
                                warmup=request.warmup)
