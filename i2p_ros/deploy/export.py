"""``i2p-export``: a checkpoint -> an ONNX graph that runs in ONNX Runtime and TensorRT with dynamic voxel counts.

    i2p-export --checkpoint CKPT --out model.onnx [--fp16] [--opset 17]

What the graph is: the network with every BatchNorm folded into its conv (:mod:`.fold`), traced with the
engine's *gather* strategy. Its inputs are the voxel features ``feats [N0, F]`` and every neighbour table
``[N_rows, K]`` (int64, missing neighbour -> the row count of the set it indexes), in the order
``metadata['inputs']`` gives; its output is ``logits [N0, classes]``. Coordinates never enter the graph:
the sizes of the coarse coordinate sets are the row counts of their tables (each a dynamic axis
``n<set>``), and the tables themselves are built in PyTorch before the graph (:mod:`.tables`), so the graph
holds only standard operators (Gather, MatMul, Add, Mul, Concat, Relu/Clip, Gemm). ``--fp16`` stores weights
and computes in float16 inside the graph; inputs and outputs stay float32.

After writing, the export is verified (unless ``--no-verify``): ONNX Runtime runs the file on a second,
differently sized simulated scan and its logits are compared with the eager PyTorch model.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

import i2p_ros

from ..checkpoint import CheckpointError, load_model
from ..models.build import FEATURE_NAMES, ModelConfig
from ..sparse import KernelMapCache, SparseTensor, strategy, voxelize
from .fold import fold_batchnorm
from .metadata import FEATS_INPUT, LOGITS_OUTPUT, DeployError, ExportMetadata, file_sha256
from .tables import record_recipe

__all__ = ["ALLOWED_OPS", "ExportResult", "VerifyResult", "example_scan", "export_model", "export_checkpoint",
           "verify_export", "main"]

log = logging.getLogger("i2p_ros.export")

# Operators an exported graph may contain (a test and the exporter enforce it): standard ONNX only, nothing
# data-dependent (no NonZero/Scatter/Loop/Unique), so ONNX Runtime and TensorRT both run it with dynamic N.
ALLOWED_OPS = frozenset({"Gather", "MatMul", "Gemm", "Add", "Mul", "Concat", "Relu", "Clip", "Cast", "Constant",
                         "Identity", "Shape", "ConstantOfShape", "Unsqueeze", "Reshape", "Slice", "Squeeze"})
DEFAULT_OPSET = 17
DEFAULT_EXAMPLE_AZIMUTH_STEPS = 24   # ~1.3k points: tracing cost grows with the example, the graph does not
PROFILE_AZIMUTH_STEPS = 2200         # ~120k points: a full HDL-64E revolution


@dataclass
class VerifyResult:
    num_points: int
    num_voxels: int
    max_abs_diff: float
    max_abs_logit: float
    label_agreement: float       # fraction of voxels whose argmax class is identical


@dataclass
class ExportResult:
    path: Path
    metadata: ExportMetadata
    ops: dict[str, int]
    export_s: float
    verify: VerifyResult | None = None


def example_scan(azimuth_steps: int = DEFAULT_EXAMPLE_AZIMUTH_STEPS, seed: int = 7, index: int = 0) -> np.ndarray:
    """A simulated HDL-64E street scan ``[N, 4]`` (x, y, z, intensity); ``azimuth_steps`` sets its size."""
    from ..data.raycast import SensorConfig
    from ..data.street import generate_drive

    sensor = dataclasses.replace(SensorConfig(), azimuth_steps=azimuth_steps)
    return generate_drive(index + 1, seed=seed, sequence=0, sensor=sensor).scan(index).points


def network_input(points: np.ndarray | Tensor, cfg: ModelConfig) -> SparseTensor:
    """Voxelize points the way the pipeline does (the model's feature columns and voxel size)."""
    pts = torch.as_tensor(points, dtype=torch.float32)
    cols = [FEATURE_NAMES.index(f) for f in cfg.in_features]
    vox = voxelize(pts[:, cols], cfg.voxel_size, nonfinite="mask")
    return SparseTensor(vox.feats, vox.coords)


class _GraphModule(nn.Module):
    """What gets traced: ``(feats, *tables) -> logits`` over a preloaded cache (no map building traced).

    The example's coordinate sets ride along only because the engine's tensors carry coordinates; in the
    gather strategy nothing reads them, so they do not appear in the graph (the exporter checks that no
    integer ``[*, 4]`` constant made it in).
    """

    def __init__(self, net: nn.Module, table_names: list[str], coord_sets: list[Tensor], dtype: torch.dtype) -> None:
        super().__init__()
        self.net = net
        self.table_names = list(table_names)
        self.coord_sets = list(coord_sets)
        self.dtype = dtype

    def forward(self, feats: Tensor, *tables: Tensor) -> Tensor:
        cache = KernelMapCache.preload(dict(zip(self.table_names, tables)), self.coord_sets)
        x = SparseTensor(feats.to(self.dtype), self.coord_sets[0], cache=cache)
        with strategy("gather"):
            logits = self.net(x)
        return logits.float()


@contextlib.contextmanager
def _torch_threads(n: int):
    """Run a block with ``n`` torch intra-op threads, then restore the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def export_model(model: nn.Module, config: ModelConfig, class_names: list[str], raw_ids: list[int],
                 out: str | Path, *, fp16: bool = False, opset: int = DEFAULT_OPSET,
                 example: SparseTensor | None = None, source_sha256: str = "",
                 inplace: bool = False, profile_points: np.ndarray | None = None) -> ExportResult:
    """Fold, trace and write ``model`` to ``out`` with its metadata; returns what was written (not verified).

    ``example`` (default: a small simulated scan) is what gets traced: the graph does not depend on its size,
    so a small one keeps the export fast. ``profile_points`` (default: a full-size simulated scan) only give
    the typical voxel counts of the coordinate sets (metadata ``set_sizes_example``, TensorRT's opt shapes);
    its tables are built by the recipe, the network never runs on it. ``inplace`` folds the BatchNorms into
    ``model`` itself (saves a copy of the weights; the model is then only good for export).

    Runs single-threaded: tracing a small example is thousands of tiny ops, for which intra-op threads only
    add synchronisation (on a loaded 2-core machine, 2 threads made the export >10x slower).
    """
    with _torch_threads(1):
        return _export(model, config, class_names, raw_ids, out, fp16, opset, example, source_sha256, inplace,
                       profile_points)


def _export(model: nn.Module, config: ModelConfig, class_names: list[str], raw_ids: list[int], out: str | Path,
            fp16: bool, opset: int, example: SparseTensor | None, source_sha256: str, inplace: bool,
            profile_points: np.ndarray | None) -> ExportResult:
    t0 = time.perf_counter()
    out = Path(out)
    model.eval()
    first = next(model.parameters(), None)
    if first is not None and (first.device.type != "cpu" or first.dtype != torch.float32):
        model = copy.deepcopy(model).float().cpu().eval()  # trace a float32 CPU copy; the caller's stays as is
        inplace = True
    if example is None:
        example = network_input(example_scan(DEFAULT_EXAMPLE_AZIMUTH_STEPS), config)
    example = SparseTensor(example.feats.float().cpu(), example.coords.cpu())
    with torch.no_grad():
        folded, pairs = fold_batchnorm(model, example, inplace=inplace)
        if fp16:
            folded = folded.half()
        dtype = torch.float16 if fp16 else torch.float32
        x = SparseTensor(example.feats.to(dtype), example.coords)
        _, recipe = record_recipe(folded, x)
    tables = x.cache.neighbour_tables()
    names = recipe.table_names
    if list(tables) != names:
        raise DeployError(f"export of {config.name}: recorded tables {names} differ from the cache's {list(tables)}")
    coord_sets = x.cache.coord_sets
    typical = network_input(example_scan(PROFILE_AZIMUTH_STEPS) if profile_points is None else profile_points,
                            config)
    recipe.build(typical)
    set_sizes = [int(c.shape[0]) for c in typical.cache.coord_sets]
    graph = _GraphModule(folded, names, coord_sets, dtype).eval()
    dynamic = {FEATS_INPUT: {0: "n0"}, LOGITS_OUTPUT: {0: "n0"}}
    for name, (rows, _) in recipe.table_sets.items():
        dynamic[name] = {0: f"n{rows}"}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints from shapes: sizes come from inputs
        torch.onnx.export(graph, (example.feats, *[tables[n] for n in names]), str(tmp),
                          input_names=[FEATS_INPUT, *names], output_names=[LOGITS_OUTPUT], dynamic_axes=dynamic,
                          opset_version=int(opset), do_constant_folding=True, dynamo=False)
    graph.eval()  # the legacy exporter restores training flags: keep the copy in eval
    meta = ExportMetadata(config, list(class_names), [int(r) for r in raw_ids], i2p_ros.__version__, recipe,
                          set_sizes, "fp16" if fp16 else "fp32", int(opset),
                          source_sha256, len(pairs))
    ops = _finish(tmp, out, meta, coord_sets)
    return ExportResult(out, meta, ops, time.perf_counter() - t0)


def _finish(tmp: Path, out: Path, meta: ExportMetadata, coord_sets: list[Tensor]) -> dict[str, int]:
    """Check the traced graph's operators and constants, attach the metadata, move it into place."""
    import onnx

    try:
        proto = onnx.load(str(tmp))
        ops: dict[str, int] = {}
        for node in proto.graph.node:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
        bad = sorted(set(ops) - ALLOWED_OPS)
        if bad:
            raise DeployError(f"export of {meta.model_name}: the graph contains operators {bad} outside the "
                              f"allowed set; the network uses something the gather export does not support")
        sizes = {int(c.shape[0]) for c in coord_sets}
        for init in proto.graph.initializer:
            if init.data_type in (onnx.TensorProto.INT32, onnx.TensorProto.INT64) and len(init.dims) == 2 \
                    and init.dims[1] == 4 and init.dims[0] in sizes:
                raise DeployError(f"export of {meta.model_name}: coordinates were baked into the graph as "
                                  f"constant {init.name!r}: the network reads coords, which the export cannot "
                                  "pass as inputs")
        del proto.metadata_props[:]
        for k, v in meta.to_props().items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        proto.producer_name = "i2p_ros"
        proto.producer_version = meta.engine_version
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return ops


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, fp16: bool = False,
                      opset: int = DEFAULT_OPSET,
                      example_azimuth_steps: int = DEFAULT_EXAMPLE_AZIMUTH_STEPS) -> ExportResult:
    loaded = load_model(checkpoint)
    example = network_input(example_scan(example_azimuth_steps), loaded.config)
    return export_model(loaded.model, loaded.config, loaded.class_names, loaded.raw_ids, out, fp16=fp16,
                        opset=opset, example=example, source_sha256=file_sha256(Path(checkpoint)), inplace=True)


def verify_export(path: str | Path, model: nn.Module, config: ModelConfig, points: np.ndarray,
                  num_threads: int = 2) -> VerifyResult:
    """Run the ONNX file with ONNX Runtime (CPU) and the eager model on ``points``; compare the logits."""
    from .ort_backend import OrtNetwork

    net = OrtNetwork(path, device="cpu", num_threads=num_threads)
    x = network_input(points, config)
    with torch.inference_mode():
        got = net(SparseTensor(x.feats, x.coords))
        ref = model.float().eval().cpu()(SparseTensor(x.feats, x.coords))
    diff = (got - ref).abs().max().item() if ref.numel() else 0.0
    agree = (got.argmax(1) == ref.argmax(1)).float().mean().item() if ref.numel() else 1.0
    return VerifyResult(len(points), int(x.coords.shape[0]), diff, ref.abs().max().item() if ref.numel() else 0.0,
                        agree)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i2p-export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="i2p_ros checkpoint (.pt)")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--fp16", action="store_true", help="float16 weights and compute inside the graph "
                   "(inputs/outputs stay float32); for GPUs")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--example-azimuth-steps", type=int, default=DEFAULT_EXAMPLE_AZIMUTH_STEPS,
                   help="size of the simulated example scan that is traced (columns per revolution; the graph "
                   "takes any size)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip running the file in ONNX Runtime against the eager model")
    p.add_argument("--verify-azimuth-steps", type=int, default=256,
                   help="size of the (different) simulated scan used for verification")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 7 <= args.opset <= 21:
        print(f"i2p-export: --opset {args.opset} unsupported (use 7..21; default {DEFAULT_OPSET})", file=sys.stderr)
        return 2
    try:
        result = export_checkpoint(args.checkpoint, args.out, fp16=args.fp16, opset=args.opset,
                                   example_azimuth_steps=args.example_azimuth_steps)
    except (CheckpointError, DeployError) as err:
        print(f"i2p-export: {err}", file=sys.stderr)
        return 1
    meta = result.metadata
    size_mb = result.path.stat().st_size / 2 ** 20
    print(f"wrote {result.path} ({size_mb:.1f} MB, {meta.precision}, opset {meta.opset}) in {result.export_s:.1f} s: "
          f"{meta.model_name}, {meta.model_config.num_classes} classes, voxel {meta.voxel_size} m, "
          f"{len(meta.table_names)} neighbour tables, {meta.bn_folded} BatchNorms folded")
    print("operators: " + ", ".join(f"{k} {v}" for k, v in sorted(result.ops.items())))
    if not args.no_verify:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            print("verification skipped: onnxruntime is not installed")
            return 0
        loaded = load_model(args.checkpoint)
        v = verify_export(result.path, loaded.model, loaded.config, example_scan(args.verify_azimuth_steps, seed=8))
        print(f"verified with ONNX Runtime on a {v.num_points}-point scan ({v.num_voxels} voxels): max |logit "
              f"difference| {v.max_abs_diff:.3g} (logits up to {v.max_abs_logit:.3g}), same class on "
              f"{100 * v.label_agreement:.3f}% of voxels")
        if meta.precision == "fp32" and v.label_agreement < 0.999:
            print("i2p-export: verification FAILED (fp32 export must agree on >= 99.9% of voxels)", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
