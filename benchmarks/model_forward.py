"""Whole-network speed on CPU: an inflated segmentation model on one simulated full scan.

Measures, with ``torch.set_num_threads(2)`` and the median over all timed runs:

* ``infer``: ``model.eval()`` forward under ``torch.inference_mode()`` with a fresh kernel-map cache (what the
  node pays per scan: kernel maps, execution plans and the network);
* ``infer (maps cached)``: the same forward reusing the first forward's cache (the network alone), so
  ``infer - infer (maps cached)`` is the coordinate-only work (maps + plans); ``kmap`` is ``cache.build_ms``;
* ``train``: ``model.train()`` forward + backward of a fixed random linear loss with a fresh cache;
* a per-module breakdown of ``infer`` (forward hooks on modules up to depth 3, a separate pass).

Comparing implementations: ``--baseline-src DIR`` names a source tree whose ``i2p_ros`` package is the
implementation to compare against (e.g. a copy of the package with the previous ``sparse/``). Both are run in
worker subprocesses (``PYTHONPATH`` decides which package is imported), alternating A, B, A, B, ... for
``--rounds`` rounds so that load from other users of the machine hits both alike; ratios are baseline /
current. The workers also save the logits, and the table reports their largest difference.

    .venv/bin/python benchmarks/model_forward.py [--config lite0] [--set encoder.stages=5 ...]
        [--scan /tmp/sim1/sequences/00/velodyne/000000.bin] [--repeats 5] [--rounds 3]
        [--baseline-src DIR] [--out benchmarks/results/model_forward.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from _common import format_table, load_average, machine_info, write_json  # noqa: E402

DEFAULT_SCAN = "/tmp/sim1/sequences/00/velodyne/000000.bin"


# ------------------------------------------------------------------------------------------------ worker
def _worker(args: argparse.Namespace) -> None:
    """Time one implementation (whichever ``i2p_ros`` is importable) and print a JSON record."""
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from i2p_ros.models.build import build_model, load_model_config  # noqa: PLC0415
    from i2p_ros.sparse import SparseTensor, voxelize  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pts = torch.from_numpy(np.fromfile(args.scan, np.float32).reshape(-1, 4))
    cfg = load_model_config(args.config, args.set)
    model, _ = build_model(cfg, prior="none")
    v = voxelize(pts, cfg.voxel_size)
    g = torch.Generator().manual_seed(1)

    def fresh() -> SparseTensor:
        return SparseTensor(v.feats, v.coords)

    res: dict[str, object] = {"voxels": int(v.num_voxels), "points": int(pts.shape[0]),
                              "sparse_module": __import__("i2p_ros.sparse", fromlist=["x"]).__file__}
    model.eval()
    infer, cached, kmap = [], [], []
    with torch.inference_mode():
        x0 = fresh()
        logits = model(x0)  # warm-up; its cache serves the "maps cached" runs
        for _ in range(args.repeats):
            x = fresh()
            t0 = time.perf_counter()
            model(x)
            infer.append((time.perf_counter() - t0) * 1e3)
            kmap.append(x.cache.build_ms)
            t0 = time.perf_counter()
            model(SparseTensor(v.feats, v.coords, cache=x0.cache))
            cached.append((time.perf_counter() - t0) * 1e3)
        # per-module breakdown (separate pass: hooks cost a little)
        times: dict[str, float] = collections.defaultdict(float)
        hooks = []
        for name, mod in model.named_modules():
            if name and name.count(".") <= 2:
                hooks.append(mod.register_forward_pre_hook(lambda m, i: setattr(m, "_t0", time.perf_counter())))
                hooks.append(mod.register_forward_hook(
                    lambda m, i, o, name=name: times.__setitem__(name, times[name] + time.perf_counter() - m._t0)))
        per_module: dict[str, list[float]] = collections.defaultdict(list)
        for _ in range(max(1, args.repeats // 2)):
            times.clear()
            model(fresh())
            for k, t in times.items():
                per_module[k].append(t * 1e3)
        for h in hooks:
            h.remove()
    model.train()
    r = torch.randn(logits.shape, generator=g)
    train = []
    for i in range(args.repeats + 1):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        (model(fresh()) * r).sum().backward()
        if i:
            train.append((time.perf_counter() - t0) * 1e3)
    res.update(infer=infer, cached=cached, kmap=kmap, train=train,
               modules={k: statistics.median(v) for k, v in per_module.items()})
    if args.logits:
        torch.save(logits, args.logits)
    print("RESULT " + json.dumps(res))


def _run_worker(src: Path, args: argparse.Namespace, logits: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--config", args.config,
           "--scan", args.scan, "--repeats", str(args.repeats), "--threads", str(args.threads), "--logits", logits]
    for s in args.set:
        cmd += ["--set", s]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if out.returncode != 0:
        raise RuntimeError(f"benchmark worker for {src} failed:\n{out.stderr[-3000:]}")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


# ------------------------------------------------------------------------------------------------ main
def _ensure_scan(path: str) -> None:
    if Path(path).exists():
        return
    p = Path(path)
    root = p.parents[3] if len(p.parents) > 3 else Path("/tmp/sim1")
    sim = Path(sys.executable).with_name("i2p-sim")
    print(f"scan {path} missing: simulating it into {root}")
    subprocess.run([str(sim), "--out", str(root), "--sequences", "0", "--scans", "1", "--seed", "1", "--quiet"],
                   check=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="lite0")
    ap.add_argument("--set", action="append", default=[], help="model config override, e.g. encoder.stages=5")
    ap.add_argument("--scan", default=DEFAULT_SCAN)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--baseline-src", default=None, help="source tree whose i2p_ros is the baseline")
    ap.add_argument("--out", default=str(HERE / "results" / "model_forward.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--logits", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args)
        return
    _ensure_scan(args.scan)
    shipped = REPO / "config" / "models" / f"{args.config}.yaml"
    if not Path(args.config).exists() and shipped.exists():
        args.config = str(shipped)  # a path, so that every source tree's worker reads the same config
    impls = {"current": REPO}
    if args.baseline_src:
        impls["baseline"] = Path(args.baseline_src).resolve()
    runs: dict[str, list[dict]] = {k: [] for k in impls}
    tmp = Path(tempfile.mkdtemp(prefix="model_forward_"))
    load_before = load_average()
    for rnd in range(args.rounds):
        for name, src in impls.items():
            runs[name].append(_run_worker(src, args, str(tmp / f"{name}.pt")))
            print(f"round {rnd + 1}/{args.rounds} {name}: infer {statistics.median(runs[name][-1]['infer']):.1f} ms",
                  flush=True)

    def med(name: str, key: str) -> float:
        return statistics.median([t for r in runs[name] for t in r[key]])

    def best(name: str, key: str) -> float:
        return min(t for r in runs[name] for t in r[key])

    summary = {name: {"infer_ms": med(name, "infer"), "infer_maps_cached_ms": med(name, "cached"),
                      "kmap_build_ms": med(name, "kmap"), "train_ms": med(name, "train"),
                      "maps_and_plans_ms": med(name, "infer") - med(name, "cached"),
                      "min_ms": {k: best(name, k) for k in ("infer", "cached", "train")},
                      "modules_ms": {k: statistics.median([r["modules"][k] for r in runs[name]])
                                     for k in runs[name][0]["modules"]}}
               for name in impls}
    first = runs["current"][0]
    print(f"\n{Path(args.config).stem} {' '.join(args.set)}: {first['voxels']} voxels from {first['points']} points, "
          f"{args.threads} threads, {args.rounds} rounds x {args.repeats} runs, load {load_before[0]:.2f}")
    keys = [("infer (fresh maps)", "infer_ms"), ("infer (maps cached)", "infer_maps_cached_ms"),
            ("maps + plans", "maps_and_plans_ms"), ("kmap build_ms", "kmap_build_ms"), ("train fwd+bwd", "train_ms")]
    header = ["ms (median)"] + list(impls) + (["ratio base/cur"] if "baseline" in impls else [])
    rows = []
    for label, key in keys:
        row: list[object] = [label] + [summary[n][key] for n in impls]
        if "baseline" in impls:
            row.append(summary["baseline"][key] / max(summary["current"][key], 1e-9))
        rows.append(row)
    if "baseline" in impls:  # minima: less sensitive to other jobs on a shared machine
        for label, key in (("infer (fresh maps), min", "infer"), ("infer (maps cached), min", "cached"),
                           ("train fwd+bwd, min", "train")):
            b, c = summary["baseline"]["min_ms"][key], summary["current"]["min_ms"][key]
            rows.append([label, c, b, b / max(c, 1e-9)])
    else:
        for label, key in (("infer (fresh maps), min", "infer"), ("train fwd+bwd, min", "train")):
            rows.append([label, summary["current"]["min_ms"][key]])
    print(format_table(header, rows))
    mods = summary["current"]["modules_ms"]
    top = [k for k, _ in sorted(mods.items(), key=lambda kv: -kv[1]) if k.count(".") >= 1][:20]
    mrows = []
    for k in top:
        row = [k] + [summary[n]["modules_ms"].get(k, float("nan")) for n in impls]
        if "baseline" in impls:
            row.append(summary["baseline"]["modules_ms"][k] / max(mods[k], 1e-9))
        mrows.append(row)
    print("\nper module (inference, fresh maps; a module's time includes the maps it builds)")
    print(format_table(["module"] + header[1:], mrows))
    payload = {"config": args.config, "overrides": args.set, "scan": args.scan, "voxels": first["voxels"],
               "points": first["points"], "rounds": args.rounds, "repeats": args.repeats, "summary": summary,
               "machine": machine_info(), "load_average_before": load_before}
    if "baseline" in impls:
        import torch  # noqa: PLC0415

        a, b = torch.load(tmp / "current.pt", weights_only=True), torch.load(tmp / "baseline.pt", weights_only=True)
        diff = float((a - b).abs().max())
        payload["max_abs_logit_diff_vs_baseline"] = diff
        payload["baseline_src"] = str(impls["baseline"])
        print(f"\nlargest |logit difference| current vs baseline: {diff:.3g} (max |logit| {float(a.abs().max()):.3g})")
    print(f"wrote {write_json(args.out, payload)}")


if __name__ == "__main__":
    main()
