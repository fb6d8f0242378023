"""Inflated kernels run through the sparse engine's Conv3d on planar point sets reproduce the 2D convs.

Submanifold (stride 1): exact at every active site, for all axes, 3×3 and 5×5, regular and depthwise.
Strided (stride 2): the sparse output sites are the multiples of 2 reachable from the input (not below
its minimum coordinate). With the first pixel at an even coordinate they include every output of the 2D
conv with symmetric ``padding=k//2`` (site 2m <-> output m) plus one border row/column at coordinate
``H`` / ``W`` (reachable through offset -1), and for k=5 also sites on the plane ``+2`` (through offset
-2 along the axis); with the first pixel at 1 and even H, W they are exactly TF ``'SAME'``'s outputs
(site 2m+2 <-> output m; k=5 adds the row/column at ``H+2`` / ``W+2`` and the plane ``+2``). In
``center`` mode every extra site off the image plane is exactly zero.
"""

import itertools

import pytest
import torch
import torch.nn.functional as F

from i2p_ros.inflate import inflate_conv_weight, inflate_shortcut_weight

try:
    from i2p_ros.sparse import SparseTensor
    from i2p_ros.sparse.conv import Conv3d
except ImportError:  # written before the engine; skip until it exists
    pytest.skip("i2p_ros.sparse Conv3d not available yet", allow_module_level=True)

AXES = ("x", "y", "z")
ROW_COL = {"x": ("y", "z"), "y": ("z", "x"), "z": ("y", "x")}  # the documented table
GEN = torch.Generator().manual_seed(99)


def rand(*shape):
    return torch.randn(*shape, dtype=torch.float64, generator=GEN)


def planar(img, axis, plane, origin, mask=None):
    """Active pixels of img [C, H, W] -> SparseTensor with coords (0, x, y, z) per the axis table."""
    c, h, w = img.shape
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    keep = torch.ones(h, w, dtype=torch.bool) if mask is None else mask
    rows, cols = rows[keep], cols[keep]
    row_ax, col_ax = ROW_COL[axis]
    xyz = {axis: torch.full_like(rows, plane), row_ax: rows + origin, col_ax: cols + origin}
    coords = torch.stack([torch.zeros_like(rows), xyz["x"], xyz["y"], xyz["z"]], 1).int()
    return SparseTensor(img[:, rows, cols].t().contiguous(), coords), rows, cols


def site_rc(coords, axis):
    """Output coords [N, 4] -> (coordinate along axis, row coordinate, col coordinate)."""
    idx = {"x": 1, "y": 2, "z": 3}
    row_ax, col_ax = ROW_COL[axis]
    return coords[:, idx[axis]].long(), coords[:, idx[row_ax]].long(), coords[:, idx[col_ax]].long()


def conv(w_ours, k, stride=1, depthwise=False):
    cin = w_ours.shape[1]
    cout = cin if depthwise else w_ours.shape[2]
    m = Conv3d(cin, cout, kernel_size=k, stride=stride, depthwise=depthwise).double()
    with torch.no_grad():
        m.kernel.copy_(w_ours)
    return m


@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("axis", AXES)
def test_submanifold_center_and_repeat_reproduce_conv2d(axis, k, depthwise):
    c, h, w = 4, 9, 11
    img = rand(c, h, w)
    mask = torch.rand(h, w, generator=GEN) < 0.7  # a genuinely sparse image
    w2 = rand(c, 1 if depthwise else c, k, k)
    ref = F.conv2d((img * mask).unsqueeze(0), w2, padding=k // 2, groups=c if depthwise else 1)[0]
    x, rows, cols = planar(img, axis, plane=3, origin=-2, mask=mask)
    for mode in ("center", "repeat"):  # on a one-voxel-thick plane only the centre slice meets inputs
        out = conv(inflate_conv_weight(w2, axis, mode, depthwise), k, depthwise=depthwise)(x)
        assert torch.equal(out.coords, x.coords)
        torch.testing.assert_close(out.feats, ref[:, rows, cols].t(), rtol=1e-12, atol=1e-12)
    out = conv(inflate_conv_weight(w2, axis, "average", depthwise), k, depthwise=depthwise)(x)
    torch.testing.assert_close(out.feats, ref[:, rows, cols].t() / k, rtol=1e-12, atol=1e-12)


def expected_sites(coords, k, s=2):
    """Brute force: multiples of s reachable as c - o (o in -r..r per axis), not below the per-axis minimum."""
    r = k // 2
    lo = coords[:, 1:].min(0).values.tolist()
    sites = set()
    for c in coords[:, 1:].tolist():
        for o in itertools.product(range(-r, r + 1), repeat=3):
            p = [a - b for a, b in zip(c, o)]
            if all(v % s == 0 and v >= m for v, m in zip(p, lo)):
                sites.add(tuple(p))
    return sites


@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("axis", AXES)
def test_strided_alignment_symmetric_and_tf_same(axis, k, depthwise):
    c, h, w = 3, 8, 10
    r = k // 2
    img = rand(c, h, w)
    w2 = rand(c, 1 if depthwise else c, k, k)
    groups = c if depthwise else 1
    kern = inflate_conv_weight(w2, axis, "center", depthwise)
    cases = {
        0: (F.conv2d(img.unsqueeze(0), w2, stride=2, padding=r, groups=groups)[0], 0),           # symmetric
        1: (F.conv2d(F.pad(img.unsqueeze(0), (r - 1, r, r - 1, r)), w2, stride=2, groups=groups)[0], 2),  # TF
    }
    for origin, (ref, first) in cases.items():
        x, _, _ = planar(img, axis, plane=0, origin=origin)
        out = conv(kern, k, stride=2, depthwise=depthwise)(x)
        assert out.stride == 2
        got_sites = {tuple(v) for v in out.coords[:, 1:].tolist()}
        assert got_sites == expected_sites(x.coords, k)
        a, rr, cc = site_rc(out.coords, axis)
        on_plane = a == 0
        assert (out.feats[~on_plane] == 0).all()  # k=5 creates the plane +2; centre kernels leave it empty
        mr, mc = (rr - first) // 2, (cc - first) // 2
        is_2d = on_plane & (mr >= 0) & (mr < h // 2) & (mc >= 0) & (mc < w // 2)
        assert int(is_2d.sum()) == (h // 2) * (w // 2)  # every 2D output has its site
        torch.testing.assert_close(out.feats[is_2d], ref[:, mr[is_2d], mc[is_2d]].t(), rtol=1e-12, atol=1e-12)
        extra = on_plane & ~is_2d
        border = {0: (h, w), 1: (h + 2, w + 2)}[origin]  # origin 0: through offset -1; origin 1: offset -2
        assert ((rr[extra] == border[0]) | (cc[extra] == border[1])).all()
        assert int(extra.sum()) == (0 if (origin == 1 and k == 3) else h // 2 + w // 2 + 1)


@pytest.mark.parametrize("axis", AXES)
def test_shortcut_center_reproduces_strided_1x1(axis):
    c, h, w = 4, 6, 9  # odd width: the last column's site exists in both
    img = rand(c, h, w)
    w1 = rand(5, c, 1, 1)
    ref = F.conv2d(img.unsqueeze(0), w1, stride=2)[0]
    x, _, _ = planar(img, axis, plane=4, origin=0)
    out = conv(inflate_shortcut_weight(w1, "center"), 2, stride=2)(x)
    a, rr, cc = site_rc(out.coords, axis)
    assert (a == 4).all()
    assert out.feats.shape[0] == ref.shape[1] * ref.shape[2]
    torch.testing.assert_close(out.feats, ref[:, rr // 2, cc // 2].t(), rtol=1e-12, atol=1e-12)
    # repeat sums each 2×2 block before the 1×1 conv
    out = conv(inflate_shortcut_weight(w1, "repeat"), 2, stride=2)(x)
    a, rr, cc = site_rc(out.coords, axis)
    block_sums = 4 * F.avg_pool2d(F.pad(img.unsqueeze(0), (0, w % 2, 0, h % 2)), 2)
    summed = F.conv2d(block_sums, w1)[0]
    torch.testing.assert_close(out.feats, summed[:, rr // 2, cc // 2].t(), rtol=1e-12, atol=1e-12)
