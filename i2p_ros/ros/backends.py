"""Backend factory: parameters -> a ready :class:`~i2p_ros.pipeline.SegmentationPipeline`.

Every backend yields the same pipeline object (preprocessing, per-point labels, timings); a backend only
decides what runs the network. ``torch`` is built in; the deploy backends (``onnxruntime``,
``tensorrt``) plug in with :func:`register_backend` from their own module, which
:func:`create_pipeline` imports on first use. An unknown or unavailable backend is an error at start,
never at the first frame.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..pipeline import SegmentationPipeline, default_checkpoint_path

__all__ = ["BackendError", "PipelineRequest", "available_backends", "create_pipeline", "register_backend",
           "resolve_checkpoint"]


class BackendError(RuntimeError):
    """The model cannot be loaded as configured (message names the file / parameter)."""


@dataclass(frozen=True)
class PipelineRequest:
    """What a backend needs; built from the node parameters or the CLI flags."""

    checkpoint: Path
    device: str = "auto"
    num_threads: int = 2
    bounds: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    voxel_size: float = 0.0          # 0 = the checkpoint's; otherwise must match it
    warmup: bool = True
    label_config: str = ""           # the node's semantic-kitti.yaml ("" = the package's); exported models are
                                     # checked against it, since the node colours and publishes by it


BackendFactory = Callable[[PipelineRequest], SegmentationPipeline]

# name -> module that registers it when imported (the deploy package, when it exists)
_PLUGIN_MODULES = {"onnxruntime": "i2p_ros.deploy.ort_backend", "tensorrt": "i2p_ros.deploy.trt_backend"}


def _torch_backend(req: PipelineRequest) -> SegmentationPipeline:
    return SegmentationPipeline.from_checkpoint(req.checkpoint, device=req.device, bounds=req.bounds,
                                                num_threads=req.num_threads or None, warmup=req.warmup)


_REGISTRY: dict[str, BackendFactory] = {"torch": _torch_backend}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``backend: <name>`` available (called by the deploy modules at import)."""
    _REGISTRY[name] = factory


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """``""`` -> the shipped demo model; a missing file is a :class:`BackendError` that says what to do."""
    if str(checkpoint):
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise BackendError(f"checkpoint {path} does not exist (parameter 'checkpoint')")
        return path
    path = default_checkpoint_path()
    if not path.is_file():
        raise BackendError(f"no checkpoint given and the shipped demo model {path} is missing; set the "
                           "'checkpoint' parameter (or --checkpoint) to a model file, or reinstall i2p_ros")
    return path


def _factory(backend: str) -> BackendFactory:
    if backend not in _REGISTRY and backend in _PLUGIN_MODULES:
        module = _PLUGIN_MODULES[backend]
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise BackendError(f"backend {backend!r} is not available: importing {module} failed ({err}); "
                               f"available: {available_backends()}") from err
    if backend not in _REGISTRY:
        raise BackendError(f"unknown backend {backend!r}; available: {available_backends()}")
    return _REGISTRY[backend]


def create_pipeline(backend: str, request: PipelineRequest) -> SegmentationPipeline:
    """Build the pipeline, check it against the request (voxel size), then warm it up."""
    factory = _factory(backend)
    try:
        pipeline = factory(dataclasses.replace(request, warmup=False))
    except BackendError:
        raise
    except (ValueError, RuntimeError, OSError) as err:  # CheckpointError is a ValueError
        raise BackendError(f"backend {backend!r} could not load {request.checkpoint}: {err}") from err
    model_voxel = float(pipeline.config.voxel_size)
    if request.voxel_size and not math.isclose(request.voxel_size, model_voxel, rel_tol=1e-6):
        raise BackendError(f"parameter voxel_size = {request.voxel_size} m but {request.checkpoint} was trained "
                           f"with {model_voxel} m; set voxel_size to {model_voxel} (or 0 to take the model's)")
    if request.warmup:
        pipeline.warmup()
    return pipeline
