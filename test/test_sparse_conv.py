"""Every sparse conv variant against dense conv3d / conv_transpose3d on the occupied sites (float64)."""

import pytest
import torch
import torch.nn.functional as F
from test_sparse_dense_ref import dense_weight, expected_down_sites, offsets, random_coords, sample_dense, to_dense

import i2p_ros.sparse.plan as plan_mod
from i2p_ros.sparse import Conv3d, SparseTensor, strategy
from i2p_ros.sparse.kmap import offset_index

DT = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture(autouse=True, params=["one_block", "many_blocks"])
def block_size(request, monkeypatch):
    """Run every test with the default plan blocks (one block on these small grids) and with tiny blocks."""
    if request.param == "many_blocks":
        monkeypatch.setattr(plan_mod, "DEFAULT_BLOCK_PAIRS", 5)
    return request.param


def _dense_sub(feats, coords, conv, stride_in, origin, shape, batch):
    d = to_dense(coords, feats, stride_in, origin, shape, batch)
    k, dil = conv.kernel_size, conv.dilation
    pad = (k // 2) * dil
    if conv.depthwise:
        w = dense_weight(conv.kernel.detach(), k)
        y = F.conv3d(d, w, padding=pad, dilation=dil, groups=w.shape[0])
    elif conv.transposed:
        y = F.conv_transpose3d(d, dense_weight(conv.kernel.detach(), k, transposed=True), padding=pad,
                               dilation=dil)
    else:
        y = F.conv3d(d, dense_weight(conv.kernel.detach(), k), padding=pad, dilation=dil)
    if conv.bias is not None:
        y = y + conv.bias.detach().view(1, -1, 1, 1, 1)
    return sample_dense(y, coords, stride_in, origin)


def _make(batch, extent, density, seed, stride_in=1, origin=(0, 0, 0), c=3):
    coords = random_coords(batch, extent, density, seed, stride_in, origin)
    g = torch.Generator().manual_seed(seed + 100)
    feats = torch.randn(coords.shape[0], c, generator=g, dtype=DT)
    return SparseTensor(feats, coords, stride_in)


@pytest.mark.parametrize("mode", ["scatter", "gather"])
@pytest.mark.parametrize("k,dil,extent,stride_in,origin,depthwise,bias,transposed", [
    (3, 1, (5, 6, 7), 1, (0, 0, 0), False, False, False),
    (3, 1, (6, 5, 4), 2, (-4, 2, -6), False, True, False),   # stride-2 tensor, negative coords
    (5, 1, (6, 7, 5), 1, (-3, -2, 1), False, False, False),
    (3, 2, (7, 6, 8), 1, (0, 0, 0), False, False, False),    # dilation
    (1, 1, (4, 5, 3), 1, (0, 0, 0), False, True, False),
    (3, 1, (6, 5, 7), 1, (1, -1, 0), True, False, False),    # depthwise
    (5, 1, (5, 6, 5), 1, (0, 0, 0), True, True, False),
    (3, 1, (5, 6, 7), 1, (0, 0, 0), False, False, True),     # transposed, stride 1
])
def test_submanifold_matches_dense(mode, k, dil, extent, stride_in, origin, depthwise, bias, transposed):
    x = _make(3, extent, 0.35, seed=k * 10 + dil + stride_in, stride_in=stride_in, origin=origin)
    conv = Conv3d(3, 3 if depthwise else 4, k, dilation=dil, bias=bias, depthwise=depthwise,
                  transposed=transposed).to(DT)
    with strategy(mode):
        y = conv(x)
    assert y.coords is x.coords and y.stride == stride_in
    ref = _dense_sub(x.feats, x.coords, conv, stride_in, origin, extent, 3)
    torch.testing.assert_close(y.feats, ref, **TOL)


@pytest.mark.parametrize("mode", ["scatter", "gather"])
@pytest.mark.parametrize("k,dil,extent,stride_in,origin,sites", [
    (2, 1, (5, 6, 7), 1, (0, 0, 0), "reachable"),
    (2, 1, (4, 7, 5), 2, (-6, 2, 0), "reachable"),
    (3, 1, (5, 6, 7), 1, (-3, 1, 2), "reachable"),    # min coordinate not a multiple of the output stride
    (3, 1, (6, 4, 5), 2, (0, -4, 2), "reachable"),
    (3, 2, (7, 6, 8), 1, (0, 0, 0), "reachable"),
    (3, 1, (5, 6, 7), 1, (-3, 1, 2), "floor"),        # torchsparse 1.x output sites
    (5, 1, (6, 5, 7), 2, (2, -2, 0), "floor"),
])
def test_strided_and_transposed_match_dense(mode, k, dil, extent, stride_in, origin, sites):
    batch = 2
    x = _make(batch, extent, 0.3, seed=7 * k + dil + stride_in, stride_in=stride_in, origin=origin)
    down = Conv3d(3, 4, k, stride=2, dilation=dil, bias=True, sites=sites).to(DT)
    up = Conv3d(4, 2, k, stride=2, dilation=dil, transposed=True, sites=sites).to(DT)
    with strategy(mode):
        y = down(x)
        z = up(y)
    s_out = stride_in * 2
    assert y.stride == s_out
    # output sites: exactly the DESIGN.md rule (brute force), each once
    got = {tuple(r) for r in y.coords.tolist()}
    assert len(got) == y.coords.shape[0]
    assert got == expected_down_sites(x.coords, stride_in, k, 2, dil, floor=sites == "floor")
    # down: dense strided conv3d evaluated at the output sites (grid origin on a multiple of s_out)
    o2 = tuple((v // s_out) * s_out for v in origin)
    shape = tuple((origin[a] - o2[a]) // stride_in + extent[a] + 2 * k * dil for a in range(3))
    dx = to_dense(x.coords, x.feats, stride_in, o2, shape, batch)
    pad = (k // 2) * dil if k % 2 else 0
    wd = dense_weight(down.kernel.detach(), k)
    yd = F.conv3d(dx, wd, bias=down.bias.detach(), stride=2, padding=pad, dilation=dil)
    torch.testing.assert_close(y.feats, sample_dense(yd, y.coords, s_out, o2), **TOL)
    # transposed: back exactly to the finer sites, = dense conv_transpose3d at those sites
    assert z.coords is x.coords and z.stride == stride_in
    dy = to_dense(y.coords, y.feats.detach(), s_out, o2, yd.shape[2:], batch)
    zd = F.conv_transpose3d(dy, dense_weight(up.kernel.detach(), k, transposed=True), stride=2, padding=pad,
                            dilation=dil, output_padding=1)
    torch.testing.assert_close(z.feats, sample_dense(zd, x.coords, stride_in, o2), **TOL)


def test_gradients_match_dense_autograd():
    """Feature and weight gradients of a submanifold + down + up chain equal those of the dense equivalent."""
    x = _make(2, (6, 5, 7), 0.35, seed=3, c=3)
    x.feats.requires_grad_(True)
    sub = Conv3d(3, 4, 3, bias=True).to(DT)
    down = Conv3d(4, 3, 3, stride=2).to(DT)
    up = Conv3d(3, 2, 3, stride=2, transposed=True).to(DT)
    out = up(down(sub(x)))
    g = torch.Generator().manual_seed(9)
    r = torch.randn(out.feats.shape, generator=g, dtype=DT)
    (out.feats * r).sum().backward()

    shape = (6 + 6, 5 + 6, 7 + 6)
    xd = to_dense(x.coords, x.feats.detach(), 1, (0, 0, 0), shape, 2).requires_grad_(True)
    mask = to_dense(x.coords, torch.ones(x.coords.shape[0], 1, dtype=DT), 1, (0, 0, 0), shape, 2)
    w_sub = dense_weight(sub.kernel.detach(), 3).requires_grad_(True)
    w_down = dense_weight(down.kernel.detach(), 3).requires_grad_(True)
    w_up = dense_weight(up.kernel.detach(), 3, transposed=True).requires_grad_(True)
    b_sub = sub.bias.detach().clone().requires_grad_(True)
    h = F.conv3d(xd, w_sub, b_sub, padding=1) * mask          # submanifold: only occupied sites survive
    y_sites = down(sub(SparseTensor(x.feats.detach(), x.coords))).coords
    ymask = to_dense(y_sites, torch.ones(y_sites.shape[0], 1, dtype=DT), 2, (0, 0, 0), (6, 6, 7), 2)
    h2 = F.conv3d(h, w_down, stride=2, padding=1) * ymask
    h3 = F.conv_transpose3d(h2, w_up, stride=2, padding=1, output_padding=1)[:, :, :12, :11, :13]
    rd = to_dense(x.coords, r, 1, (0, 0, 0), shape, 2)
    (h3 * rd).sum().backward()
    torch.testing.assert_close(x.feats.grad, sample_dense(xd.grad, x.coords, 1, (0, 0, 0)), **TOL)
    torch.testing.assert_close(sub.bias.grad, b_sub.grad, **TOL)
    for conv, wd, tr in ((sub, w_sub, False), (down, w_down, False), (up, w_up, True)):
        torch.testing.assert_close(dense_weight(conv.kernel.grad, 3, transposed=tr), wd.grad, **TOL)


@pytest.mark.parametrize("variant", ["sub3", "sub3_dw_bias", "down2", "down3", "up3", "sub5_dil", "up2",
                                     "up2_after_floor3", "down2_input_grad_only"])
def test_gradcheck_tiny(variant):
    """Also the one-pair-per-output path (2x2x2 up-convs, and the input gradient of a 2x2x2 down-conv)."""
    x = _make(2, (3, 4, 3), 0.5, seed=11, c=2)
    kw = {"sub3": dict(kernel_size=3), "sub3_dw_bias": dict(kernel_size=3, depthwise=True, bias=True),
          "down2": dict(kernel_size=2, stride=2), "down3": dict(kernel_size=3, stride=2, bias=True),
          "up3": dict(kernel_size=3, stride=2), "sub5_dil": dict(kernel_size=5, dilation=2),
          "up2": dict(kernel_size=2, stride=2), "up2_after_floor3": dict(kernel_size=2, stride=2),
          "down2_input_grad_only": dict(kernel_size=2, stride=2)}[variant]
    cout = 2 if kw.get("depthwise") else 3
    if variant.startswith("up"):
        first = {"up3": dict(kernel_size=3), "up2": dict(kernel_size=2),
                 "up2_after_floor3": dict(kernel_size=3, sites="floor")}[variant]
        coarse = Conv3d(2, 2, stride=2, **first).to(DT)(x)
        x = coarse.replace(coarse.feats.detach())
        conv = Conv3d(2, cout, transposed=True, **kw).to(DT)
    else:
        conv = Conv3d(2, cout, **kw).to(DT)
    params = [conv.kernel] + ([conv.bias] if conv.bias is not None else [])
    if variant.endswith("input_grad_only"):
        params = []
        conv.requires_grad_(False)

    for mode in ("scatter", "gather"):
        def f(feats, *p, mode=mode):
            with strategy(mode):
                return conv(x.replace(feats)).feats
        assert torch.autograd.gradcheck(f, (x.feats.clone().requires_grad_(True), *params), fast_mode=True)


def test_scatter_equals_gather_on_larger_grid():
    x = _make(2, (12, 11, 9), 0.3, seed=21, c=5)
    for conv in (Conv3d(5, 6, 3), Conv3d(5, 5, 3, depthwise=True), Conv3d(5, 6, 2, stride=2),
                 Conv3d(5, 6, 3, stride=2), Conv3d(5, 6, 5, dilation=2)):
        conv = conv.to(DT)
        with strategy("scatter"):
            a = conv(x).feats
        with strategy("gather"):
            b = conv(x).feats
        torch.testing.assert_close(a, b, **TOL)


def test_offset_order_pinned_by_hand():
    """One voxel with one neighbour at +x: the output at the voxel uses exactly W[index(+1, 0, 0)]."""
    coords = torch.tensor([[0, 5, 5, 5], [0, 6, 5, 5]], dtype=torch.int32)
    feats = torch.tensor([[0.0], [1.0]], dtype=DT)   # only the +x neighbour carries a value
    conv = Conv3d(1, 1, 3).to(DT)
    with torch.no_grad():
        conv.kernel.copy_(torch.arange(27, dtype=DT).view(27, 1, 1))
    y = conv(SparseTensor(feats, coords))
    # DESIGN.md: i = (dz+r)*9 + (dy+r)*3 + (dx+r) -> (1,0,0) -> 9+3+2 = 14; the neighbour itself sees (-1,0,0) -> 12
    assert offset_index(3, 1, 0, 0) == 14
    assert y.feats[:, 0].tolist() == [14.0, 13.0]
    # +y and +z neighbours: 16 and 22
    for nb, idx in (([0, 5, 6, 5], 16), ([0, 5, 5, 6], 22)):
        c2 = torch.tensor([[0, 5, 5, 5], nb], dtype=torch.int32)
        assert conv(SparseTensor(feats, c2)).feats[0, 0].item() == idx
    # k = 2, stride 2: x slowest, i = dx*4 + dy*2 + dz; a voxel at cell offset (1, 0, 0) uses W[4]
    conv2 = Conv3d(1, 1, 2, stride=2).to(DT)
    with torch.no_grad():
        conv2.kernel.copy_(torch.arange(8, dtype=DT).view(8, 1, 1))
    for (dx, dy, dz), idx in (((1, 0, 0), 4), ((0, 1, 0), 2), ((0, 0, 1), 1), ((1, 1, 1), 7)):
        c = torch.tensor([[0, 4 + dx, 6 + dy, 2 + dz]], dtype=torch.int32)
        y2 = conv2(SparseTensor(torch.ones(1, 1, dtype=DT), c))
        assert y2.coords.tolist() == [[0, 4, 6, 2]]
        assert y2.feats.item() == idx
    assert offsets(2)[4] == (1, 0, 0)


def test_transposed_needs_finer_coords():
    x = _make(1, (4, 4, 4), 0.5, seed=1)
    with pytest.raises(ValueError, match="finer coordinates"):
        Conv3d(3, 3, 2, stride=2, transposed=True)(SparseTensor(x.feats, x.coords * 2, stride=2))


def test_maps_are_cached_and_reused():
    x = _make(2, (6, 6, 6), 0.4, seed=4)
    c1, c2 = Conv3d(3, 3, 3).to(DT), Conv3d(3, 3, 3).to(DT)
    down, up = Conv3d(3, 3, 2, stride=2).to(DT), Conv3d(3, 3, 2, stride=2, transposed=True).to(DT)
    y = c2(c1(x))
    z = up(c1_ := down(y))
    assert z.coords is x.coords
    names = x.cache.map_names
    assert names.count("sub_c0_k3_d1") == 1
    assert "down_c0_k2_s2_d1" in names and "up_c1_k2_s2_d1" in names
    assert x.cache.parent(1) == 0 and c1_.coords is x.cache.coords(1)
