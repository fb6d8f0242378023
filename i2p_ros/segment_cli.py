"""``i2p-segment``: label KITTI ``.bin`` scans offline and write SemanticKITTI ``.label`` files (raw ids).

    i2p-segment --checkpoint model.pt --input sequences/08 --output predictions/08
    i2p-segment --input scan.bin --output scan.label

``--input`` is one ``.bin`` scan, a folder of ``.bin`` scans, or a sequence folder holding ``velodyne/``.
Each scan ``NNNNNN.bin`` gives ``OUTPUT/NNNNNN.label`` (semantic raw id in the low 16 bits, instance 0:
what the benchmark server and semantic-kitti-api read); a single scan with ``--output x.label`` is
written to that file. Preprocessing (range box, voxel size) defaults to the node's parameters, or
comes from ``--params-file`` (e.g. config/segment.yaml), so this tool labels exactly like the node.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .data.semantic_kitti import read_points, write_label_file
from .ros.backends import BackendError, PipelineRequest, create_pipeline, resolve_checkpoint
from .ros.params import NodeParams, ParamError, load_params_file

__all__ = ["find_scans", "main", "output_paths"]


def find_scans(path: Path) -> list[Path]:
    """The ``.bin`` scans an ``--input`` names, sorted; raises FileNotFoundError with the path."""
    if path.is_file():
        if path.suffix != ".bin":
            raise FileNotFoundError(f"{path} is not a .bin scan")
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"input {path} does not exist")
    folder = path / "velodyne" if (path / "velodyne").is_dir() else path
    scans = sorted(folder.glob("*.bin"))
    if not scans:
        raise FileNotFoundError(f"no .bin scans in {folder}")
    return scans


def output_paths(scans: list[Path], output: Path) -> list[Path]:
    """Where each scan's labels go: ``OUTPUT/<stem>.label``, or ``OUTPUT`` itself for one scan -> x.label."""
    if len(scans) == 1 and output.suffix == ".label":
        return [output]
    if output.is_file():
        raise FileExistsError(f"--output {output} is a file; give a folder for {len(scans)} scans")
    return [output / f"{s.stem}.label" for s in scans]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i2p-segment", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="model file (default: params file, else the demo model)")
    p.add_argument("--input", required=True, type=Path, help="scan.bin, a folder of .bin, or a sequence folder")
    p.add_argument("--output", required=True, type=Path, help="output folder (or x.label for a single scan)")
    p.add_argument("--params-file", type=Path, default=None,
                   help="node parameter YAML (config/segment.yaml) for backend, device, range and voxel size")
    p.add_argument("--backend", default=None, help="torch | onnxruntime | tensorrt (default: params)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: params)")
    p.add_argument("--num-threads", type=int, default=None, help="CPU threads (default: params)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _params(args: argparse.Namespace) -> NodeParams:
    values = load_params_file(args.params_file) if args.params_file else {}
    for key in ("checkpoint", "backend", "device", "num_threads"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    return NodeParams.from_mapping(values, source=str(args.params_file or "i2p-segment"))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        params = _params(args)
        scans = find_scans(args.input)
        outputs = output_paths(scans, args.output)
        request = PipelineRequest(resolve_checkpoint(params.checkpoint), device=params.device,
                                  num_threads=params.num_threads, bounds=params.bounds,
                                  voxel_size=params.voxel_size, warmup=False)
        pipeline = create_pipeline(params.backend, request)
    except (ParamError, BackendError, OSError) as err:
        print(f"i2p-segment: {err}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    t0, points = time.perf_counter(), 0
    for scan, out in tqdm(list(zip(scans, outputs, strict=True)), unit="scan", disable=args.quiet,
                          desc="i2p-segment"):
        xyzi = read_points(scan)
        write_label_file(out, pipeline.segment(xyzi).labels)
        points += len(xyzi)
    dt = time.perf_counter() - t0
    print(f"i2p-segment: {len(scans)} scans ({points / len(scans):.0f} points each) -> "
          f"{outputs[0].parent if len(outputs) > 1 else outputs[0]} in {dt:.1f} s "
          f"({1e3 * dt / len(scans):.0f} ms/scan) with {request.checkpoint.name} on {pipeline.device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
