"""Gather strategy: neighbour tables from the cache, replay with preloaded tables, ONNX export with dynamic N."""

import importlib.util

import numpy as np
import pytest
import torch
from test_sparse_dense_ref import random_coords
from torch import nn

from i2p_ros.sparse import BatchNorm, Conv3d, KernelMapCache, ReLU, SparseTensor, cat, strategy
from i2p_ros.sparse.kmap import neighbour_table, submanifold_map


class TinyUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(Conv3d(4, 8, 3), BatchNorm(8), ReLU())
        self.down = Conv3d(8, 16, 2, stride=2)
        self.mid = Conv3d(16, 16, 3, depthwise=True)
        self.up = Conv3d(16, 8, 2, stride=2, transposed=True)
        self.head = Conv3d(16, 3, 1, bias=True)

    def forward(self, x: SparseTensor) -> SparseTensor:
        a = self.stem(x)
        b = self.up(self.mid(self.down(a)))
        return self.head(cat([a, b]))


def _input(seed, extent=(9, 8, 7)):
    coords = random_coords(1, extent, 0.3, seed)
    return SparseTensor(torch.randn(coords.shape[0], 4, generator=torch.Generator().manual_seed(seed)), coords)


def test_neighbour_table_matches_brute_force():
    x = _input(1)
    cache = KernelMapCache()
    table = neighbour_table(submanifold_map(cache, cache.coords_id(x.coords, 1), 3))
    rows = {tuple(c): i for i, c in enumerate(x.coords.tolist())}
    n = x.coords.shape[0]
    for p, (b, cx, cy, cz) in enumerate(x.coords.tolist()):
        for i in range(27):
            dx, dy, dz = i % 3 - 1, (i // 3) % 3 - 1, i // 9 - 1
            assert table[p, i].item() == rows.get((b, cx + dx, cy + dy, cz + dz), n)


def test_tables_are_named_in_order_and_replay_matches():
    torch.manual_seed(0)
    net = TinyUNet().eval()
    x = _input(2)
    with strategy("gather"):
        ref = net(x).feats
    tables = x.cache.neighbour_tables()
    assert list(tables) == ["sub_c0_k3_d1", "down_c0_k2_s2_d1", "sub_c1_k3_d1", "up_c1_k2_s2_d1"]
    with strategy("scatter"):
        torch.testing.assert_close(net(_input(2)).feats, ref, rtol=1e-5, atol=1e-5)
    # a second run builds identical tables (deterministic)
    y = _input(2)
    with strategy("gather"):
        net(y)
    for k, t in y.cache.neighbour_tables().items():
        assert torch.equal(t, tables[k])
    # replay: nothing built, tables and coordinate sets served from the preloaded cache
    cache = KernelMapCache.preload(tables, x.cache.coord_sets)
    with strategy("gather"):
        out = net(SparseTensor(x.feats, x.coords, cache=cache))
    torch.testing.assert_close(out.feats, ref)
    assert cache.map_names == []
    with pytest.raises(RuntimeError, match="gather"):
        net(SparseTensor(x.feats, x.coords, cache=KernelMapCache.preload(tables, x.cache.coord_sets)))


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed")
def test_onnx_export_with_tables_as_inputs(tmp_path):
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    torch.manual_seed(0)
    net = TinyUNet().eval()
    x = _input(3)
    with strategy("gather"):
        net(x)
    names = list(x.cache.neighbour_tables())
    n_sets = len(x.cache.coord_sets)

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, feats, *tables):
            coords = [torch.zeros((t.shape[0], 4), dtype=torch.int32) for t in (feats,) + tables[1:2]]
            cache = KernelMapCache.preload(dict(zip(names, tables)), coords[:n_sets])
            with strategy("gather"):
                return self.net(SparseTensor(feats, coords[0], cache=cache)).feats

    tables = list(x.cache.neighbour_tables().values())
    path = tmp_path / "tiny.onnx"
    dyn = {"feats": {0: "n0"}, "out": {0: "n0"}}
    for nm, t in zip(names, tables):
        dyn[nm] = {0: "n0" if t.shape[0] == x.coords.shape[0] else "n1"}
    # the exporter restores the wrapper's train/eval flag recursively afterwards: keep everything in eval
    torch.onnx.export(Wrapper().eval(), (x.feats, *tables), str(path), input_names=["feats", *names],
                      output_names=["out"], dynamic_axes=dyn, dynamo=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Gather", "MatMul", "Add"} <= ops
    assert not ops & {"ScatterND", "ScatterElements", "NonZero", "Loop", "If", "TopK", "Unique"}
    # a different input size runs through the same graph
    x2 = _input(4, extent=(6, 11, 5))
    assert not net.training
    with strategy("gather"):
        ref = net(x2).feats.detach().numpy()
    feeds = {"feats": x2.feats.numpy()}
    feeds.update({k: v.numpy() for k, v in x2.cache.neighbour_tables().items()})
    sess = ort.InferenceSession(str(path))
    got = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})[0]
    assert got.shape == ref.shape and ref.shape[0] != x.coords.shape[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
