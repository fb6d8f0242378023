"""Sparse 3D convolution engine (PyTorch, CPU and CUDA) with torchsparse-compatible conventions.

Conventions (DESIGN.md §2): coords int32 ``[N, 4]`` = (batch, x, y, z) in finest-voxel units, multiples of the
tensor ``stride``; conv weights ``[K, Cin, Cout]`` (depthwise ``[K, C]``) in torchsparse's offset order
(:func:`i2p_ros.sparse.kmap.kernel_offsets`); converters to dense/spconv layouts in :mod:`.layout`.

Pipeline: ``voxelize(points, 0.05)`` -> ``Voxelized.to_sparse()`` -> modules (``Conv3d``, ``BatchNorm``, ``ReLU``,
``cat``...) -> per-voxel output -> ``Voxelized.to_points(...)`` for every input point.

Execution: ``"scatter"`` (default; gather -> mm -> block-wise embedding_bag reduce, custom autograd) or
``"gather"`` (neighbour table ``[N_out, K]`` -> Gather/MatMul/Add only, for ONNX), chosen per module
(``Conv3d(strategy=...)``) or globally (:func:`set_strategy`, ``with strategy("gather"):``).

Export: run the network once in ``strategy("gather")``; ``x.cache.neighbour_tables()`` then holds every
neighbour table by deterministic name (``sub_c0_k3_d1``, ``down_c0_k2_s2_d1``, ``up_c1_k2_s2_d1``...) in order of
first use, and ``x.cache.coord_sets`` the coordinate sets. Tracing with
``SparseTensor(feats, coords, cache=KernelMapCache.preload(tables, coord_sets))`` makes the tables graph inputs:
nothing is built inside the graph.
"""

from .cache import KernelMapCache
from .conv import Conv3d
from .functional import get_strategy, set_strategy, strategy
from .norm import BatchNorm, LeakyReLU, ReLU, ReLU6, SiLU
from .pool import GlobalPool, global_pool
from .tensor import SparseTensor, cat, sparse_collate
from .voxelize import Voxelized, collate_voxelized, voxelize

__all__ = [
    "BatchNorm", "Conv3d", "GlobalPool", "KernelMapCache", "LeakyReLU", "ReLU", "ReLU6", "SiLU",
    "SparseTensor", "Voxelized", "cat", "collate_voxelized", "get_strategy", "global_pool", "set_strategy",
    "sparse_collate", "strategy", "voxelize",
]
