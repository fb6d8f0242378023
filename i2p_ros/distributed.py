"""Process-group setup for ``torchrun`` (DDP) and the sparse SyncBatchNorm.

The same command runs on one CPU or many GPUs: without ``WORLD_SIZE`` in the environment nothing is
initialised; under ``torchrun`` the backend is NCCL on CUDA and gloo on CPU, and each rank takes the
GPU ``LOCAL_RANK``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .sparse import BatchNorm, SparseTensor

__all__ = ["DistInfo", "init_distributed", "cleanup", "SparseSyncBatchNorm", "convert_sync_batchnorm"]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device cuda requested but CUDA is not available")
        dev = torch.device("cuda", local if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class SparseSyncBatchNorm(nn.SyncBatchNorm):
    """``nn.SyncBatchNorm`` over SparseTensor features: statistics over the voxels of every rank."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(super().forward(x.feats))


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """Replace every sparse ``BatchNorm`` by :class:`SparseSyncBatchNorm` with the same state."""
    if isinstance(module, BatchNorm):
        sync = SparseSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats, process_group)
        sync.load_state_dict(module.state_dict())
        for p_new, p_old in zip(sync.parameters(), module.parameters()):
            p_new.requires_grad_(p_old.requires_grad)
        sync.train(module.training)
        return sync
    for name, child in module.named_children():
        new = convert_sync_batchnorm(child, process_group)
        if new is not child:
            setattr(module, name, new)
    return module
