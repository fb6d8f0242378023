"""Kernel maps and execution plans against brute-force Python references."""

import pytest
import torch
from test_sparse_dense_ref import expected_down_sites, offsets, random_coords

from i2p_ros.sparse import Conv3d, KernelMapCache, SparseTensor, voxelize
from i2p_ros.sparse.kmap import downsample_map, kernel_offsets, offset_index, submanifold_map, transposed_map
from i2p_ros.sparse.plan import build_plan


def _pairs(kmap):
    out = set()
    for i, (a, b) in enumerate(zip(kmap.in_idx, kmap.out_idx)):
        if i == kmap.identity:
            out |= {(j, j, i) for j in range(kmap.n_in)}
        elif a is not None:
            out |= set(zip(a.tolist(), b.tolist(), [i] * a.numel()))
    return out


def _brute_sub(coords, stride, k, d):
    rows = {tuple(c): j for j, c in enumerate(coords.tolist())}
    pairs = set()
    for p, (b, x, y, z) in enumerate(coords.tolist()):
        for i, (dx, dy, dz) in enumerate(offsets(k)):
            q = rows.get((b, x + stride * d * dx, y + stride * d * dy, z + stride * d * dz))
            if q is not None:
                pairs.add((q, p, i))
    return pairs


@pytest.mark.parametrize("k,d,stride,shuffle", [(3, 1, 1, True), (3, 1, 1, False), (5, 1, 2, True),
                                                (3, 2, 1, True), (5, 2, 1, False), (1, 1, 1, True)])
def test_submanifold_map_matches_brute_force(k, d, stride, shuffle):
    coords = random_coords(3, (7, 6, 8), 0.3, seed=k + d, stride=stride, origin=(-4, 6, -2))
    if not shuffle:  # the sorted fast path (voxelize output is sorted)
        key = ((coords[:, 0] * 100 + coords[:, 1]) * 100 + coords[:, 2]) * 100 + coords[:, 3]
        coords = coords[torch.argsort(key.long())]
    cache = KernelMapCache()
    m = submanifold_map(cache, cache.coords_id(coords, stride), k, d)
    assert _pairs(m) == _brute_sub(coords, stride, k, d)
    # symmetric: offset K-1-i holds offset i's pairs swapped
    kv = k ** 3
    for i in range(kv):
        if i != m.identity:
            assert torch.equal(m.in_idx[i], m.out_idx[kv - 1 - i])


def test_neighbours_never_cross_batch_samples():
    c = torch.tensor([[0, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.int32)
    cache = KernelMapCache()
    m = submanifold_map(cache, cache.coords_id(c, 1), 3)
    assert all(c[a, 0] == c[b, 0] for a, b, _ in _pairs(m))
    assert len(_pairs(m)) == 4 + 4


@pytest.mark.parametrize("k,stride_in,d", [(2, 1, 1), (2, 2, 1), (3, 1, 1), (3, 4, 1), (3, 1, 2), (5, 1, 1)])
def test_downsample_map_matches_brute_force(k, stride_in, d):
    coords = random_coords(2, (7, 8, 6), 0.3, seed=k * stride_in, stride=stride_in,
                           origin=(-3 * stride_in, stride_in, 5 * stride_in))
    cache = KernelMapCache()
    m = downsample_map(cache, cache.coords_id(coords, stride_in), k, 2, d)
    out_rows = {tuple(r): j for j, r in enumerate(m.out_coords.tolist())}
    assert set(out_rows) == expected_down_sites(coords, stride_in, k, 2, d)
    brute = set()
    for p, (b, *xyz) in enumerate(coords.tolist()):
        for i, o in enumerate(kernel_offsets(k)):
            q = (b,) + tuple(xyz[a] - stride_in * d * o[a] for a in range(3))
            if q in out_rows:
                brute.add((p, out_rows[q], i))
    assert _pairs(m) == brute
    # the generic transposed search finds exactly the transposed pairs
    fine, coarse = cache.coords_id(coords, stride_in), cache.coords_id(m.out_coords, stride_in * 2)
    t = transposed_map(cache, coarse, fine, k, 2, d)
    assert _pairs(t) == {(o, i, w) for i, o, w in _pairs(m)}


@pytest.mark.parametrize("k", [3, 5])  # 5³: 124 offsets, ranks counted with the dense occupancy path
def test_plan_reproduces_every_pair_once_in_any_blocking(k):
    coords = random_coords(2, (9, 9, 9), 0.25, seed=3)
    cache = KernelMapCache()
    m = submanifold_map(cache, cache.coords_id(coords, 1), k)
    for block in (1, 7, 100, 10**6):
        p = build_plan(m.in_idx, m.out_idx, m.n_out, m.identity, block_pairs=block)
        seen = set()
        for k in range(p.num_blocks):
            y0, y1 = p.y_bounds[k], p.y_bounds[k + 1]
            r0, r1 = p.row_bounds[k], p.row_bounds[k + 1]
            s = y0
            for off, cnt in p.slots[k]:
                for y in range(s, s + cnt):
                    seen.add((int(p.gather_idx[y]), int(p.out_rows[y]), off))
                    assert r0 <= int(p.out_rows[y]) < r1
                s += cnt
            # each output row's bag lists exactly its own pairs
            offs = p.bag_offsets[r0:r1].tolist() + [y1 - y0]
            for j, row in enumerate(range(r0, r1)):
                local = p.bag_idx[y0 + offs[j]:y0 + offs[j + 1]] + y0
                assert (p.out_rows[local] == row).all()
                assert (p.offset_idx[local].diff() > 0).all()  # in offset order
        assert seen == _pairs(m) - {(j, j, m.identity) for j in range(m.n_in)}


def test_duplicate_coords_rejected():
    c = torch.tensor([[0, 1, 1, 1], [0, 2, 1, 1], [0, 1, 1, 1]], dtype=torch.int32)
    with pytest.raises(ValueError, match="duplicate"):
        Conv3d(2, 2, 3)(SparseTensor(torch.randn(3, 2), c))


def test_empty_and_single_voxel():
    conv, down = Conv3d(2, 3, 3), Conv3d(2, 3, 3, stride=2)
    e = SparseTensor(torch.randn(0, 2), torch.zeros(0, 4, dtype=torch.int32))
    assert conv(e).feats.shape == (0, 3)
    one = SparseTensor(torch.randn(1, 2), torch.tensor([[0, 3, 3, 3]], dtype=torch.int32))
    torch.testing.assert_close(conv(one).feats, one.feats @ conv.kernel[13])
    y = down(one)
    # site 3 reaches the even sites 2 and 4 (offsets +1 / -1 of a stride-2 grid), not below the minimum 3 -> only 4
    assert y.coords.tolist() == [[0, 4, 4, 4]]


def test_voxelized_coords_take_the_sorted_path():
    pts = torch.rand(3000, 4, generator=torch.Generator().manual_seed(0)) * 2
    v = voxelize(pts, 0.1)
    cache = KernelMapCache()
    cid = cache.coords_id(v.coords, 1)
    submanifold_map(cache, cid, 3)
    assert cache.sorted_keys[cid].perm is None


@pytest.mark.parametrize("k_down", [3, 5])
def test_up_conv_after_a_floor_site_strided_conv_equals_the_searched_transpose(k_down):
    """The decoder's 2x2x2 up-conv back from a set made by a 3³/5³ floor-site conv is read off each fine site's
    parent cell; it must hold exactly the pairs the generic transposed search finds, and its output must equal
    a dense conv_transpose3d of the same weights."""
    coords = random_coords(2, (9, 7, 8), 0.3, seed=20 + k_down, origin=(-5, 3, -1))
    g = torch.Generator().manual_seed(k_down)
    x = SparseTensor(torch.randn(coords.shape[0], 3, generator=g, dtype=torch.float64), coords)
    down = Conv3d(3, 4, k_down, stride=2, sites="floor").double()
    up = Conv3d(4, 2, 2, stride=2, transposed=True).double()
    coarse = down(x)
    out = up(coarse)
    cache = x.cache
    coarse_cid = cache.coords_id(coarse.coords, 2)
    name = f"up_c{coarse_cid}_k2_s2_d1"
    assert cache.has_map(name)
    ref_cache = KernelMapCache()
    rf, rc = ref_cache.coords_id(coords, 1), ref_cache.coords_id(coarse.coords, 2)
    ref_cache.set_parent(rc, rf)
    assert _pairs(cache.get_map(name, lambda: None)) == _pairs(transposed_map(ref_cache, rc, rf, 2, 2))
    # against brute force: fine p gets coarse q = floor(p / 2) * 2 through offset (p - q) (x slowest)
    w = up.kernel.detach()
    rows = {tuple(r): j for j, r in enumerate(coarse.coords.tolist())}
    expect = torch.zeros(coords.shape[0], 2, dtype=torch.float64)
    for p, (b, *xyz) in enumerate(coords.tolist()):
        q = (b, *[(v // 2) * 2 for v in xyz])
        o = [v - qv for v, qv in zip(xyz, q[1:])]
        expect[p] = coarse.feats[rows[q]] @ w[o[0] * 4 + o[1] * 2 + o[2]]
    torch.testing.assert_close(out.feats, expect, rtol=1e-12, atol=1e-12)


def test_3x3x3_map_taken_from_a_cached_5x5x5_map_matches_brute_force():
    """A 3³ submanifold map on a set that already has a 5³ map is read off the 5³ map's centre offsets."""
    coords = random_coords(2, (8, 7, 9), 0.3, seed=9, origin=(-3, 2, 0))
    cache = KernelMapCache()
    cid = cache.coords_id(coords, 1)
    big = cache.get_map("sub_c0_k5_d1", lambda: submanifold_map(cache, cid, 5))
    small = submanifold_map(cache, cid, 3)
    assert _pairs(small) == _brute_sub(coords, 1, 3, 1)
    assert small.in_idx[0] is big.in_idx[offset_index(5, -1, -1, -1)]  # shared with the 5³ map, not searched
