"""The engine on CUDA tensors gives the CPU results (skipped without a GPU; not counted as done here)."""

import pytest
import torch
from test_sparse_dense_ref import random_coords

from i2p_ros.sparse import Conv3d, SparseTensor, strategy, voxelize

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available on this machine")


@pytest.mark.parametrize("mode", ["scatter", "gather"])
def test_conv_chain_cuda_matches_cpu(mode):
    coords = random_coords(2, (9, 8, 7), 0.3, seed=1)
    feats = torch.randn(coords.shape[0], 4, dtype=torch.float64)
    convs = [Conv3d(4, 6, 3).double(), Conv3d(6, 6, 3, stride=2).double(),
             Conv3d(6, 4, 3, stride=2, transposed=True).double()]
    outs = []
    for dev in ("cpu", "cuda"):
        x = SparseTensor(feats.to(dev).requires_grad_(True), coords.to(dev))
        y = x
        with strategy(mode):
            for c in convs:
                y = c.to(dev)(y)
        y.feats.sum().backward()
        outs.append((y.feats.detach().cpu(), x.feats.grad.cpu()))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])


def test_voxelize_cuda_matches_cpu():
    pts = torch.rand(5000, 4, generator=torch.Generator().manual_seed(0)) * 4
    a, b = voxelize(pts, 0.1), voxelize(pts.cuda(), 0.1)
    assert torch.equal(a.coords, b.coords.cpu()) and torch.equal(a.inverse, b.inverse.cpu())
    torch.testing.assert_close(a.feats, b.feats.cpu())
