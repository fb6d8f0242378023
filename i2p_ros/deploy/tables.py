"""Neighbour tables of an exported network, rebuilt for every scan without the network.

An exported graph takes every neighbour table as an input, so a runner must build exactly the tables the
network used, in the same order, for each new scan. The tables depend only on coordinates and on each
conv's geometry (kernel size, stride, dilation, transposed, output-site rule), not on its weights. So at
export time we record a *recipe* — the geometry of every conv call that produced a new table or a new
coordinate set, in call order — and a runner replays it with 1-channel depthwise ``Conv3d`` modules of the
same geometry on the scan's coordinates. The engine's cache then builds and names the tables exactly as in
the full network (the names are checked), at a fraction of the cost, on the scan's device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..sparse import Conv3d, SparseTensor, strategy

__all__ = ["ConvStep", "TableRecipe", "RecipeError", "record_recipe"]


class RecipeError(RuntimeError):
    """The engine built different tables than the recipe says (e.g. a model exported by another engine)."""


@dataclass(frozen=True)
class ConvStep:
    """One conv call: its geometry, the coordinate set it read, and what it added to the cache."""

    in_set: int                  # coordinate set the conv's input lives on
    out_set: int                 # coordinate set of its output (rows of its table)
    kernel_size: int
    stride: int
    dilation: int
    transposed: bool
    sites: str
    tables: tuple[str, ...]      # neighbour tables this call added (in order)


@dataclass(frozen=True)
class TableRecipe:
    """Every table-producing conv call of a network in order, plus the coordinate sets' strides."""

    steps: tuple[ConvStep, ...]
    set_strides: tuple[int, ...]

    @property
    def table_names(self) -> list[str]:
        return [name for step in self.steps for name in step.tables]

    @property
    def table_sets(self) -> dict[str, tuple[int, int]]:
        """Table name -> (set of its rows, set its entries index)."""
        return {name: (s.out_set, s.in_set) for s in self.steps for name in s.tables}

    def to_json(self) -> dict:
        return {"steps": [asdict(s) for s in self.steps], "set_strides": list(self.set_strides)}

    @classmethod
    def from_json(cls, data: dict, source: str = "recipe") -> TableRecipe:
        try:
            steps = tuple(ConvStep(**{**s, "tables": tuple(s["tables"])}) for s in data["steps"])
            return cls(steps, tuple(int(v) for v in data["set_strides"]))
        except (KeyError, TypeError) as err:
            raise RecipeError(f"{source}: malformed table recipe ({err})") from err

    def build(self, x: SparseTensor) -> dict[str, Tensor]:
        """All neighbour tables for the stride-1 tensor ``x``, by name in recipe order (built in ``x.cache``).

        The cache's ``build_ms`` then holds the map-building time, which the pipeline reports as
        ``kernel_maps``.
        """
        cache = x.cache
        if cache.coords_id(x.coords, x.stride) != 0:
            raise RecipeError("TableRecipe.build needs a fresh network input (its coordinates must be set c0)")
        convs: dict[tuple, Conv3d] = {}
        with strategy("gather"):
            for step in self.steps:
                if step.in_set >= len(cache.coord_sets):
                    raise RecipeError(f"recipe step on coordinate set c{step.in_set}, but only "
                                      f"{len(cache.coord_sets)} sets exist at that point")
                before = list(cache.neighbour_tables())
                coords = cache.coords(step.in_set)
                feats = torch.ones((coords.shape[0], 1), dtype=x.feats.dtype, device=x.device)
                key = (step.kernel_size, step.stride, step.dilation, step.transposed, step.sites)
                conv = convs.get(key)
                if conv is None:
                    conv = convs[key] = _probe_conv(*key).to(x.device, x.feats.dtype)
                conv(SparseTensor(feats, coords, cache.stride(step.in_set), cache))
                added = [n for n in cache.neighbour_tables() if n not in before]
                if tuple(added) != step.tables:
                    raise RecipeError(f"replaying conv k{step.kernel_size} s{step.stride} on c{step.in_set} built "
                                      f"tables {added}, the exported graph expects {list(step.tables)}")
        tables = cache.neighbour_tables()
        return {name: tables[name] for name in self.table_names}


def _probe_conv(kernel_size: int, stride: int, dilation: int, transposed: bool, sites: str) -> Conv3d:
    """A 1-channel depthwise conv of the given geometry: builds the map and table, costs ~nothing to run."""
    conv = Conv3d(1, 1, kernel_size, stride=stride, dilation=dilation, transposed=transposed, depthwise=True,
                  strategy="gather", sites=sites)
    conv.requires_grad_(False)
    return conv


def record_recipe(model: nn.Module, x: SparseTensor,
                  run: Callable[[nn.Module, SparseTensor], Tensor] | None = None) -> tuple[Tensor, TableRecipe]:
    """Run ``model`` on ``x`` with the gather strategy, recording which conv calls made which tables.

    Returns the model's output and the recipe; ``x.cache.neighbour_tables()`` then holds the tables.
    """
    steps: list[ConvStep] = []
    state: dict[int, tuple[int, list[str], int]] = {}

    def pre(module: Conv3d, args: tuple) -> None:
        inp: SparseTensor = args[0]
        cache = inp.cache
        cid = cache.coords_id(inp.coords, inp.stride)  # the conv registers it first thing too: same numbering
        state[id(module)] = (cid, list(cache.neighbour_tables()), len(cache.coord_sets))

    def post(module: Conv3d, args: tuple, out: SparseTensor) -> None:
        cid, before, n_sets = state.pop(id(module))
        cache = out.cache
        added = tuple(n for n in cache.neighbour_tables() if n not in before)
        if not added and len(cache.coord_sets) == n_sets:
            return  # reused maps: nothing to replay
        steps.append(ConvStep(cid, cache.coords_id(out.coords, out.stride), module.kernel_size, module.stride,
                              module.dilation, module.transposed, module.sites, added))

    handles = []
    for m in model.modules():
        if isinstance(m, Conv3d):
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
    try:
        with strategy("gather"):
            out = run(model, x) if run is not None else model(x)
    finally:
        for h in handles:
            h.remove()
    strides = tuple(x.cache.stride(i) for i in range(len(x.cache.coord_sets)))
    return out, TableRecipe(tuple(steps), strides)
