"""Vectorised execution paths of the sparse engine against dense / brute-force references (float64).

* depthwise convs multiply a whole block of pairs at once (``x[in] * W[offset]``) and reduce their weight
  gradients per offset with one ``embedding_bag``: checked on an MBConv-like chain (5³ stride-2 floor sites,
  3³ and 5³ submanifold) — outputs, input and weight gradients equal dense grouped ``conv3d``;
* a map's execution plan is shared by convs of different widths (block sizes within a factor);
* kernel maps found by the column search in chunks equal a brute-force neighbour search.
"""

import pytest
import torch
import torch.nn.functional as F
from test_sparse_dense_ref import dense_weight, offsets, random_coords, sample_dense, to_dense

import i2p_ros.sparse.kmap as kmap_mod
import i2p_ros.sparse.plan as plan_mod
from i2p_ros.sparse import Conv3d, KernelMapCache, SparseTensor, strategy
from i2p_ros.sparse.kmap import floor_downsample_map, submanifold_map

DT = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture(params=[None, 5, 64])
def blocks(request, monkeypatch):
    """Default plan blocks, tiny blocks (many blocks, most offsets split across blocks), small blocks."""
    monkeypatch.setattr(plan_mod, "DEFAULT_BLOCK_PAIRS", request.param)
    return request.param


def _mask(coords, stride, shape, batch):
    return to_dense(coords, torch.ones(coords.shape[0], 1, dtype=DT), stride, (0, 0, 0), shape, batch)


@pytest.mark.parametrize("mode", ["scatter", "gather"])
def test_depthwise_chain_forward_and_gradients_match_dense(blocks, mode):
    batch, c, extent = 2, 3, (9, 8, 7)
    coords = random_coords(batch, extent, 0.3, seed=5)  # random row order: the unsorted-key path
    g = torch.Generator().manual_seed(6)
    feats = torch.randn(coords.shape[0], c, generator=g, dtype=DT).requires_grad_(True)
    down = Conv3d(c, c, 5, stride=2, depthwise=True, bias=True, sites="floor").to(DT)
    sub3 = Conv3d(c, c, 3, depthwise=True).to(DT)
    sub5 = Conv3d(c, c, 5, depthwise=True).to(DT)
    with strategy(mode):
        y = sub5(sub3(down(SparseTensor(feats, coords))))
    r = torch.randn(y.feats.shape, generator=g, dtype=DT)
    (y.feats * r).sum().backward()

    shape = tuple(e + e % 2 for e in extent)  # even extent: the stride-2 grid covers every floor site
    cshape = tuple(s // 2 for s in shape)
    xd = to_dense(coords, feats.detach(), 1, (0, 0, 0), shape, batch).requires_grad_(True)
    m2 = _mask(y.coords, 2, cshape, batch)
    ws = [dense_weight(m.kernel.detach(), m.kernel_size).requires_grad_(True) for m in (down, sub3, sub5)]
    bias = down.bias.detach().clone().requires_grad_(True)
    h = F.conv3d(xd, ws[0], bias, stride=2, padding=2, groups=c) * m2  # only the occupied coarse sites exist
    h = F.conv3d(h, ws[1], padding=1, groups=c) * m2
    h = F.conv3d(h, ws[2], padding=2, groups=c) * m2
    torch.testing.assert_close(y.feats.detach(), sample_dense(h.detach(), y.coords, 2, (0, 0, 0)), **TOL)
    (h * to_dense(y.coords, r, 2, (0, 0, 0), cshape, batch)).sum().backward()
    torch.testing.assert_close(feats.grad, sample_dense(xd.grad, coords, 1, (0, 0, 0)), **TOL)
    torch.testing.assert_close(down.bias.grad, bias.grad, **TOL)
    for m, wd in zip((down, sub3, sub5), ws):
        torch.testing.assert_close(dense_weight(m.kernel.grad, m.kernel_size), wd.grad, **TOL)


def test_plan_shared_between_widths_still_matches_dense():
    coords = random_coords(1, (8, 8, 8), 0.3, seed=8)
    x = SparseTensor(torch.randn(coords.shape[0], 16, dtype=DT), coords)
    narrow = Conv3d(16, 16, 3).to(DT)  # block size for 32 channels
    wide = Conv3d(16, 48, 3).to(DT)  # 64 channels: within the reuse factor
    a, b = narrow(x), wide(x)
    kmap = x.cache.get_map("sub_c0_k3_d1", lambda: None)
    assert len(kmap._plans) == 1
    d = to_dense(coords, x.feats, 1, (0, 0, 0), (8, 8, 8), 1)
    for conv, out in ((narrow, a), (wide, b)):
        ref = sample_dense(F.conv3d(d, dense_weight(conv.kernel.detach(), 3), padding=1), coords, 1, (0, 0, 0))
        torch.testing.assert_close(out.feats, ref, **TOL)


def _brute_pairs(fine, out_sites, k, s_in, d=1):
    """{(input row, output row, offset)}: out[q] += in[q + s_in*d*o] W[o], by dictionary lookup."""
    where = {tuple(c): i for i, c in enumerate(fine.tolist())}
    pairs = set()
    for j, (b, x, y, z) in enumerate(out_sites.tolist()):
        for i, (dx, dy, dz) in enumerate(offsets(k)):
            hit = where.get((b, x + s_in * d * dx, y + s_in * d * dy, z + s_in * d * dz))
            if hit is not None:
                pairs.add((hit, j, i))
    return pairs


def _map_pairs(m):
    out = set()
    for i, (a, b) in enumerate(zip(m.in_idx, m.out_idx)):
        if i == m.identity:
            out |= {(j, j, i) for j in range(m.n_in)}
        elif a is not None:
            out |= set(zip(a.tolist(), b.tolist(), [i] * a.numel()))
    return out


@pytest.mark.parametrize("search_elements", [2 ** 22, 7])
@pytest.mark.parametrize("k,d", [(3, 1), (5, 1), (3, 2)])
def test_column_search_in_chunks_matches_brute_force(monkeypatch, search_elements, k, d):
    monkeypatch.setattr(kmap_mod, "SEARCH_ELEMENTS", search_elements)  # 7: one column per search
    coords = random_coords(2, (7, 6, 8), 0.3, seed=k + d, stride=2, origin=(-4, 2, 0))
    cache = KernelMapCache()
    cid = cache.coords_id(coords, 2)
    sub = submanifold_map(cache, cid, k, d)
    assert _map_pairs(sub) == _brute_pairs(coords, coords, k, 2, d)
    down = floor_downsample_map(cache, cid, k, 2, d)
    assert _map_pairs(down) == _brute_pairs(coords, down.out_coords, k, 2, d)
