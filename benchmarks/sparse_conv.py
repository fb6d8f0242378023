"""Sparse convolution speed on CPU: our engine vs spconv's CPU wheel on a simulated 64-beam street scan.

Input: one scan of the LiDAR simulator (i2p_ros.data.street, HDL-64 geometry; ``--azimuth-steps`` sets the
density, 3600 gives ~120k voxels) voxelized at 0.05 m; without the simulator a built-in ray-cast street
(ground, two facades, parked boxes) is used. Median milliseconds with ``torch.set_num_threads(2)`` of the
kernel-map build, the forward (no grad) and forward+backward, for

* ``sub3 32->32 full``: 3x3x3 submanifold conv, 32 -> 32 channels, stride-1 voxels;
* ``sub3 64->64 half``: the same at stride 2 (sites of a 2x2x2 stride-2 downsampling), 64 -> 64;
* ``down2+up2 32->64->32``: 2x2x2 stride-2 conv then the transposed conv back to the full-res sites.

"Kernel map" is everything computed from coordinates only: for us the map plus the execution plans both
directions of it need (forward and backward); for spconv ``ops.get_indice_pairs``. Forward/backward then reuse
those (spconv through its functional ops with the precomputed pairs, as its modules do via ``indice_key``).

spconv baseline (``--spconv-path DIR`` to import it from a separate directory; it is skipped when absent).
spconv 2.3.8's CPU path needs two in-process fixes to be usable, applied here: ``SpconvOps.scatter_add_cpu``
is not thread safe (wrong results with 2 threads) and is replaced by ``torch.Tensor.index_add_``; its
backward calls ``torch.cuda`` for a stream and gets a stub. ``--spconv-1thread`` also times the unpatched
scatter at 1 thread. Outputs and input gradients of every case are checked against ours (same weights via
``i2p_ros.sparse.layout.to_spconv_weight``).

    .venv/bin/python benchmarks/sparse_conv.py [--repeats 15] [--spconv-path DIR] [--spconv-1thread]
        [--out benchmarks/results/sparse_conv.json]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, interleaved_medians, load_average, machine_info, write_json  # noqa: E402

from i2p_ros.sparse import Conv3d, SparseTensor, voxelize  # noqa: E402
from i2p_ros.sparse.cache import KernelMapCache  # noqa: E402
from i2p_ros.sparse.kmap import downsample_map, submanifold_map  # noqa: E402
from i2p_ros.sparse.layout import to_spconv_weight  # noqa: E402
from i2p_ros.sparse.plan import block_pairs_for  # noqa: E402

VOXEL = 0.05


# ------------------------------------------------------------------------------------------------ input
def _fallback_street(columns: int, seed: int = 0) -> torch.Tensor:
    """Ray-cast 64-beam scan of a street: ground plane, two facades, 40 parked boxes. float32 [P, 4]."""
    g = torch.Generator().manual_seed(seed)
    elev = torch.linspace(math.radians(-24.9), math.radians(2.0), 64, dtype=torch.float64)
    az = torch.arange(columns, dtype=torch.float64) * (2 * math.pi / columns)
    el, a = torch.meshgrid(elev, az, indexing="ij")
    d = torch.stack([torch.cos(el) * torch.cos(a), torch.cos(el) * torch.sin(a), torch.sin(el)], -1).reshape(-1, 3)
    o = torch.tensor([0.0, 0.0, 1.8], dtype=torch.float64)
    t = torch.full((d.shape[0],), float("inf"), dtype=torch.float64)
    tg = -o[2] / d[:, 2]
    t = torch.where(tg > 0, torch.minimum(t, tg), t)
    for y0 in (-9.0, 11.0):
        tw = (y0 - o[1]) / d[:, 1]
        t = torch.where(tw > 0, torch.minimum(t, tw), t)
    nb = 40
    cx = (torch.rand(nb, generator=g, dtype=torch.float64) - 0.5) * 100
    cy = torch.where(torch.rand(nb, generator=g) < 0.5, -5.5, 6.5).double()
    lo = torch.stack([cx - 2.2, cy - 0.9, torch.zeros(nb, dtype=torch.float64)], 1)
    hi = torch.stack([cx + 2.2, cy + 0.9, 1.5 + torch.rand(nb, generator=g, dtype=torch.float64)], 1)
    t1, t2 = (lo[None] - o) / d[:, None], (hi[None] - o) / d[:, None]
    tmin, tmax = torch.minimum(t1, t2).amax(-1), torch.maximum(t1, t2).amin(-1)
    tb = torch.where((tmax >= tmin) & (tmin > 0), tmin, torch.full_like(tmin, float("inf"))).amin(1)
    t = torch.minimum(t, tb)
    keep = t < 80
    p = o + d[keep] * t[keep, None] + torch.randn(int(keep.sum()), 3, generator=g, dtype=torch.float64) * 0.01
    return torch.cat([p, torch.rand(p.shape[0], 1, generator=g, dtype=torch.float64)], 1).float()


def scan_points(azimuth_steps: int, seed: int) -> tuple[torch.Tensor, str]:
    try:
        from i2p_ros.data.raycast import SensorConfig  # noqa: PLC0415
        from i2p_ros.data.street import generate_drive  # noqa: PLC0415
    except ImportError:
        return _fallback_street(azimuth_steps, seed), f"built-in ray-cast street, {azimuth_steps} columns"
    scan = generate_drive(1, seed=seed, sensor=SensorConfig(azimuth_steps=azimuth_steps)).scan(0)
    return torch.from_numpy(scan.points), f"i2p_ros.data.street drive seed {seed}, HDL-64, {azimuth_steps} columns"


# ------------------------------------------------------------------------------------------------ spconv
def load_spconv(path: str | None):
    if path:
        sys.path.insert(0, path)
    try:
        import spconv  # noqa: PLC0415
        import spconv.pytorch as sp  # noqa: PLC0415
        import spconv.pytorch.functional as spf  # noqa: PLC0415
        import spconv.pytorch.ops as spops  # noqa: PLC0415
        from spconv.core import ConvAlgo  # noqa: PLC0415
    except ImportError as e:
        print(f"spconv not available ({e}); running ours only", file=sys.stderr)
        return None
    native_ops = spops.SpconvOps

    class _ThreadSafeOps:
        """SpconvOps with scatter_add_cpu done by torch (spconv's own races with >1 thread)."""

        def __getattr__(self, name):
            return getattr(native_ops, name)

        @staticmethod
        def scatter_add_cpu(out_tv, buf_tv, idx_tv):
            idx = torch.from_numpy(idx_tv.numpy_view()).long()
            buf = torch.from_numpy(buf_tv.numpy_view())[: idx.numel()]
            torch.from_numpy(out_tv.numpy_view()).index_add_(0, idx, buf)

    spops.get_current_stream = lambda: 0  # CPU backward asks torch.cuda for a stream otherwise
    return {"sp": sp, "F": spf, "ops": spops, "algo": ConvAlgo.Native, "native": native_ops,
            "safe": _ThreadSafeOps(), "version": getattr(spconv, "__version__", "?")}


def spconv_indices(coords: torch.Tensor, stride: int) -> tuple[torch.Tensor, list[int]]:
    """(b, x, y, z) at ``stride`` -> spconv int32 indices on a non-negative grid of that stride (x, y, z order)."""
    c = coords.to(torch.int64)
    xyz = torch.div(c[:, 1:], stride, rounding_mode="floor")
    lo = torch.div(xyz.min(0).values, 4, rounding_mode="floor") * 4  # keep cell parity for stride-2 convs
    xyz = xyz - lo
    shape = (xyz.max(0).values + 4).tolist()
    return torch.cat([c[:, :1], xyz], 1).to(torch.int32).contiguous(), shape


def _by_key(coords: torch.Tensor, scale: int) -> torch.Tensor:
    """Row order that sorts sites by (b, x, y, z) (to compare outputs whose row orders differ)."""
    c = coords.to(torch.int64)
    c = torch.cat([c[:, :1], torch.div(c[:, 1:], scale, rounding_mode="floor")], 1)
    c = c - c.min(0).values
    ext = c.max(0).values + 1
    key = ((c[:, 0] * ext[1] + c[:, 1]) * ext[2] + c[:, 2]) * ext[3] + c[:, 3]
    return torch.argsort(key)


# ------------------------------------------------------------------------------------------------ cases
class Case:
    """One benchmark case: closures for both engines plus an agreement check."""

    def __init__(self, name: str):
        self.name = name
        self.ours: dict[str, Callable[[], object]] = {}
        self.spconv: dict[str, dict[str, Callable[[], object]]] = {}
        self.check: Callable[[], dict[str, float]] | None = None


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def make_sub_case(name: str, coords: torch.Tensor, stride: int, channels: int, spc, variants) -> Case:
    case = Case(name)
    n = coords.shape[0]
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(n, channels, generator=g)
    grad = torch.randn(n, channels, generator=g)
    conv = Conv3d(channels, channels, 3)

    def kmap():
        cache = KernelMapCache()
        m = submanifold_map(cache, cache.coords_id(coords, stride), 3)
        m.plan(block_pairs_for(2 * channels))  # the backward reuses it (symmetric map)

    x = SparseTensor(feats, coords, stride)
    xg = SparseTensor(feats.clone().requires_grad_(True), coords, stride, cache=x.cache)

    def fwd():
        with torch.no_grad():
            return conv(x)

    def fwd_bwd():
        conv.kernel.grad = None
        xg.feats.grad = None
        conv(xg).feats.backward(grad)

    case.ours = {"kmap": kmap, "fwd": fwd, "fwd+bwd": fwd_bwd}
    if spc is None:
        return case
    idx, shape = spconv_indices(coords, stride)
    w = to_spconv_weight(conv.kernel.detach(), "xyz").clone().requires_grad_(True)
    ops, spf, algo = spc["ops"], spc["F"], spc["algo"]

    def sp_kmap():
        return ops.get_indice_pairs(idx, 1 + int(coords[:, 0].max()), shape, algo, [3] * 3, [1] * 3, [1] * 3,
                                    [1] * 3, [0] * 3, True, False)

    _, pairs, pair_num = sp_kmap()
    fs = feats.clone().requires_grad_(True)

    def sp_fwd():
        with torch.no_grad():
            return spf.indice_subm_conv(feats, w, pairs, pair_num, n, algo)

    def sp_fwd_bwd():
        w.grad = None
        fs.grad = None
        spf.indice_subm_conv(fs, w, pairs, pair_num, n, algo).backward(grad)

    for label, (ops_impl, threads) in variants.items():
        case.spconv[label] = {"kmap": sp_kmap, "fwd": sp_fwd, "fwd+bwd": sp_fwd_bwd, "_ops": ops_impl,
                              "_threads": threads}

    def check():
        fwd_bwd()
        sp_fwd_bwd()
        return {"out": _rel(sp_fwd(), fwd().feats), "grad_in": _rel(fs.grad, xg.feats.grad),
                "grad_w": _rel(w.grad, to_spconv_weight(conv.kernel.grad, "xyz"))}

    case.check = check
    return case


def make_down_up_case(name: str, coords: torch.Tensor, c_in: int, c_mid: int, spc, variants) -> Case:
    case = Case(name)
    n = coords.shape[0]
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(n, c_in, generator=g)
    grad = torch.randn(n, c_in, generator=g)
    down = Conv3d(c_in, c_mid, 2, stride=2)
    up = Conv3d(c_mid, c_in, 2, stride=2, transposed=True)

    def kmap():
        cache = KernelMapCache()
        m = downsample_map(cache, cache.coords_id(coords, 1), 2, 2)
        m.plan(block_pairs_for(c_in + c_mid))
        m.transposed().plan(block_pairs_for(c_in + c_mid))

    x = SparseTensor(feats, coords)
    xg = SparseTensor(feats.clone().requires_grad_(True), coords, cache=x.cache)

    def fwd():
        with torch.no_grad():
            return up(down(x))

    def fwd_bwd():
        down.kernel.grad = up.kernel.grad = xg.feats.grad = None
        up(down(xg)).feats.backward(grad)

    case.ours = {"kmap": kmap, "fwd": fwd, "fwd+bwd": fwd_bwd}
    if spc is None:
        return case
    idx, shape = spconv_indices(coords, 1)
    wd = to_spconv_weight(down.kernel.detach(), "xyz").clone().requires_grad_(True)
    wu = to_spconv_weight(up.kernel.detach(), "xyz").clone().requires_grad_(True)
    ops, spf, algo = spc["ops"], spc["F"], spc["algo"]
    bs = 1 + int(coords[:, 0].max())

    def sp_kmap():
        return ops.get_indice_pairs(idx, bs, shape, algo, [2] * 3, [2] * 3, [0] * 3, [1] * 3, [0] * 3,
                                    False, False)

    outids, pairs, pair_num = sp_kmap()
    m = outids.shape[0]
    fs = feats.clone().requires_grad_(True)

    def sp_fwd():
        with torch.no_grad():
            y = spf.indice_conv(feats, wd, pairs, pair_num, m, algo)
            return spf.indice_inverse_conv(y, wu, pairs, pair_num, n, algo)

    def sp_fwd_bwd():
        wd.grad = wu.grad = fs.grad = None
        y = spf.indice_conv(fs, wd, pairs, pair_num, m, algo)
        spf.indice_inverse_conv(y, wu, pairs, pair_num, n, algo).backward(grad)

    for label, (ops_impl, threads) in variants.items():
        case.spconv[label] = {"kmap": sp_kmap, "fwd": sp_fwd, "fwd+bwd": sp_fwd_bwd, "_ops": ops_impl,
                              "_threads": threads}

    def check():
        fwd_bwd()
        sp_fwd_bwd()
        with torch.no_grad():
            ours_mid = down(x)
            sp_mid = spf.indice_conv(feats, wd, pairs, pair_num, m, algo)
        mid = _rel(sp_mid[_by_key(outids, 1)], ours_mid.feats[_by_key(ours_mid.coords, 2)])
        return {"out": _rel(sp_fwd(), fwd().feats), "mid": mid, "grad_in": _rel(fs.grad, xg.feats.grad),
                "grad_w_down": _rel(wd.grad, to_spconv_weight(down.kernel.grad, "xyz")),
                "grad_w_up": _rel(wu.grad, to_spconv_weight(up.kernel.grad, "xyz"))}

    case.check = check
    return case


# ------------------------------------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--azimuth-steps", type=int, default=3600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--spconv-path", default=None, help="directory to import spconv from (pip --target dir)")
    ap.add_argument("--spconv-1thread", action="store_true", help="also time unpatched spconv at 1 thread")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "sparse_conv.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = load_average()

    points, source = scan_points(args.azimuth_steps, args.seed)
    vox = voxelize(points, VOXEL)
    coords = vox.coords
    cache = KernelMapCache()
    half = downsample_map(cache, cache.coords_id(coords, 1), 2, 2).out_coords
    print(f"input: {source}: {points.shape[0]} points -> {coords.shape[0]} voxels at {VOXEL} m "
          f"({half.shape[0]} at stride 2); torch {torch.__version__}, {args.threads} threads, "
          f"load {load_before[0]:.2f}")

    spc = load_spconv(args.spconv_path)
    variants = {}
    if spc is not None:
        variants[f"spconv {spc['version']} ({args.threads}t, torch scatter)"] = (spc["safe"], args.threads)
        if args.spconv_1thread:
            variants[f"spconv {spc['version']} (1t, unpatched)"] = (spc["native"], 1)
    cases = [make_sub_case("sub3 32->32 full", coords, 1, 32, spc, variants),
             make_sub_case("sub3 64->64 half", half, 2, 64, spc, variants),
             make_down_up_case("down2+up2 32->64->32", coords, 32, 64, spc, variants)]

    results = []
    rows = []
    for case in cases:
        checks = {}
        if case.check is not None:
            spc["ops"].SpconvOps = spc["safe"]
            checks = case.check()
        fns = {f"ours {k}": v for k, v in case.ours.items()}
        thread_of = {}
        for label, d in case.spconv.items():
            for k in ("kmap", "fwd", "fwd+bwd"):
                fns[f"{label} {k}"] = _with_env(spc, d["_ops"], d["_threads"], args.threads, d[k])
                thread_of[label] = d["_threads"]
        t0 = time.perf_counter()
        med = interleaved_medians(fns, args.repeats, warmup=2)
        entry = {"case": case.name, "ours_ms": {k: med[f"ours {k}"] for k in case.ours},
                 "spconv_ms": {label: {k: med[f"{label} {k}"] for k in ("kmap", "fwd", "fwd+bwd")}
                               for label in case.spconv},
                 "agreement_rel_max_abs": checks, "seconds": time.perf_counter() - t0}
        results.append(entry)
        for k in ("kmap", "fwd", "fwd+bwd"):
            row = [case.name, k, entry["ours_ms"][k]]
            for label in case.spconv:
                s = entry["spconv_ms"][label][k]
                row += [s, s / entry["ours_ms"][k]]
            rows.append(row)
        if checks:
            print(f"{case.name}: agreement with spconv (max |diff| / max |ref|): "
                  + ", ".join(f"{k} {v:.1e}" for k, v in checks.items()))

    header = ["case", "stage", "ours ms"]
    for label in variants:
        header += [label + " ms", "spconv/ours"]
    print()
    print(format_table(header, rows))
    load_after = load_average()
    print(f"\nload average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
          "(shared machine; numbers are medians of interleaved runs)")
    payload = {"benchmark": "sparse_conv", "input": {"source": source, "points": int(points.shape[0]),
                                                      "voxels": int(coords.shape[0]),
                                                      "voxels_stride2": int(half.shape[0]), "voxel_size": VOXEL},
               "repeats": args.repeats, "threads": args.threads, "machine": machine_info(),
               "load_before": load_before, "load_after": load_after,
               "spconv": None if spc is None else {"version": spc["version"], "variants": list(variants)},
               "results": results}
    print(f"wrote {write_json(args.out, payload)}")
    return 0


def _with_env(spc, ops_impl, threads: int, default_threads: int, fn: Callable[[], object]) -> Callable[[], object]:
    """Run ``fn`` with the chosen SpconvOps implementation and thread count, then restore."""
    def run():
        spc["ops"].SpconvOps = ops_impl
        if threads != default_threads:
            torch.set_num_threads(threads)
        try:
            return fn()
        finally:
            if threads != default_threads:
                torch.set_num_threads(default_threads)
    return run


if __name__ == "__main__":
    raise SystemExit(main())
