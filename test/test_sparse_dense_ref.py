"""Dense references for the sparse-engine tests (written from DESIGN.md §2, independent of the engine)."""

from __future__ import annotations

import torch


def random_coords(batch: int, extent: tuple[int, int, int], density: float, seed: int,
                  stride: int = 1, origin: tuple[int, int, int] = (0, 0, 0)) -> torch.Tensor:
    """Random occupied sites (b, x, y, z): grid index * stride + origin, int32, in random row order."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batch):
        occ = torch.rand(extent, generator=g) < density
        idx = torch.nonzero(occ)
        rows.append(torch.cat([torch.full((idx.shape[0], 1), b), idx * stride + torch.tensor(origin)], 1))
    c = torch.cat(rows)
    c = c[torch.randperm(c.shape[0], generator=g)]
    return c.to(torch.int32)


def offsets(k: int) -> list[tuple[int, int, int]]:
    """DESIGN.md §2 order: odd k x fastest centred, even k x slowest 0..k-1."""
    if k % 2:
        r = k // 2
        return [(dx, dy, dz) for dz in range(-r, r + 1) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    return [(dx, dy, dz) for dx in range(k) for dy in range(k) for dz in range(k)]


def dense_weight(w: torch.Tensor, k: int, transposed: bool = False) -> torch.Tensor:
    """Ours [K, Cin, Cout] (or depthwise [K, C]) -> conv3d [Cout, Cin, kx, ky, kz] / conv_transpose3d [Cin, Cout, ...]
    / depthwise [C, 1, ...], by explicit offset loop (dense kernel index = offset + r for odd k, offset for even)."""
    r = k // 2 if k % 2 else 0
    if w.dim() == 2:
        out = torch.zeros(w.shape[1], 1, k, k, k, dtype=w.dtype)
        for i, (dx, dy, dz) in enumerate(offsets(k)):
            out[:, 0, dx + r, dy + r, dz + r] = w[i]
        return out
    cin, cout = w.shape[1], w.shape[2]
    out = torch.zeros((cin, cout, k, k, k) if transposed else (cout, cin, k, k, k), dtype=w.dtype)
    for i, (dx, dy, dz) in enumerate(offsets(k)):
        out[:, :, dx + r, dy + r, dz + r] = w[i] if transposed else w[i].t()
    return out


def to_dense(coords: torch.Tensor, feats: torch.Tensor, stride: int, origin: tuple[int, int, int],
             shape: tuple[int, int, int], batch: int) -> torch.Tensor:
    """[B, C, X, Y, Z] dense grid; site index = (coord - origin) / stride."""
    d = torch.zeros((batch, feats.shape[1]) + tuple(shape), dtype=feats.dtype)
    idx = grid_index(coords, stride, origin)
    d[idx[:, 0], :, idx[:, 1], idx[:, 2], idx[:, 3]] = feats
    return d


def grid_index(coords: torch.Tensor, stride: int, origin: tuple[int, int, int]) -> torch.Tensor:
    c = coords.to(torch.int64)
    o = torch.tensor(origin, dtype=torch.int64)
    xyz = c[:, 1:] - o
    assert bool((xyz % stride == 0).all()) and bool((xyz >= 0).all())
    return torch.cat([c[:, :1], xyz // stride], 1)


def sample_dense(d: torch.Tensor, coords: torch.Tensor, stride: int, origin: tuple[int, int, int]) -> torch.Tensor:
    """Rows of a dense [B, C, X, Y, Z] grid at the given sparse sites."""
    idx = grid_index(coords, stride, origin)
    return d[idx[:, 0], :, idx[:, 1], idx[:, 2], idx[:, 3]]


def expected_down_sites(coords: torch.Tensor, s_in: int, k: int, s: int, d: int = 1,
                        floor: bool = False) -> set[tuple[int, ...]]:
    """Brute-force output sites of a strided conv (DESIGN.md §2 rule; ``floor``: torchsparse 1.x floor(c/s)*s)."""
    out = set()
    c = coords.tolist()
    s_out = s_in * s
    if k % 2 == 0 or floor:
        for b, *xyz in c:
            out.add((b,) + tuple((v // s_out) * s_out for v in xyz))
        return out
    mins = coords[:, 1:].min(0).values.tolist()
    for b, *xyz in c:
        for o in offsets(k):
            q = [xyz[a] - s_in * d * o[a] for a in range(3)]
            if all(q[a] % s_out == 0 and q[a] >= mins[a] for a in range(3)):
                out.add((b,) + tuple(q))
    return out
