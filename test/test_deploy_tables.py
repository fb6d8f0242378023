"""Table recipe: replaying the recorded conv geometry on a new scan builds exactly the tables the network itself
builds on that scan (names, order, values); a recipe that does not match the engine is refused."""

import dataclasses

import pytest
import torch
from deploy_helpers import one_torch_thread  # noqa: F401
from test_sparse_dense_ref import random_coords
from torch import nn

from i2p_ros.deploy.tables import RecipeError, TableRecipe, record_recipe
from i2p_ros.models.sparse_blocks import BasicBlock3d, ConvBNAct, MBConv3d
from i2p_ros.sparse import SparseTensor, cat, strategy


class SmallUNet(nn.Module):
    """Every conv kind the shipped models use: 3³ and 5³ submanifold, 2×2×2 and floor-site strided (ResNet
    block with shortcut, depthwise MBConv), 1×1×1, transposed back up with skips."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNAct(4, 8, 3)
        self.ds = ConvBNAct(8, 8, 2, stride=2)
        self.res = BasicBlock3d(8, 16, stride=2)
        self.mb = MBConv3d(16, 16, 5, stride=2, expand=2)
        self.up1 = ConvBNAct(16, 16, 2, stride=2, transposed=True)
        self.up2 = ConvBNAct(32, 8, 2, stride=2, transposed=True)
        self.up3 = ConvBNAct(16, 8, 2, stride=2, transposed=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: SparseTensor) -> torch.Tensor:
        a = self.stem(x)
        b = self.ds(a)
        c = self.res(b)
        d = self.mb(c)
        u = self.up1(d)
        u = self.up2(cat([u, c]))
        u = self.up3(cat([u, b]))
        return self.head(cat([u, a]).feats)


def _input(seed: int, extent=(14, 12, 6)) -> SparseTensor:
    coords = random_coords(1, extent, 0.3, seed)
    return SparseTensor(torch.randn(coords.shape[0], 4, generator=torch.Generator().manual_seed(seed)), coords)


def test_replayed_tables_equal_the_networks_own_tables_on_another_scan():
    torch.manual_seed(0)
    net = SmallUNet().eval()
    with torch.no_grad():
        _, recipe = record_recipe(net, _input(1))
        other = _input(2, extent=(11, 15, 7))
        with strategy("gather"):
            net(other)
    ref = other.cache.neighbour_tables()
    assert len(ref) >= 8 and any("_floor" in n for n in ref) and any(n.startswith("up_") for n in ref)
    assert any("_k5_" in n for n in ref)
    got = recipe.build(_input(2, extent=(11, 15, 7)))
    assert list(got) == list(ref)
    for name in ref:
        assert torch.equal(got[name], ref[name]), name
    # rows of each table are on the coordinate set the recipe says
    sets = recipe.table_sets
    sizes = [c.shape[0] for c in other.cache.coord_sets]
    for name, table in got.items():
        rows, indexed = sets[name]
        assert table.shape[0] == sizes[rows], name
        assert int(table.max()) == sizes[indexed], f"{name}: missing neighbours point at the zero row"


def test_recipe_round_trips_through_json_and_records_only_new_work():
    torch.manual_seed(0)
    net = SmallUNet().eval()
    with torch.no_grad():
        _, recipe = record_recipe(net, _input(3))
    assert TableRecipe.from_json(recipe.to_json()) == recipe
    names = recipe.table_names
    assert len(names) == len(set(names)), "each table is built by exactly one recorded step"
    assert recipe.set_strides == (1, 2, 4, 8)


def test_a_recipe_that_builds_other_tables_is_refused():
    torch.manual_seed(0)
    net = SmallUNet().eval()
    with torch.no_grad():
        _, recipe = record_recipe(net, _input(4))
    step = recipe.steps[0]
    bad = dataclasses.replace(recipe, steps=(dataclasses.replace(step, kernel_size=5),) + recipe.steps[1:])
    with pytest.raises(RecipeError, match="expects"):
        bad.build(_input(5))
    with pytest.raises(RecipeError, match="malformed"):
        TableRecipe.from_json({"steps": [{"in_set": 0}]})
