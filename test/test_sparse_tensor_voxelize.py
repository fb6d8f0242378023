"""SparseTensor / collate / cat and voxelization, checked against brute-force Python references."""

import math

import pytest
import torch

from i2p_ros.sparse import SparseTensor, Voxelized, cat, collate_voxelized, sparse_collate, voxelize


def _brute_voxels(points, vs, bounds=None):
    """Reference: dict from voxel index -> list of point rows (pure Python)."""
    vox: dict[tuple[int, int, int], list[int]] = {}
    for i, p in enumerate(points.tolist()):
        if not all(math.isfinite(v) for v in p):
            continue
        if bounds is not None and not all(bounds[0][a] <= p[a] < bounds[1][a] for a in range(3)):
            continue
        key = tuple(int(math.floor(p[a] / vs[a])) for a in range(3))
        vox.setdefault(key, []).append(i)
    return vox


def _random_points(n, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    pts = (torch.rand(n, 4, generator=g, dtype=torch.float64) - 0.5) * scale
    pts[:, 3] = torch.rand(n, generator=g, dtype=torch.float64)
    return pts


def test_collate_adds_batch_column_and_split_roundtrips():
    c0 = torch.tensor([[0, 0, 0], [1, 2, 3]])
    c1 = torch.tensor([[5, 5, 5], [0, 0, 0], [-1, 4, 2]])
    f0, f1 = torch.randn(2, 3), torch.randn(3, 3)
    st = sparse_collate([c0, c1], [f0, f1])
    assert st.coords.dtype == torch.int32
    assert st.coords[:, 0].tolist() == [0, 0, 1, 1, 1]
    assert st.batch_size == 2
    parts = st.split()
    assert len(parts) == 2
    assert torch.equal(parts[1].coords[:, 1:], c1.to(torch.int32))
    assert torch.equal(parts[1].feats, f1)
    assert torch.equal(parts[0].feats, f0)


def test_cat_requires_identical_coords():
    c = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.int32)
    a = SparseTensor(torch.randn(2, 3), c)
    b = a.replace(torch.randn(2, 5))
    out = cat([a, b])
    assert out.feats.shape == (2, 8)
    assert torch.equal(out.feats[:, 3:], b.feats) and out.cache is a.cache
    other = SparseTensor(torch.randn(2, 2), c.flip(0).contiguous())
    with pytest.raises(ValueError, match="different coordinates"):
        cat([a, other])


def test_sparse_tensor_validates_shapes():
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        SparseTensor(torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="rows"):
        SparseTensor(torch.randn(3, 3), torch.zeros(2, 4, dtype=torch.int32))


@pytest.mark.parametrize("vs", [0.25, (0.3, 0.2, 0.5)])
def test_voxelize_matches_brute_force(vs):
    pts = _random_points(800, seed=1)
    vs3 = (vs,) * 3 if isinstance(vs, float) else vs
    v = voxelize(pts, vs, batch_index=3)
    ref = _brute_voxels(pts, vs3)
    assert v.num_voxels == len(ref)
    assert (v.coords[:, 0] == 3).all()
    # each point in exactly one voxel, and that voxel's coordinate is floor(p / vs)
    assert (v.inverse >= 0).all()
    got = {tuple(c): i for i, c in enumerate(v.coords[:, 1:].tolist())}
    assert set(got) == set(ref)
    for key, rows in ref.items():
        vi = got[key]
        assert sorted(torch.nonzero(v.inverse == vi).squeeze(1).tolist()) == rows
        mean = pts[rows].mean(dim=0)
        torch.testing.assert_close(v.feats[vi], mean, rtol=0, atol=1e-12)


def test_voxelize_inverse_reconstructs_per_point_values():
    pts = _random_points(500, seed=2)
    v = voxelize(pts, 0.4)
    # a per-voxel value (its coordinate) sent back to every point equals floor(point / vs)
    back = v.to_points(v.coords[:, 1:].to(torch.float64))
    assert torch.equal(back, torch.floor(pts[:, :3] / 0.4))


def test_voxelize_nonfinite_masked_or_raised():
    pts = _random_points(50, seed=3)
    pts[3, 0] = float("nan")
    pts[7, 2] = float("inf")
    pts[9, 3] = float("-inf")  # a non-finite feature column also drops the point
    v = voxelize(pts, 0.5)
    assert v.inverse[[3, 7, 9]].tolist() == [-1, -1, -1]
    assert (v.inverse[[i for i in range(50) if i not in (3, 7, 9)]] >= 0).all()
    assert torch.isfinite(v.feats).all()
    assert len(_brute_voxels(pts, (0.5,) * 3)) == v.num_voxels
    filled = v.to_points(torch.ones(v.num_voxels), fill=-7)
    assert filled[[3, 7, 9]].tolist() == [-7, -7, -7]
    with pytest.raises(ValueError, match="3 of 50 points"):
        voxelize(pts, 0.5, nonfinite="raise")


def test_voxelize_bounds():
    pts = _random_points(600, seed=4)
    bounds = ((-1.0, -0.5, -1.5), (0.5, 1.0, 0.0))
    v = voxelize(pts, 0.2, bounds=bounds)
    ref = _brute_voxels(pts, (0.2,) * 3, bounds)
    assert v.num_voxels == len(ref)
    inside = ((pts[:, :3] >= torch.tensor(bounds[0], dtype=torch.float64))
              & (pts[:, :3] < torch.tensor(bounds[1], dtype=torch.float64))).all(1)
    assert torch.equal(v.inverse >= 0, inside)


def test_voxelize_huge_extent_falls_back_to_row_unique():
    """Indices near the int32 limits on every axis: one packed int64 key would overflow; order and sets stay right."""
    g = torch.Generator().manual_seed(11)
    base = (torch.rand(300, 3, generator=g, dtype=torch.float64) - 0.5) * 4.0  # clusters: several points per voxel
    corners = torch.tensor([[-2.0e9, -2.0e9, -2.0e9], [2.0e9, 2.0e9, 2.0e9], [-2.0e9, 2.0e9, 0.0]],
                           dtype=torch.float64)
    xyz = torch.cat([base + c for c in corners])
    pts = torch.cat([xyz, torch.rand(xyz.shape[0], 1, generator=g, dtype=torch.float64)], dim=1)
    v = voxelize(pts, 1.0)
    ref = _brute_voxels(pts, (1.0,) * 3)
    assert v.num_voxels == len(ref)
    assert [tuple(c) for c in v.coords[:, 1:].tolist()] == sorted(ref)  # lexicographic (x, y, z) order
    torch.testing.assert_close(v.coords[v.inverse, 1:].double(), torch.floor(pts[:, :3]), rtol=0, atol=0)
    # this path averages features separately (float32 accumulation): each voxel's mean of its points
    means = torch.stack([pts[ref[tuple(c)]].mean(0) for c in v.coords[:, 1:].tolist()])
    torch.testing.assert_close(v.feats, means, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="exceed int32"):
        voxelize(pts * 2.0, 1.0)


def test_voxelize_rejects_malformed_bounds():
    pts = _random_points(10, seed=12)
    with pytest.raises(ValueError, match="min < max"):
        voxelize(pts, 0.5, bounds=((0.0, 0.0, 0.0), (1.0, -1.0, 1.0)))
    with pytest.raises(ValueError, match="bounds must be"):
        voxelize(pts, 0.5, bounds=((0.0, 0.0), (1.0, 1.0)))


def test_voxelize_max_voxels_deterministic_subset():
    pts = _random_points(2000, seed=5, scale=10.0)
    full = voxelize(pts, 0.5)
    assert full.num_voxels > 300
    a = voxelize(pts, 0.5, max_voxels=300, generator=torch.Generator().manual_seed(7))
    b = voxelize(pts, 0.5, max_voxels=300, generator=torch.Generator().manual_seed(7))
    c = voxelize(pts, 0.5, max_voxels=300, generator=torch.Generator().manual_seed(8))
    assert a.num_voxels == 300
    assert torch.equal(a.coords, b.coords) and torch.equal(a.inverse, b.inverse)
    assert not torch.equal(a.coords, c.coords)
    # kept voxels are a subset of the full set with the same features; points of dropped voxels get -1
    full_map = {tuple(r): i for i, r in enumerate(full.coords.tolist())}
    for i, r in enumerate(a.coords.tolist()):
        torch.testing.assert_close(a.feats[i], full.feats[full_map[tuple(r)]])
    kept_pts = a.inverse >= 0
    torch.testing.assert_close(a.coords[a.inverse[kept_pts], 1:].double(), torch.floor(pts[kept_pts, :3] / 0.5))
    dropped_vox = {full_map[tuple(r)] for r in a.coords.tolist()}
    expect_kept = torch.tensor([int(full.inverse[i]) in dropped_vox for i in range(pts.shape[0])])
    assert torch.equal(kept_pts, expect_kept)


def test_collate_voxelized_offsets_inverse():
    p0, p1 = _random_points(100, 6), _random_points(120, 7)
    p1[0, 0] = float("nan")
    v0, v1 = voxelize(p0, 0.5, batch_index=0), voxelize(p1, 0.5, batch_index=1)
    both = collate_voxelized([v0, v1])
    assert isinstance(both, Voxelized)
    vals = torch.arange(both.num_voxels, dtype=torch.float64)
    back = both.to_points(vals, fill=-1)
    assert torch.equal(back[:100], v0.inverse.double())
    assert back[100] == -1
    assert torch.equal(back[101:], (v1.inverse[1:] + v0.num_voxels).double())
    st = both.to_sparse()
    assert st.batch_size == 2 and st.feats.shape == (both.num_voxels, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_voxelize_drops_nonfinite_and_outside_points_in_any_float_dtype(dtype):
    """NaN/Inf in any column and points outside the bounds are dropped (-1); the rest are voxelized exactly
    like the float64 brute force of the same values (float16 takes the float32-accumulation path)."""
    pts = _random_points(600, seed=13).to(dtype)
    pts[0, 0] = float("nan")      # coordinate NaN
    pts[1, 2] = float("inf")      # coordinate Inf
    pts[2, 3] = float("nan")      # feature NaN, coordinates fine
    pts[3, 3] = float("-inf")     # feature -Inf
    pts[4, :3] = 1.4              # outside the max bound
    bounds = ((-1.5, -1.5, -1.5), (1.2, 1.5, 1.5))
    v = voxelize(pts, 0.25, bounds=bounds)
    p64 = pts.double()
    lo, hi = torch.tensor(bounds[0], dtype=torch.float64), torch.tensor(bounds[1], dtype=torch.float64)
    kept = torch.isfinite(p64).all(1) & ((p64[:, :3] >= lo) & (p64[:, :3] < hi)).all(1)
    assert not kept[:5].any() and kept[5:].sum() > 500
    assert torch.equal(v.inverse >= 0, kept)
    ref = _brute_voxels(p64[kept], (0.25,) * 3)
    rows = torch.nonzero(kept).squeeze(1)
    got = {tuple(c): i for i, c in enumerate(v.coords[:, 1:].tolist())}
    assert set(got) == set(ref) and v.feats.dtype == dtype
    for key, members in ref.items():
        members = rows[members]
        assert sorted(torch.nonzero(v.inverse == got[key]).squeeze(1).tolist()) == members.tolist()
        torch.testing.assert_close(v.feats[got[key]].double(), p64[members].mean(0),
                                   rtol=1e-3 if dtype == torch.float16 else 1e-6, atol=1e-3)
    with pytest.raises(ValueError, match="NaN/Inf"):
        voxelize(pts, 0.25, bounds=bounds, nonfinite="raise")
