"""Per-forward-pass store of coordinate sets, kernel maps and neighbour tables.

Every SparseTensor derived from one network input shares one ``KernelMapCache``, so the encoder's maps are
built once and the decoder's transposed convs find the finer coordinates they must return to.

Coordinate sets are numbered in the order they are registered (``c0`` = the input, then every new set a
strided conv produces). Maps and neighbour tables are keyed by readable names built from those numbers
(e.g. ``"sub_c0_k3_d1"``), so the order and names are deterministic for a given network and can be used to
pass neighbour tables into an exported graph (see :meth:`neighbour_tables` and :meth:`preload`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from torch import Tensor


class KernelMapCache:
    """Holds coordinate sets (by stride), their parent links, kernel maps and neighbour tables."""

    def __init__(self) -> None:
        self._coord_sets: list[Tensor] = []  # cid -> coords
        self._cid_by_obj: dict[int, int] = {}  # id(coords) -> cid (coords kept alive in _coord_sets)
        self._stride_of: list[int] = []  # cid -> tensor stride
        self._parent: dict[int, int] = {}  # coarse cid -> finer cid it was downsampled from
        self._maps: dict[str, Any] = {}  # name -> KernelMap (insertion order = first use)
        self._tables: dict[str, Tensor] = {}  # name -> neighbour table [N_out, K]
        self._out_cid: dict[str, int] = {}  # strided map name -> cid of the coords it produced
        self._floor_child: dict[tuple[int, int], int] = {}  # (fine cid, stride ratio) -> its floor-site set
        self.build_ms = 0.0  # wall time spent building kernel maps and neighbour tables (pipeline timings)
        self._preloaded_tables: dict[str, Tensor] = {}
        self._preloaded_coords: list[Tensor] | None = None
        self.sorted_keys: dict[int, Any] = {}  # cid -> sorted key index (see kmap.SortedCoords)
        self.floor_cells: dict[tuple[int, int], Any] = {}  # (cid, ratio) -> floor-site set (see kmap.floor_cells)
        self._building = 0  # depth of nested get_map builds (only the outermost is timed)

    # ---------------------------------------------------------------- coordinate sets
    def coords_id(self, coords: Tensor, stride: int) -> int:
        """Number of this coordinate set, registering it on first sight (identity, not value, comparison)."""
        cid = self._cid_by_obj.get(id(coords))
        if cid is not None and self._coord_sets[cid] is coords:
            return cid
        cid = len(self._coord_sets)
        self._coord_sets.append(coords)
        self._cid_by_obj[id(coords)] = cid
        self._stride_of.append(int(stride))
        return cid

    def coords(self, cid: int) -> Tensor:
        return self._coord_sets[cid]

    def stride(self, cid: int) -> int:
        return self._stride_of[cid]

    def set_parent(self, coarse_cid: int, fine_cid: int) -> None:
        self._parent.setdefault(coarse_cid, fine_cid)

    def parent(self, coarse_cid: int) -> int | None:
        """The finer coordinate set a strided conv produced ``coarse_cid`` from (None for the input)."""
        return self._parent.get(coarse_cid)

    @property
    def coord_sets(self) -> list[Tensor]:
        """All coordinate sets in registration order (index = cid)."""
        return list(self._coord_sets)

    def next_preloaded_coords(self) -> Tensor | None:
        """Coordinates a strided conv should output instead of computing them (export replay), else None."""
        if self._preloaded_coords is None:
            return None
        cid = len(self._coord_sets)
        if cid >= len(self._preloaded_coords):
            raise KeyError(f"KernelMapCache: no preloaded coordinate set c{cid} "
                           f"({len(self._preloaded_coords)} were preloaded)")
        return self._preloaded_coords[cid]

    # ---------------------------------------------------------------- maps and tables
    def get_map(self, name: str, build: Callable[[], Any]) -> Any:
        kmap = self._maps.get(name)
        if kmap is None:
            t0 = time.perf_counter()
            self._building += 1
            try:
                kmap = build()
            finally:
                self._building -= 1
            if not self._building:  # a map built inside another's build is timed by the outer one
                self.build_ms += (time.perf_counter() - t0) * 1e3
            self._maps[name] = kmap
        return kmap

    def has_map(self, name: str) -> bool:
        return name in self._maps

    def set_output(self, name: str, cid: int) -> None:
        """Record that the strided conv ``name`` produced coordinate set ``cid``."""
        self._out_cid[name] = cid

    def output(self, name: str) -> int | None:
        return self._out_cid.get(name)

    def floor_child(self, fine_cid: int, ratio: int) -> int | None:
        """The floor-site coordinate set already made from ``fine_cid`` at this stride ratio, if any.

        All floor-site strided convs of one input share one coarse set (torchsparse keeps one coordinate
        set per stride too), so e.g. a ResNet block's 3x3x3 stride-2 conv and its 2x2x2 shortcut land on
        the same sites and their outputs can be added.
        """
        return self._floor_child.get((fine_cid, int(ratio)))

    def set_floor_child(self, fine_cid: int, ratio: int, coarse_cid: int) -> None:
        self._floor_child.setdefault((fine_cid, int(ratio)), coarse_cid)

    @property
    def preloaded(self) -> bool:
        """True for an export-replay cache (tables given, nothing is built)."""
        return bool(self._preloaded_tables)

    def get_table(self, name: str, build: Callable[[], Tensor]) -> Tensor:
        table = self._tables.get(name)
        if table is None:
            table = self._preloaded_tables.get(name)
            if table is None:
                if self._preloaded_tables:
                    raise KeyError(f"KernelMapCache: neighbour table {name!r} was not preloaded "
                                   f"(have {list(self._preloaded_tables)})")
                table = build()
            self._tables[name] = table
        return table

    def neighbour_tables(self) -> dict[str, Tensor]:
        """Gather-strategy neighbour tables ``[N_out, K]`` (int64) in order of first use, by name."""
        return dict(self._tables)

    @property
    def map_names(self) -> list[str]:
        return list(self._maps)

    @classmethod
    def preload(cls, tables: dict[str, Tensor], coord_sets: list[Tensor] | None = None) -> KernelMapCache:
        """A cache that serves the given neighbour tables (and coordinate sets) instead of building them.

        Used to trace a network for export: the tables (and coords) become graph inputs, no map building
        is traced. ``coord_sets[0]`` is the input coords; later entries are returned by strided convs in order.
        """
        cache = cls()
        cache._preloaded_tables = dict(tables)
        cache._preloaded_coords = list(coord_sets) if coord_sets is not None else None
        return cache

    def __repr__(self) -> str:
        sizes = [int(c.shape[0]) for c in self._coord_sets]
        return f"KernelMapCache(coord_sets={sizes}, maps={list(self._maps)}, tables={list(self._tables)})"
