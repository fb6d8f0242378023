"""TensorRT backend (``backend: tensorrt``): builds an engine from an ``i2p-export`` file and runs it on CUDA.

* **Build**: ``trt.Builder`` + ``trt.OnnxParser`` over the ONNX file, one optimization profile whose
  min/opt/max shapes cover the configured voxel-count range for ``feats`` and for every neighbour table (each
  table's rows belong to one coordinate set; coarse sets get the range scaled by the ratio seen on the export
  example, see :func:`profile_shapes`), optional FP16 (``BuilderFlag.FP16``), ``build_serialized_network``.
* **Cache**: the serialized engine is stored under ``cache_dir`` keyed by GPU name and compute capability,
  TensorRT version, the ONNX file's SHA-256 and the build settings (:func:`engine_cache_key`), so a restart
  loads it in seconds instead of rebuilding for minutes; a corrupt cache entry is rebuilt.
* **Run**: the pipeline voxelizes and this runner builds the neighbour tables with the PyTorch engine on
  the same CUDA device; inputs and the output are torch CUDA tensors whose addresses go to
  ``set_tensor_address``; ``execute_async_v3`` runs on torch's current stream (no host copies, no extra sync).

Written against the TensorRT 10 Python API. Without the ``tensorrt`` package or without CUDA, creating the
backend raises :class:`~i2p_ros.deploy.metadata.DeployError` saying which is missing (the node stops at start
with that message); :func:`trt_unavailable_reason` gives the same text for tests to skip with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..pipeline import SegmentationPipeline
from ..ros.backends import PipelineRequest, register_backend
from ..sparse import SparseTensor
from .metadata import FEATS_INPUT, LOGITS_OUTPUT, DeployError, ExportMetadata, file_sha256, read_onnx_metadata
from .runtime import build_tables, check_model_file, pipeline_for

__all__ = ["TrtSettings", "TrtNetwork", "create_trt_pipeline", "engine_cache_key", "profile_shapes",
           "trt_unavailable_reason", "default_cache_dir"]

log = logging.getLogger("i2p_ros.tensorrt")


def default_cache_dir() -> Path:
    """``$I2P_ROS_TRT_CACHE``, else ``$XDG_CACHE_HOME/i2p_ros/tensorrt`` (``~/.cache/...``)."""
    env = os.environ.get("I2P_ROS_TRT_CACHE")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "i2p_ros" / "tensorrt"


@dataclass(frozen=True)
class TrtSettings:
    """Engine build settings. Voxel counts are of the network input (stride-1 voxels of one scan)."""

    min_voxels: int = 1
    opt_voxels: int | None = None  # None: the voxel count of a full simulated scan (metadata set_sizes_example)
    max_voxels: int = 200_000
    fp16: bool = True
    workspace_mb: int = 2048
    cache_dir: Path = field(default_factory=default_cache_dir)

    def __post_init__(self) -> None:
        opt = self.min_voxels if self.opt_voxels is None else self.opt_voxels
        if not 1 <= self.min_voxels <= opt <= self.max_voxels:
            raise ValueError(f"TensorRT profile needs 1 <= min_voxels <= opt_voxels <= max_voxels, got "
                             f"{self.min_voxels}, {self.opt_voxels}, {self.max_voxels}")
        if self.workspace_mb < 1:
            raise ValueError(f"workspace_mb must be >= 1, got {self.workspace_mb}")

    @classmethod
    def from_request(cls, request: Any) -> TrtSettings:
        """Settings from ``trt_*`` fields of the request when it has them (node parameters), else defaults."""
        d = cls()
        cache = getattr(request, "trt_cache_dir", "") or d.cache_dir
        opt = getattr(request, "trt_opt_voxels", d.opt_voxels)
        return cls(int(getattr(request, "trt_min_voxels", d.min_voxels)), int(opt) if opt else None,
                   int(getattr(request, "trt_max_voxels", d.max_voxels)),
                   bool(getattr(request, "trt_fp16", d.fp16)), int(getattr(request, "trt_workspace_mb",
                                                                            d.workspace_mb)),
                   Path(cache).expanduser())


def trt_unavailable_reason() -> str | None:
    """Why the TensorRT backend cannot run here (None when it can)."""
    if not torch.cuda.is_available():
        return "the TensorRT backend needs a CUDA GPU, and torch.cuda.is_available() is False on this machine"
    try:
        import tensorrt  # noqa: F401
    except ImportError as err:
        return f"the TensorRT backend needs the tensorrt Python package (TensorRT 10.x: pip install tensorrt): {err}"
    return None


def _trt():
    reason = trt_unavailable_reason()
    if reason is not None:
        raise DeployError(f"backend 'tensorrt' is not available: {reason}")
    import tensorrt

    return tensorrt


def profile_shapes(meta: ExportMetadata, settings: TrtSettings) -> dict[str, tuple[tuple[int, ...], ...]]:
    """``input name -> (min, opt, max)`` shapes of the optimization profile.

    Rows of a table live on one coordinate set. Set 0 takes the configured voxel range (opt defaults to the
    voxel count of the typical full scan the export measured); a coarse set ``s`` takes it scaled by ``r_s`` =
    its size / set 0's size on that scan (opt), with min 1 and max ``ceil(max_voxels * max(1, r_s))``
    (floor-site downsampling never grows a set, so r_s <= 1 in our models).
    """
    sizes = meta.set_sizes_example or [1]
    n0 = max(int(sizes[0]), 1)
    opt0 = settings.opt_voxels if settings.opt_voxels is not None else n0
    opt0 = min(max(opt0, settings.min_voxels), settings.max_voxels)
    ranges: dict[int, tuple[int, int, int]] = {}
    for s, n in enumerate(sizes):
        r = n / n0
        if s == 0:
            ranges[0] = (settings.min_voxels, opt0, settings.max_voxels)
        else:
            mx = math.ceil(settings.max_voxels * max(1.0, r))
            ranges[s] = (1, min(max(1, round(opt0 * r)), mx), mx)
    feats = len(meta.in_features)
    out: dict[str, tuple[tuple[int, ...], ...]] = {
        FEATS_INPUT: tuple((n, feats) for n in ranges[0])}  # type: ignore[misc]
    for step in meta.recipe.steps:
        if step.out_set not in ranges:
            raise DeployError(f"table recipe refers to coordinate set c{step.out_set}, but the metadata lists "
                              f"{len(sizes)} example set sizes")
        k = step.kernel_size ** 3
        for name in step.tables:
            out[name] = tuple((n, k) for n in ranges[step.out_set])  # type: ignore[misc]
    return out


def engine_cache_key(onnx_sha256: str, gpu: str, trt_version: str, settings: TrtSettings) -> str:
    """Hex key of an engine: same ONNX, GPU, TensorRT and build settings -> same engine file."""
    build = {k: v for k, v in asdict(settings).items() if k != "cache_dir"}
    text = json.dumps({"onnx": onnx_sha256, "gpu": gpu, "tensorrt": trt_version, "build": build}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_engine(trt, onnx_path: Path, meta: ExportMetadata, settings: TrtSettings, logger) -> bytes:
    """Parse the ONNX file and build a serialized engine with one optimization profile."""
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DeployError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_mb) << 20)
    if settings.fp16:  # lets TensorRT pick fp16 kernels where faster (I/O stays as the ONNX file declares)
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes(meta, settings).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DeployError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    return bytes(serialized)


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
             trt.int64: torch.int64, trt.bool: torch.bool, trt.int8: torch.int8}
    if dtype not in table:
        raise DeployError(f"unsupported TensorRT I/O dtype {dtype}")
    return table[dtype]


class TrtNetwork:
    """``SparseTensor -> logits`` through a TensorRT engine built (or loaded from cache) for an export."""

    def __init__(self, path: str | Path, *, device: str | torch.device = "cuda",
                 settings: TrtSettings | None = None) -> None:
        trt = _trt()
        self.trt = trt
        self.path = check_model_file(path, "tensorrt")
        self.settings = settings or TrtSettings()
        dev = torch.device(device)
        if dev.type != "cuda":
            raise DeployError(f"backend 'tensorrt' runs on a CUDA device, got device {str(device)!r}")
        self.device = torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
        self.meta, _ = read_onnx_metadata(self.path)
        self.logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self.runtime = trt.Runtime(self.logger)
            self.engine_path, self.engine = self._load_or_build()
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if sorted(inputs) != sorted(self.meta.inputs) or LOGITS_OUTPUT not in names:
            raise DeployError(f"engine {self.engine_path}: I/O tensors {names} do not match the metadata of "
                              f"{self.path} (inputs {self.meta.inputs}, output {LOGITS_OUTPUT!r})")
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}

    def _load_or_build(self) -> tuple[Path, Any]:
        """The cached engine for this file, GPU, TensorRT and settings; built (minutes) and cached if absent."""
        trt = self.trt
        props = torch.cuda.get_device_properties(self.device)
        gpu = f"{props.name} sm_{props.major}{props.minor}"
        key = engine_cache_key(file_sha256(self.path), gpu, trt.__version__, self.settings)
        engine_path = self.settings.cache_dir / f"{self.meta.model_name}-{key[:20]}.engine"
        if engine_path.is_file():
            engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
            if engine is not None:
                log.info("loaded TensorRT engine %s", engine_path)
                return engine_path, engine
            log.warning("cached TensorRT engine %s is unreadable; rebuilding", engine_path)
        log.warning("building a TensorRT engine for %s on %s (TensorRT %s, fp16=%s); this takes minutes once, "
                    "then it is cached in %s", self.path, gpu, trt.__version__, self.settings.fp16, engine_path)
        blob = build_engine(trt, self.path, self.meta, self.settings, self.logger)
        _write_atomic(engine_path, blob)
        engine = self.runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise DeployError(f"TensorRT could not load the engine {engine_path} it built from {self.path}")
        return engine_path, engine

    def __call__(self, x: SparseTensor) -> Tensor:
        n = int(x.coords.shape[0])
        if not self.settings.min_voxels <= n <= self.settings.max_voxels:
            raise DeployError(f"{n} voxels is outside the TensorRT engine's profile [{self.settings.min_voxels}, "
                              f"{self.settings.max_voxels}] (raise trt_max_voxels / lower trt_min_voxels)")
        if x.device != self.device:
            raise DeployError(f"scan tensors are on {x.device}, the TensorRT engine on {self.device}")
        tables = build_tables(self.meta, x)  # PyTorch engine, on the engine's CUDA device
        feeds = {FEATS_INPUT: x.feats, **tables}
        keep = []
        ctx = self.context
        for name, t in feeds.items():
            t = t.detach().to(self.dtypes[name]).contiguous()
            keep.append(t)
            if not ctx.set_input_shape(name, tuple(t.shape)):
                raise DeployError(f"TensorRT rejected shape {tuple(t.shape)} for input {name!r}")
            ctx.set_tensor_address(name, t.data_ptr())
        out = torch.empty(tuple(ctx.get_tensor_shape(LOGITS_OUTPUT)), dtype=self.dtypes[LOGITS_OUTPUT],
                          device=self.device)
        ctx.set_tensor_address(LOGITS_OUTPUT, out.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise DeployError(f"TensorRT execution failed for {self.path} ({n} voxels)")
        out = out.float()
        for t in keep:  # the inputs must outlive the enqueued work on this stream
            t.record_stream(stream)
        return out


def create_trt_pipeline(request: PipelineRequest) -> SegmentationPipeline:
    """Backend factory for ``backend: tensorrt`` (``checkpoint`` = the exported .onnx file)."""
    _trt()
    device = "cuda" if request.device == "auto" else request.device
    net = TrtNetwork(request.checkpoint, device=device, settings=TrtSettings.from_request(request))
    return pipeline_for(net, net.meta, request, str(net.path), str(net.device))


register_backend("tensorrt", create_trt_pipeline)
