"""ONNX Runtime backend: runs an ``i2p-export`` file as the pipeline's network (``backend: onnxruntime``).

Per scan, the neighbour tables are built by the PyTorch engine on the scan's device from the recipe in the
file (:mod:`.tables`), then ONNX Runtime runs the graph: the CPU provider with ``num_threads`` intra-op
threads (no spin-waiting, so the PyTorch preprocessing between runs keeps its cores), or the CUDA provider
with device buffers bound in place (I/O binding on the torch CUDA tensors, no host copies).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..pipeline import SegmentationPipeline, resolve_device
from ..ros.backends import PipelineRequest, register_backend
from ..sparse import SparseTensor
from .metadata import FEATS_INPUT, LOGITS_OUTPUT, DeployError, ExportMetadata
from .runtime import build_tables, check_model_file, pipeline_for

__all__ = ["OrtNetwork", "create_ort_pipeline", "ort_device"]


def _ort():
    try:
        import onnxruntime
    except ImportError as err:
        raise DeployError("backend 'onnxruntime' needs the onnxruntime package (pip install onnxruntime, or "
                          "onnxruntime-gpu for the CUDA provider)") from err
    return onnxruntime


def ort_device(device: str) -> torch.device:
    """``auto`` -> CUDA only when both torch and ONNX Runtime's CUDA provider have it; ``cuda`` must have both."""
    ort = _ort()
    has_ep = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and has_ep else "cpu")
    dev = resolve_device(device)
    if dev.type == "cuda" and not has_ep:
        raise DeployError(f"device {device!r} requested but this onnxruntime has no CUDAExecutionProvider "
                          f"(providers: {ort.get_available_providers()}); install onnxruntime-gpu or use device cpu")
    return dev


class OrtNetwork:
    """``SparseTensor -> logits`` through an exported ONNX file (the pipeline's ``network`` callable)."""

    def __init__(self, path: str | Path, *, device: str | torch.device = "cpu", num_threads: int = 2,
                 spinning: bool = False) -> None:
        ort = _ort()
        self.path = check_model_file(path, "onnxruntime")
        self.device = torch.device(device)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(num_threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_mem_pattern = False  # every scan has other shapes: a memory plan per shape is wasted
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        opts.log_severity_level = 3
        if self.device.type == "cuda":
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self.device = torch.device("cuda", index)
            providers: list = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
            raise DeployError(f"ONNX model {self.path} is corrupt or not an ONNX file (onnxruntime could not "
                              f"load it): {err}") from err
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = ExportMetadata.from_props(props, str(self.path))
        self.meta.check_graph([(i.name, list(i.shape)) for i in self.session.get_inputs()],
                              [(o.name, list(o.shape)) for o in self.session.get_outputs()], str(self.path))
        self.num_classes = self.meta.model_config.num_classes

    def tables(self, x: SparseTensor) -> dict[str, Tensor]:
        """The graph's neighbour tables for this scan (built in ``x.cache`` on ``x``'s device)."""
        return build_tables(self.meta, x)

    def __call__(self, x: SparseTensor) -> Tensor:
        tables = self.tables(x)
        if self.device.type == "cuda":
            return self._run_cuda(x, tables)
        feeds = {FEATS_INPUT: x.feats.detach().float().cpu().contiguous().numpy()}
        for name, t in tables.items():
            feeds[name] = t.detach().cpu().contiguous().numpy()
        out = self.session.run([LOGITS_OUTPUT], feeds)[0]
        return torch.from_numpy(out).to(x.device)

    def _run_cuda(self, x: SparseTensor, tables: dict[str, Tensor]) -> Tensor:
        """I/O binding on the torch CUDA tensors: ONNX Runtime reads and writes them in place."""
        dev = self.device
        feats = x.feats.detach().to(dev, torch.float32).contiguous()
        keep = [feats]
        binding = self.session.io_binding()
        binding.bind_input(FEATS_INPUT, "cuda", dev.index, np.float32, tuple(feats.shape), feats.data_ptr())
        for name, t in tables.items():
            t = t.detach().to(dev, torch.int64).contiguous()
            keep.append(t)
            binding.bind_input(name, "cuda", dev.index, np.int64, tuple(t.shape), t.data_ptr())
        out = torch.empty((feats.shape[0], self.num_classes), dtype=torch.float32, device=dev)
        binding.bind_output(LOGITS_OUTPUT, "cuda", dev.index, np.float32, tuple(out.shape), out.data_ptr())
        torch.cuda.synchronize(dev)  # the tables were built on torch's stream; ONNX Runtime uses its own
        self.session.run_with_iobinding(binding)
        del keep
        return out


def create_ort_pipeline(request: PipelineRequest) -> SegmentationPipeline:
    """Backend factory for ``backend: onnxruntime`` (``checkpoint`` = the exported .onnx file)."""
    dev = ort_device(request.device)
    net = OrtNetwork(request.checkpoint, device=dev, num_threads=request.num_threads)
    return pipeline_for(net, net.meta, request, str(net.path), str(dev))


register_backend("onnxruntime", create_ort_pipeline)
