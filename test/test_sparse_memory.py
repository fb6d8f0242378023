"""A forward/backward pass must free its kernel maps and plans by reference counting alone.

Why it matters: objects in a reference cycle are only freed by Python's cyclic garbage collector, which runs
late and rarely once they have aged into its older generations. Per-frame maps and plans caught in cycles
then pile up between collections, and a long-running node or training job's memory climbs.
"""

import gc
import weakref

import torch
from test_sparse_dense_ref import random_coords

from i2p_ros.sparse import BatchNorm, Conv3d, SparseTensor, cat


def _unet_step(x: SparseTensor, backward: bool) -> torch.Tensor:
    torch.manual_seed(0)
    stem = Conv3d(3, 4, 3)
    down = Conv3d(4, 4, 3, stride=2, sites="floor")
    dw = Conv3d(4, 4, 5, depthwise=True)
    up = Conv3d(4, 4, 2, stride=2, transposed=True)
    fuse = Conv3d(8, 2, 3)
    bn = BatchNorm(4)
    s = stem(x)
    y = up(dw(bn(down(s))))
    out = fuse(cat([y, s])).feats
    if backward:
        out.square().sum().backward()
    return out


def test_maps_plans_and_transposes_are_freed_without_the_cyclic_collector():
    coords = random_coords(2, (10, 9, 8), 0.35, seed=5)
    gc.collect()
    gc.disable()
    try:
        for backward in (False, True):
            x = SparseTensor(torch.randn(coords.shape[0], 3, requires_grad=backward), coords)
            out = _unet_step(x, backward)
            cache = x.cache
            maps = [cache.get_map(name, lambda: None) for name in cache.map_names]
            # transposes made by the up-conv and (with backward) by every conv's input gradient
            partners = [m._transposed for m in maps if m._transposed is not None]
            assert partners and any(m._plans for m in maps)
            refs = [weakref.ref(o) for o in (cache, *maps, *partners)]
            del x, out, cache, maps, partners
            alive = [r() for r in refs if r() is not None]
            assert not alive, f"{len(alive)} of {len(refs)} objects survive without gc: {alive[:3]}"
    finally:
        gc.enable()
