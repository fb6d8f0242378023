"""2D -> 3D inflation: layouts, modes, and exactness against dense conv2d / conv3d (float64).

Dense references use volumes indexed ``[B, C, X, Y, Z]`` and kernels ``[Cout, Cin, kx, ky, kz]``; the
converter below is written here from DESIGN.md §2, independently of ``i2p_ros.inflate``.
"""

import itertools

import pytest
import torch
import torch.nn.functional as F

from i2p_ros.inflate import (
    REFERENCE_AXIS_NAMES,
    inflate_bn,
    inflate_conv_weight,
    inflate_shortcut_weight,
)

AXES = ("x", "y", "z")
GEN = torch.Generator().manual_seed(1234)


def rand(*shape):
    return torch.randn(*shape, dtype=torch.float64, generator=GEN)


# Which 3D axes carry the image rows / columns for each replication axis (documented table).
ROW_COL = {"x": ("y", "z"), "y": ("z", "x"), "z": ("y", "x")}


def ours_to_dense(w, k, depthwise=False):
    """Odd k: ours [K, Cin, Cout] (i = (dz+r)k² + (dy+r)k + (dx+r)) -> dense [Cout, Cin, kx, ky, kz].

    Depthwise ours [K, C] -> [C, 1, kx, ky, kz] (conv3d with groups=C)."""
    if depthwise:
        w = w.unsqueeze(1)  # [K, 1, C]
    cin, cout = w.shape[1:]
    dense = torch.zeros(cout, cin, k, k, k, dtype=w.dtype)
    for ix, iy, iz in itertools.product(range(k), repeat=3):
        dense[:, :, ix, iy, iz] = w[iz * k * k + iy * k + ix].t()
    return dense


def shortcut_to_dense(w):
    """Even k=2: ours [8, Cin, Cout] (i = dx*4 + dy*2 + dz) -> dense [Cout, Cin, 2, 2, 2]."""
    dense = torch.zeros(w.shape[2], w.shape[1], 2, 2, 2, dtype=w.dtype)
    for dx, dy, dz in itertools.product(range(2), repeat=3):
        dense[:, :, dx, dy, dz] = w[dx * 4 + dy * 2 + dz].t()
    return dense


def lay_image(img, axis, plane=0, origin=0, pad=0, depth=1):
    """Image [C, H, W] -> volume [1, C, X, Y, Z] with pixel (row, col) at the documented coordinates.

    The plane sits at coordinate ``plane`` along ``axis``; the first pixel at ``origin`` in-plane; ``pad``
    extra empty voxels on every side (shifting all coordinates by ``pad``); at least ``depth`` voxels
    along ``axis``.
    """
    c, h, w = img.shape
    row_ax, col_ax = ROW_COL[axis]
    size = {axis: max(plane + 1, depth) + 2 * pad, row_ax: origin + h + 2 * pad, col_ax: origin + w + 2 * pad}
    vol = torch.zeros(1, c, size["x"], size["y"], size["z"], dtype=img.dtype)
    for i in range(h):
        for j in range(w):
            at = {axis: plane + pad, row_ax: origin + i + pad, col_ax: origin + j + pad}
            vol[0, :, at["x"], at["y"], at["z"]] = img[:, i, j]
    return vol


def read_plane(vol, axis, plane):
    """Volume [1, C, X, Y, Z] -> [C, rows, cols] on the plane ``axis == plane`` (rows/cols per the table)."""
    dims = {"x": 2, "y": 3, "z": 4}
    row_ax, col_ax = ROW_COL[axis]
    sl = vol.select(dims[axis], plane)  # [1, C, a, b] with remaining axes in x, y, z order
    rest = [a for a in "xyz" if a != axis]
    if rest.index(row_ax) == 1:
        sl = sl.transpose(-1, -2)
    return sl[0]


# ---------------------------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("axis", AXES)
def test_repeat_equals_reference_tiling_index_loop(axis, k):
    w2 = rand(4, 3, k, k)
    got = inflate_conv_weight(w2, axis=axis, mode="repeat")
    assert got.shape == (k ** 3, 3, 4)
    r = k // 2
    row_ax, col_ax = ROW_COL[axis]
    for dx, dy, dz in itertools.product(range(-r, r + 1), repeat=3):
        d = {"x": dx, "y": dy, "z": dz}
        i = (dz + r) * k * k + (dy + r) * k + (dx + r)
        assert torch.equal(got[i], w2[:, :, d[row_ax] + r, d[col_ax] + r].t()), (axis, dx, dy, dz)


def test_axis_names_match_image2point_reference_formulas():
    """The reference ``weight_transform`` (3×3 only), re-expressed: each option equals one of our axes."""
    w2 = rand(5, 2, 3, 3)
    cout, cin = w2.shape[:2]
    flat = w2.reshape(cout, cin, 9)
    # 'z-axis': rows of the 2D kernel -> the 9-blocks (slowest index), columns -> fastest, middle repeated.
    zref = torch.stack([w2[:, :, i // 9, i % 3].t() for i in range(27)])
    # 'y-axis': 3D index j takes 2D tap j % 9.
    yref = torch.stack([flat[:, :, j % 9].t() for j in range(27)])
    # 'x-axis': 2D tap (a, b) fills 3D indices 9b + 3a .. 9b + 3a + 2.
    xref = torch.stack([flat[:, :, 3 * ((j % 9) // 3) + j // 9].t() for j in range(27)])
    for name, ref in (("z-axis", zref), ("y-axis", yref), ("x-axis", xref)):
        assert torch.equal(inflate_conv_weight(w2, axis=REFERENCE_AXIS_NAMES[name]), ref), name


@pytest.mark.parametrize("k", [3, 5])
def test_modes_relations_and_depthwise_layout(k):
    w2 = rand(6, 1, k, k)
    for axis in AXES:
        rep = inflate_conv_weight(w2, axis, "repeat", depthwise=True)
        avg = inflate_conv_weight(w2, axis, "average", depthwise=True)
        cen = inflate_conv_weight(w2, axis, "center", depthwise=True)
        assert rep.shape == (k ** 3, 6)
        torch.testing.assert_close(avg, rep / k)
        regular = inflate_conv_weight(w2, axis, "repeat")  # same tensor seen as a 6-out, 1-in conv
        assert torch.equal(rep, regular[:, 0, :])
        nz = (cen != 0).any(dim=1).nonzero().flatten().tolist()
        r = k // 2
        on_centre = [i for i in range(k ** 3)
                     if {"x": i % k, "y": (i // k) % k, "z": i // (k * k)}[axis] == r]
        assert nz == on_centre
        assert torch.equal(cen[on_centre], rep[on_centre])


def test_1x1_and_errors():
    w = rand(8, 5, 1, 1)
    for axis, mode in itertools.product(AXES, ("repeat", "average", "center")):
        out = inflate_conv_weight(w, axis, mode)
        assert out.shape == (1, 5, 8) and torch.equal(out[0], w[:, :, 0, 0].t())
    assert inflate_conv_weight(rand(7, 1, 1, 1), depthwise=True).shape == (1, 7)
    with pytest.raises(ValueError, match="odd"):
        inflate_conv_weight(rand(2, 2, 2, 2))
    with pytest.raises(ValueError, match="axis"):
        inflate_conv_weight(rand(2, 2, 3, 3), axis="w")
    with pytest.raises(ValueError, match="mode"):
        inflate_conv_weight(rand(2, 2, 3, 3), mode="tile")
    with pytest.raises(ValueError, match="depthwise"):
        inflate_conv_weight(rand(4, 2, 3, 3), depthwise=True)
    with pytest.raises(ValueError, match="shortcut"):
        inflate_shortcut_weight(rand(4, 2, 3, 3))


def test_output_is_a_fresh_tensor_on_input_dtype():
    w = torch.randn(3, 2, 3, 3, dtype=torch.float32)
    out = inflate_conv_weight(w, mode="repeat")
    assert out.dtype == torch.float32 and out.is_contiguous()
    out.zero_()
    assert w.abs().sum() > 0


# ------------------------------------------------------------------------ exactness on planar images
@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("axis", AXES)
def test_center_on_planar_image_reproduces_conv2d_dense(axis, k, depthwise):
    cin, cout, h, w = (4, 4, 7, 9) if depthwise else (3, 5, 7, 9)
    img = rand(cin, h, w)
    w2 = rand(cout, 1 if depthwise else cin, k, k)
    groups = cin if depthwise else 1
    ref = F.conv2d(img.unsqueeze(0), w2, padding=k // 2, groups=groups)[0]
    vol = lay_image(img, axis, plane=1, pad=k)  # plane one voxel off 0, empty margin of k
    r = k // 2
    for mode in ("center", "repeat"):
        dense = ours_to_dense(inflate_conv_weight(w2, axis, mode, depthwise=depthwise), k, depthwise)
        out = F.conv3d(vol, dense, padding=r, groups=groups)
        on_plane = read_plane(out, axis, 1 + k)[:, k:k + h, k:k + w]
        torch.testing.assert_close(on_plane, ref, rtol=1e-12, atol=1e-12)
        off_plane = read_plane(out, axis, k)  # the neighbouring plane
        if mode == "center":
            assert off_plane.abs().max() == 0  # centre-only kernels never leave the plane
        else:
            assert off_plane.abs().max() > 0


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("axis", AXES)
def test_average_preserves_constant_response(axis, k):
    w2 = rand(4, 3, k, k)
    const = rand(3)
    ref = F.conv2d(const.view(1, 3, 1, 1).expand(1, 3, k, k), w2)  # one valid output = sum of taps
    vol = const.view(1, 3, 1, 1, 1).expand(1, 3, k, k, k)
    out = F.conv3d(vol, ours_to_dense(inflate_conv_weight(w2, axis, "average"), k))
    torch.testing.assert_close(out.flatten(), ref.flatten(), rtol=1e-12, atol=1e-12)
    rep = F.conv3d(vol, ours_to_dense(inflate_conv_weight(w2, axis, "repeat"), k))
    torch.testing.assert_close(rep.flatten(), k * ref.flatten(), rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------------------------------------- strided
@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("axis", AXES)
def test_center_strided_alignment_dense(axis, k, depthwise):
    """Outputs at coordinates 2m: first pixel at 0 -> PyTorch symmetric padding; at 1 -> TF 'SAME' (even size).

    Dense conv3d(stride 2, padding r) evaluates exactly the sites 2m (m >= 0), like the sparse strided conv.
    """
    c, h, w = 4, 8, 10
    r = k // 2
    img = rand(c, h, w)
    w2 = rand(c, 1 if depthwise else c, k, k)
    groups = c if depthwise else 1
    dense = ours_to_dense(inflate_conv_weight(w2, axis, "center", depthwise=depthwise), k, depthwise)
    # symmetric (ResNet / torchvision): origin 0
    out = F.conv3d(lay_image(img, axis, plane=0, origin=0), dense, stride=2, padding=r, groups=groups)
    ref = F.conv2d(img.unsqueeze(0), w2, stride=2, padding=r, groups=groups)[0]
    torch.testing.assert_close(read_plane(out, axis, 0)[:, :h // 2, :w // 2], ref, rtol=1e-12, atol=1e-12)
    # TF 'SAME' (EfficientNet): origin 1, even sizes -> pad r-1 before, r after
    out = F.conv3d(lay_image(img, axis, plane=0, origin=1), dense, stride=2, padding=r, groups=groups)
    tf = F.conv2d(F.pad(img.unsqueeze(0), (r - 1, r, r - 1, r)), w2, stride=2, groups=groups)[0]
    torch.testing.assert_close(read_plane(out, axis, 0)[:, 1:h // 2 + 1, 1:w // 2 + 1], tf,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("axis", AXES)
def test_shortcut_modes(axis):
    w1 = rand(6, 4, 1, 1)
    rep, avg, cen = (inflate_shortcut_weight(w1, m) for m in ("repeat", "average", "center"))
    wt = w1[:, :, 0, 0].t()
    assert rep.shape == avg.shape == cen.shape == (8, 4, 6)
    assert all(torch.equal(rep[i], wt) for i in range(8))
    torch.testing.assert_close(avg.sum(0), wt)
    assert torch.equal(cen[0], wt) and cen[1:].abs().max() == 0
    c, h, w = 4, 6, 8
    img = rand(c, h, w)
    vol = lay_image(img, axis, plane=0, depth=2)
    # center: the 2×2×2 stride-2 conv samples voxel 2m, exactly torchvision's 1×1 stride-2 downsample
    out = F.conv3d(vol, shortcut_to_dense(cen), stride=2)
    torch.testing.assert_close(read_plane(out, axis, 0), F.conv2d(img.unsqueeze(0), w1, stride=2)[0],
                               rtol=1e-12, atol=1e-12)
    # repeat on a plane: the 1×1 conv of the 2×2 block sums (4 x average pooling)
    out = F.conv3d(vol, shortcut_to_dense(rep), stride=2)
    pooled = F.conv2d(4 * F.avg_pool2d(img.unsqueeze(0), 2), w1)[0]
    torch.testing.assert_close(read_plane(out, axis, 0), pooled, rtol=1e-12, atol=1e-12)
    # average: a constant volume gives the 2D response to a constant image
    const = rand(c).view(1, c, 1, 1, 1).expand(1, c, 2, 2, 2)
    torch.testing.assert_close(F.conv3d(const, shortcut_to_dense(avg), stride=2).flatten(),
                               (wt.t() @ const[0, :, 0, 0, 0]), rtol=1e-12, atol=1e-12)


def test_inflate_bn_copies_verbatim():
    bn = torch.nn.BatchNorm2d(5)
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.copy_(torch.randn(5))
        bn.running_var.copy_(torch.rand(5) + 0.5)
        bn.num_batches_tracked.fill_(7)
    sd = {f"layer1.0.bn1.{k}": v for k, v in bn.state_dict().items()}
    out = inflate_bn(sd, "layer1.0.bn1")
    bn1d = torch.nn.BatchNorm1d(5)
    bn1d.load_state_dict(out)  # strict: exactly BatchNorm1d's keys
    for k, v in bn.state_dict().items():
        assert torch.equal(bn1d.state_dict()[k], v), k
    x = torch.randn(3, 5, 4, 4)
    bn.eval()
    bn1d.eval()
    y1 = bn1d(x.permute(0, 2, 3, 1).reshape(-1, 5))
    torch.testing.assert_close(y1, bn(x).permute(0, 2, 3, 1).reshape(-1, 5))
    out["weight"].zero_()
    assert bn.weight.abs().sum() > 0  # a copy, not a view
    with pytest.raises(KeyError, match="layer1.0.bn2.running_var"):
        inflate_bn({"layer1.0.bn2.weight": torch.ones(2), "layer1.0.bn2.bias": torch.ones(2),
                    "layer1.0.bn2.running_mean": torch.ones(2)}, "layer1.0.bn2")
    with pytest.raises(ValueError, match="shapes"):
        inflate_bn({"weight": torch.ones(2), "bias": torch.ones(3), "running_mean": torch.ones(2),
                    "running_var": torch.ones(2)})


def test_local_dense_converters_agree_with_engine_layout():
    """The test's converters and the engine's layout module describe the same dense axis order."""
    layout = pytest.importorskip("i2p_ros.sparse.layout")
    for k in (3, 5):
        w = rand(k ** 3, 3, 4)
        assert torch.equal(layout.to_dense_weight(w), ours_to_dense(w, k))
        d = rand(k ** 3, 6)
        assert torch.equal(layout.to_dense_weight(d), ours_to_dense(d, k, depthwise=True))
    s = rand(8, 3, 4)
    assert torch.equal(layout.to_dense_weight(s), shortcut_to_dense(s))
