"""BatchNorm folding: the folded conv equals conv -> BatchNorm (eval) computed separately, for every conv kind,
in small networks and in the real lite0 model; folding that would change the output is refused."""

import pytest
import torch
from deploy_helpers import one_torch_thread, scan  # noqa: F401
from test_sparse_dense_ref import random_coords
from torch import nn

from i2p_ros.deploy.export import network_input
from i2p_ros.deploy.fold import FoldedBatchNorm, FoldError, find_conv_bn_pairs, fold_batchnorm, fold_into_conv
from i2p_ros.models.build import build_model, load_model_config
from i2p_ros.sparse import BatchNorm, Conv3d, ReLU, SparseTensor, strategy


def _input(seed: int, channels: int = 6) -> SparseTensor:
    coords = random_coords(2, (9, 8, 7), 0.35, seed)
    g = torch.Generator().manual_seed(seed)
    return SparseTensor(torch.randn(coords.shape[0], channels, generator=g), coords)


def _random_bn(c: int, seed: int, affine: bool = True) -> BatchNorm:
    g = torch.Generator().manual_seed(seed)
    bn = BatchNorm(c, eps=1e-3, affine=affine)
    bn.running_mean.copy_(torch.randn(c, generator=g))
    bn.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.1)
    if affine:
        with torch.no_grad():
            bn.weight.copy_(torch.randn(c, generator=g))
            bn.bias.copy_(torch.randn(c, generator=g))
    return bn.eval()


def _manual_bn(feats: torch.Tensor, bn: BatchNorm) -> torch.Tensor:
    """BatchNorm eval formula written out (independent of nn.BatchNorm1d and of the fold)."""
    y = (feats - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
    return y * bn.weight + bn.bias if bn.affine else y


@pytest.mark.parametrize("kind", ["sub3", "sub1", "down2", "down3_floor", "depthwise3", "depthwise_down3",
                                  "bias", "no_affine"])
def test_folded_conv_equals_conv_then_batchnorm(kind):
    torch.manual_seed(0)
    cin, cout = 6, 5
    kw = {"sub3": dict(kernel_size=3), "sub1": dict(kernel_size=1), "down2": dict(kernel_size=2, stride=2),
          "down3_floor": dict(kernel_size=3, stride=2, sites="floor"), "bias": dict(kernel_size=3, bias=True),
          "depthwise3": dict(kernel_size=3, depthwise=True), "no_affine": dict(kernel_size=3),
          "depthwise_down3": dict(kernel_size=3, stride=2, depthwise=True, sites="floor")}[kind]
    if kw.get("depthwise"):
        cout = cin
    conv = Conv3d(cin, cout, **kw)
    bn = _random_bn(cout, 1, affine=kind != "no_affine")
    x = _input(3)
    with torch.no_grad():
        ref = _manual_bn(conv(x).feats, bn)
        fold_into_conv(conv, bn)
        got = conv(SparseTensor(x.feats, x.coords)).feats
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_folded_transposed_conv_equals_conv_then_batchnorm():
    down = Conv3d(6, 6, 2, stride=2)
    up = Conv3d(6, 4, 2, stride=2, transposed=True)
    bn = _random_bn(4, 2)
    x = _input(4)
    with torch.no_grad():
        ref = _manual_bn(up(down(x)).feats, bn)
        fold_into_conv(up, bn)
        got = up(down(SparseTensor(x.feats, x.coords))).feats
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


class _Block(nn.Module):
    """conv-bn-relu, a residual conv-bn, a strided conv-bn, and a head; ``leak`` also reads a raw conv output."""

    def __init__(self, leak: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(Conv3d(6, 8, 3), _random_bn(8, 5), ReLU())
        self.conv = Conv3d(8, 8, 3)
        self.bn = _random_bn(8, 6)
        self.down = nn.Sequential(Conv3d(8, 8, 3, stride=2, depthwise=True, sites="floor"), _random_bn(8, 7))
        self.head = nn.Linear(8, 3)
        self.leak = leak

    def forward(self, x: SparseTensor) -> torch.Tensor:
        a = self.stem(x)
        raw = self.conv(a)
        b = self.bn(raw)
        s = b.feats + a.feats + (raw.feats if self.leak else 0)
        return self.head(self.down(b.replace(s)).feats)


def test_fold_batchnorm_finds_every_pair_and_keeps_the_output():
    torch.manual_seed(0)
    net = _Block().eval()
    x = _input(6)
    with torch.no_grad():
        ref = net(x)
    folded, pairs = fold_batchnorm(net, x)
    assert sorted(pairs) == sorted([("stem.0", "stem.1"), ("conv", "bn"), ("down.0", "down.1")])
    assert not any(isinstance(m, BatchNorm) for m in folded.modules())
    assert isinstance(folded.bn, FoldedBatchNorm)
    assert any(isinstance(m, BatchNorm) for m in net.modules()), "not inplace: the original keeps its BatchNorms"
    with torch.no_grad():
        torch.testing.assert_close(folded(SparseTensor(x.feats, x.coords)), ref, rtol=1e-5, atol=1e-5)
        with strategy("gather"):   # the export runs the folded model with the gather strategy
            torch.testing.assert_close(folded(SparseTensor(x.feats, x.coords)), ref, rtol=1e-5, atol=1e-5)


def test_fold_refuses_when_the_raw_conv_output_is_read_elsewhere():
    torch.manual_seed(0)
    net = _Block(leak=True).eval()
    with pytest.raises(FoldError, match="changed the output"):
        fold_batchnorm(net, _input(7))


def test_conv_used_twice_is_not_folded():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = Conv3d(6, 6, 3)
            self.bn = _random_bn(6, 8)

        def forward(self, x):
            return self.bn(self.conv(self.conv(x))).feats

    net = Twice().eval()
    assert find_conv_bn_pairs(net, _input(8)) == []


def test_lite0_folded_equals_eager_on_a_simulated_scan():
    torch.manual_seed(0)
    cfg = load_model_config("lite0")
    model, _ = build_model(cfg, prior="none")
    n_bn = sum(isinstance(m, BatchNorm) for m in model.modules())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():   # non-trivial statistics, or folding would be close to a no-op
        for m in model.modules():
            if isinstance(m, BatchNorm):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    model.eval()
    x = network_input(scan(48, seed=2), cfg)
    folded, pairs = fold_batchnorm(model, x, check=False)   # checked here instead, on another scan
    assert len(pairs) == n_bn
    assert not any(isinstance(m, BatchNorm) for m in folded.modules())
    pts = scan(64, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(folded(network_input(pts, cfg)), model(network_input(pts, cfg)),
                                   rtol=1e-4, atol=1e-5)
