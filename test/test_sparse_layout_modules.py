"""Weight-layout converters, BatchNorm / activations / pooling against independent references."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from test_sparse_dense_ref import dense_weight, random_coords, sample_dense, to_dense

from i2p_ros.sparse import BatchNorm, Conv3d, GlobalPool, ReLU, ReLU6, SparseTensor, cat
from i2p_ros.sparse.layout import from_dense_weight, from_spconv_weight, to_dense_weight, to_spconv_weight

DT = torch.float64


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_dense_converter_matches_reference_and_roundtrips(k):
    w = torch.randn(k ** 3, 3, 4, dtype=DT)
    assert torch.equal(to_dense_weight(w), dense_weight(w, k))
    assert torch.equal(to_dense_weight(w, transposed=True), dense_weight(w, k, transposed=True))
    assert torch.equal(from_dense_weight(to_dense_weight(w)), w)
    assert torch.equal(from_dense_weight(to_dense_weight(w, transposed=True), transposed=True), w)
    dw = torch.randn(k ** 3, 5, dtype=DT)
    assert torch.equal(to_dense_weight(dw), dense_weight(dw, k))
    assert torch.equal(from_dense_weight(to_dense_weight(dw), depthwise=True), dw)


def test_dense_converter_reproduces_conv():
    """A conv loaded from a dense conv3d weight (via the converter) computes that conv on occupied sites."""
    coords = random_coords(2, (6, 5, 7), 0.4, seed=2)
    feats = torch.randn(coords.shape[0], 3, dtype=DT)
    wd = torch.randn(4, 3, 3, 3, 3, dtype=DT)
    conv = Conv3d(3, 4, 3).to(DT)
    with torch.no_grad():
        conv.kernel.copy_(from_dense_weight(wd))
    y = conv(SparseTensor(feats, coords))
    ref = sample_dense(F.conv3d(to_dense(coords, feats, 1, (0, 0, 0), (6, 5, 7), 2), wd, padding=1),
                       coords, 1, (0, 0, 0))
    torch.testing.assert_close(y.feats, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("order", ["xyz", "zyx"])
def test_spconv_converter_axis_order_and_roundtrip(order):
    k = 3
    w = torch.randn(27, 2, 5, dtype=DT)
    s = to_spconv_weight(w, order)
    assert s.shape == (5, 3, 3, 3, 2)
    assert torch.equal(from_spconv_weight(s, order), w)
    d = dense_weight(w, k)  # [Cout, Cin, kx, ky, kz]
    expect = d.permute(0, 2, 3, 4, 1) if order == "xyz" else d.permute(0, 4, 3, 2, 1)
    assert torch.equal(s, expect)


@pytest.mark.skipif(importlib.util.find_spec("spconv") is None, reason="spconv not installed")
def test_spconv_converter_against_spconv():
    import spconv.pytorch as sp  # noqa: PLC0415

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # spconv's CPU scatter is not thread safe
    try:
        _compare_with_spconv(sp)
    finally:
        torch.set_num_threads(threads)


def _compare_with_spconv(sp):
    coords = random_coords(2, (6, 5, 7), 0.4, seed=3)
    feats = torch.randn(coords.shape[0], 3)
    ours = Conv3d(3, 4, 3)
    ref = sp.SubMConv3d(3, 4, 3, bias=False, indice_key="t")
    with torch.no_grad():
        ref.weight.copy_(to_spconv_weight(ours.kernel.detach(), "zyx"))
    zyx = coords[:, [0, 3, 2, 1]].contiguous()
    out = ref(sp.SparseConvTensor(feats, zyx, [7, 5, 6], 2))
    torch.testing.assert_close(out.features, ours(SparseTensor(feats, coords)).feats, rtol=1e-5, atol=1e-5)


def test_batchnorm_is_batchnorm1d_on_feats():
    coords = random_coords(2, (5, 5, 5), 0.4, seed=4)
    feats = torch.randn(coords.shape[0], 6)
    bn, ref = BatchNorm(6), torch.nn.BatchNorm1d(6)
    assert list(bn.state_dict()) == list(ref.state_dict())
    with torch.no_grad():
        ref.weight.uniform_()
        ref.bias.uniform_()
    bn.load_state_dict(ref.state_dict())
    x = SparseTensor(feats, coords)
    for _ in range(2):
        torch.testing.assert_close(bn(x).feats, ref(feats))
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    bn.eval()
    ref.eval()
    torch.testing.assert_close(bn(x).feats, ref(feats))


def test_activations_and_cat():
    coords = random_coords(1, (4, 4, 4), 0.5, seed=5)
    feats = torch.randn(coords.shape[0], 3) * 8
    x = SparseTensor(feats, coords)
    assert torch.equal(ReLU()(x).feats, feats.clamp(min=0))
    assert torch.equal(ReLU6()(x).feats, feats.clamp(0, 6))
    assert ReLU()(x).coords is x.coords


def test_global_pool_per_sample():
    coords = random_coords(3, (4, 5, 3), 0.5, seed=6)
    feats = torch.randn(coords.shape[0], 4, dtype=DT)
    x = SparseTensor(feats, coords)
    avg, mx = GlobalPool("avg")(x), GlobalPool("max")(x)
    for b in range(3):
        rows = feats[coords[:, 0] == b]
        torch.testing.assert_close(avg[b], rows.mean(0))
        torch.testing.assert_close(mx[b], rows.max(0).values)
    y = cat([x, x.replace(feats * 2)])
    torch.testing.assert_close(GlobalPool("avg")(y)[:, 4:], 2 * avg)


def test_strategy_selection_global_and_scoped():
    from i2p_ros.sparse import get_strategy, set_strategy, strategy  # noqa: PLC0415

    assert get_strategy() == "scatter"
    with strategy("gather"):
        assert get_strategy() == "gather"
        with strategy("scatter"):
            assert get_strategy() == "scatter"
        assert get_strategy() == "gather"
    set_strategy("gather")
    try:
        assert get_strategy() == "gather"
    finally:
        set_strategy("scatter")
    with pytest.raises(ValueError, match="unknown"):
        set_strategy("fast")
