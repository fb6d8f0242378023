"""Per-scan latency of the inference backends: torch eager vs ONNX Runtime (CPU), + torch CUDA / TensorRT on a GPU.

Every backend runs inside the same :class:`~i2p_ros.pipeline.SegmentationPipeline` (what the node runs), so
the stages are comparable: ``preprocessing`` = voxelize + kernel maps (for the deploy backends: every
neighbour table of the graph, built by the PyTorch engine), ``network`` = the network proper (ONNX Runtime:
``session.run`` incl. handing over the tables), ``devoxelize`` = classes -> every point -> raw ids.

Input: ray-cast HDL-64E street scans (``--azimuth-steps 2200`` ~ 120k points), cycled. Model: ``--model``
(lite0 default) with untrained weights (speed does not depend on them), exported to a temporary ONNX file
(fp32) first. The machine is shared, so the backends run interleaved (scan i: torch, onnxruntime, ...) and
the 1-minute load average is sampled before every round and reported.

    python benchmarks/backends.py [--runs 20] [--model lite0] [--threads 2] [--out benchmarks/results/backends.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, load_average, machine_info, write_json  # noqa: E402

from i2p_ros.data.labels import load_label_config  # noqa: E402
from i2p_ros.deploy.export import example_scan, export_model  # noqa: E402
from i2p_ros.models.build import build_model, load_model_config  # noqa: E402
from i2p_ros.pipeline import SegmentationPipeline  # noqa: E402

BOUNDS = ((-51.2, -51.2, -4.0), (51.2, 51.2, 4.4))


def stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "n": int(a.size)}


def split(t: dict[str, float]) -> dict[str, float]:
    pre = t.get("voxelize", 0.0) + t.get("kernel_maps", 0.0)
    return {"voxelize": t.get("voxelize", 0.0), "kernel_maps": t.get("kernel_maps", 0.0), "preprocessing": pre,
            "network": t.get("network", 0.0), "devoxelize": t.get("devoxelize", 0.0), "total": t["total"]}


def make_pipelines(args, onnx_path: Path, model, cfg, raw) -> dict[str, SegmentationPipeline]:
    from i2p_ros.deploy.ort_backend import OrtNetwork

    pipes = {
        "torch-cpu": SegmentationPipeline(model, cfg, raw, device="cpu", bounds=BOUNDS, num_threads=args.threads,
                                          warmup=False),
        "onnxruntime-cpu": SegmentationPipeline(None, cfg, raw, device="cpu", bounds=BOUNDS,
                                                num_threads=args.threads, warmup=False,
                                                network=OrtNetwork(onnx_path, device="cpu",
                                                                   num_threads=args.threads)),
    }
    if torch.cuda.is_available() and not args.cpu_only:
        import copy

        pipes["torch-cuda"] = SegmentationPipeline(copy.deepcopy(model), cfg, raw, device="cuda", bounds=BOUNDS,
                                                   warmup=False)
        from i2p_ros.deploy.trt_backend import TrtNetwork, TrtSettings, trt_unavailable_reason

        reason = trt_unavailable_reason()
        if reason is None:
            net = TrtNetwork(onnx_path, device="cuda", settings=TrtSettings(fp16=True))
            pipes["tensorrt-fp16"] = SegmentationPipeline(None, cfg, raw, device="cuda", bounds=BOUNDS,
                                                          warmup=False, network=net)
        else:
            print(f"TensorRT row skipped: {reason}")
    return pipes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="lite0", help="model config (lite0, r18)")
    ap.add_argument("--runs", type=int, default=20, help="measured rounds (each runs every backend once)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--scans", type=int, default=3, help="distinct simulated scans, cycled")
    ap.add_argument("--azimuth-steps", type=int, default=2200, help="columns per revolution (2200 ~ 120k points)")
    ap.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads (CPU)")
    ap.add_argument("--cpu-only", action="store_true", help="skip the GPU rows even when CUDA is present")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "backends.json")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_model_config(args.model)
    model, _ = build_model(cfg, prior="none")
    model.eval()
    lc = load_label_config()
    raw = [int(r) for r in lc.train_to_raw_lut[: lc.num_classes]]
    scans = [example_scan(args.azimuth_steps, seed=11, index=i) for i in range(args.scans)]
    print(f"backends benchmark: {args.model} (untrained), {args.threads} threads, {len(scans)} scans of "
          f"{np.mean([len(s) for s in scans]):.0f} points; load average {load_average()[0]:.2f} "
          f"on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / f"{args.model}.onnx"
        t0 = time.perf_counter()
        export_model(model, cfg, lc.class_names, raw, onnx_path)
        print(f"exported {onnx_path.name} in {time.perf_counter() - t0:.1f} s", flush=True)
        pipes = make_pipelines(args, onnx_path, model, cfg, raw)
        samples: dict[str, list[dict[str, float]]] = {k: [] for k in pipes}
        loads, voxels = [], []
        for r in range(args.warmup + args.runs):
            pts = scans[r % len(scans)]
            load = load_average()[0]
            for name, pipe in pipes.items():
                res = pipe.segment(pts)
                if r >= args.warmup:
                    samples[name].append(split(res.timings_ms))
            if r >= args.warmup:
                loads.append(load)
                voxels.append(res.num_voxels)
                line = ", ".join(f"{k} {v[-1]['total']:.0f}" for k, v in samples.items())
                print(f"  round {r + 1 - args.warmup}/{args.runs} (load {load:.2f}): {line} ms", flush=True)

    stages = ("preprocessing", "voxelize", "kernel_maps", "network", "devoxelize", "total")
    result = {name: {st: stats([s[st] for s in rows]) for st in stages} for name, rows in samples.items()}
    base = result["torch-cpu"]["total"]["median"]
    rows = []
    for name, r in result.items():
        rows.append([name, r["preprocessing"]["median"], r["preprocessing"]["p95"], r["kernel_maps"]["median"],
                     r["network"]["median"], r["network"]["p95"], r["total"]["median"], r["total"]["p95"],
                     base / r["total"]["median"]])
    header = ["backend", "pre med", "pre p95", "(kmaps med)", "net med", "net p95", "total med", "total p95",
              "speed-up vs torch-cpu"]
    print()
    print(format_table(header, rows))
    print(f"ms per scan; {np.mean([len(s) for s in scans]):.0f} points, {np.mean(voxels):.0f} voxels; "
          f"load average during the run: median {np.median(loads):.2f}, max {np.max(loads):.2f} "
          f"on {os.cpu_count()} cores")
    payload = {"benchmark": "backends", "model": f"{args.model}-untrained", "threads": args.threads,
               "runs": args.runs, "warmup": args.warmup, "points_mean": float(np.mean([len(s) for s in scans])),
               "voxels_mean": float(np.mean(voxels)), "stages_ms": result,
               "speedup_total_vs_torch_cpu": {k: base / v["total"]["median"] for k, v in result.items()},
               "load_average_per_round": loads, "machine": machine_info(),
               "onnxruntime": __import__("onnxruntime").__version__}
    path = write_json(args.out, payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
