"""SemanticKITTI label configuration: loading, validation and vectorised id maps.

The YAML keeps the official semantic-kitti-api numbering (``learning_map`` -> 0..19 with 0 =
"unlabeled", ignored). Networks here train on the 19 real classes, so this module adds one more
convention on top, in one place:

    training index = learning class - 1      (0 = car ... 18 = traffic-sign)
    learning class 0 (unlabeled, outlier, other-structure, other-object) -> IGNORE_INDEX = 255

Raw ids are what ``.label`` files and the ROS ``label`` field carry; ``to_raw`` maps training
indices back through ``learning_map_inv`` (255 -> 0 "unlabeled").
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

__all__ = [
    "IGNORE_INDEX",
    "RAW_ID_LIMIT",
    "LabelConfig",
    "LabelConfigError",
    "UnknownLabelError",
    "default_label_config_path",
    "load_label_config",
]

IGNORE_INDEX = 255
RAW_ID_LIMIT = 1 << 16  # raw semantic ids are the low 16 bits of a .label entry
_REQUIRED_KEYS = ("labels", "color_map", "learning_map", "learning_map_inv", "learning_ignore")
_CONFIG_NAME = "semantic-kitti.yaml"


class LabelConfigError(ValueError):
    """The label YAML is malformed or inconsistent (message names the file and key)."""


class UnknownLabelError(ValueError):
    """A label array holds raw ids the configuration does not know (message names the source)."""


def default_label_config_path() -> Path:
    """Where ``semantic-kitti.yaml`` lives: ``$I2P_ROS_LABEL_CONFIG``, the source tree, or share/i2p_ros/config.

    The source tree's ``config/`` comes first so an editable install reads the file being edited;
    an installed package (colcon / pip) finds the copy setup.py puts under ``share/i2p_ros/config``.
    """
    env = os.environ.get("I2P_ROS_LABEL_CONFIG")
    if env:
        return Path(env)
    candidates = [Path(__file__).resolve().parents[2] / "config" / _CONFIG_NAME]
    try:   # a colcon install: the share directory registered in the ament index
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("i2p_ros")) / "config" / _CONFIG_NAME)
    except Exception:   # ament_index not installed, or the package not in the index
        pass
    candidates.append(Path(sys.prefix) / "share" / "i2p_ros" / "config" / _CONFIG_NAME)
    for cand in candidates:
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"{_CONFIG_NAME} not found; looked in: " + ", ".join(map(str, candidates))
                            + " (set I2P_ROS_LABEL_CONFIG to its path)")


def _int_keyed(doc: Mapping, key: str, source: str) -> dict[int, object]:
    table = doc.get(key)
    if not isinstance(table, Mapping) or not table:
        raise LabelConfigError(f"{source}: '{key}' must be a non-empty mapping")
    out: dict[int, object] = {}
    for k, v in table.items():
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise LabelConfigError(f"{source}: '{key}' has non-integer or negative id {k!r}")
        out[k] = v
    return out


@dataclass(frozen=True, eq=False)
class LabelConfig:
    """A validated SemanticKITTI label configuration with lookup tables for whole arrays."""

    source: str
    names: dict[int, str]                       # raw id -> name
    color_map_bgr: dict[int, tuple[int, int, int]]
    content: dict[int, float]
    learning_map: dict[int, int]                # raw id -> learning class (0..19, 0 ignored)
    learning_map_inv: dict[int, int]            # learning class -> raw id
    learning_ignore: dict[int, bool]
    split: dict[str, list[int]] = field(default_factory=dict)

    # --- derived tables (filled in __post_init__) ---------------------------------------------
    raw_to_train_lut: np.ndarray = field(init=False, repr=False)   # uint8 [65536], 254 = unknown id
    train_to_raw_lut: np.ndarray = field(init=False, repr=False)   # uint16 [256], 255 -> 0
    raw_known: np.ndarray = field(init=False, repr=False)          # bool [65536]
    raw_rgb_lut: np.ndarray = field(init=False, repr=False)        # uint8 [65536, 3], RGB

    def __post_init__(self) -> None:
        known = np.zeros(RAW_ID_LIMIT, dtype=bool)
        lut = np.full(RAW_ID_LIMIT, IGNORE_INDEX, dtype=np.uint8)
        for raw, cls in self.learning_map.items():
            known[raw] = True
            lut[raw] = IGNORE_INDEX if self.learning_ignore[cls] else self._train_index[cls]
        inv = np.zeros(256, dtype=np.uint16)  # unmapped training indices (incl. 255) -> raw 0
        for cls, t in self._train_index.items():
            inv[t] = self.learning_map_inv[cls]
        rgb = np.zeros((RAW_ID_LIMIT, 3), dtype=np.uint8)
        for raw, bgr in self.color_map_bgr.items():
            rgb[raw] = bgr[::-1]
        for name, arr in (("raw_to_train_lut", lut), ("train_to_raw_lut", inv), ("raw_known", known),
                          ("raw_rgb_lut", rgb)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @property
    def _train_index(self) -> dict[int, int]:
        """learning class -> training index, for the non-ignored classes in increasing order."""
        kept = sorted(c for c, ign in self.learning_ignore.items() if not ign)
        return {c: i for i, c in enumerate(kept)}

    @property
    def num_classes(self) -> int:
        """Number of training classes (19 for SemanticKITTI)."""
        return sum(1 for ign in self.learning_ignore.values() if not ign)

    @property
    def class_names(self) -> list[str]:
        """Training index -> class name (name of the ``learning_map_inv`` raw id)."""
        return [self.names[self.learning_map_inv[c]] for c in sorted(self._train_index)]

    @property
    def train_colors_rgb(self) -> np.ndarray:
        """uint8 ``[num_classes, 3]`` RGB colour of each training class."""
        return self.raw_rgb_lut[self.train_to_raw_lut[: self.num_classes]]

    def sequences(self, split: str) -> list[int]:
        """Sequence numbers of a split (``train``, ``valid``/``val``, ``test``) from the YAML."""
        key = "valid" if split == "val" else split
        if key not in self.split:
            raise KeyError(f"{self.source}: no split '{split}' (have: {sorted(self.split)})")
        return list(self.split[key])

    def check_raw(self, raw: np.ndarray, source: str = "labels") -> None:
        """Raise UnknownLabelError naming ``source`` if ``raw`` holds ids missing from ``labels``."""
        raw = np.asarray(raw)
        if raw.size == 0:
            return
        if raw.min() < 0 or raw.max() >= RAW_ID_LIMIT:
            raise UnknownLabelError(f"{source}: raw semantic ids must be in [0, {RAW_ID_LIMIT}), "
                                    f"got range [{raw.min()}, {raw.max()}]")
        bad = ~self.raw_known[raw]
        if bad.any():
            ids = np.unique(raw[bad])
            raise UnknownLabelError(f"{source}: {int(bad.sum())} points carry raw ids unknown to "
                                    f"{self.source}: {ids[:20].tolist()}")

    def to_train(self, raw: np.ndarray, source: str = "labels") -> np.ndarray:
        """Raw semantic ids -> training indices (uint8, 0..num_classes-1, ignored -> 255); unknown ids raise."""
        raw = np.asarray(raw)
        self.check_raw(raw, source)
        return self.raw_to_train_lut[raw.astype(np.int64, copy=False)]

    def to_raw(self, train: np.ndarray) -> np.ndarray:
        """Training indices -> raw ids (uint16); 255 and any index >= num_classes -> 0 "unlabeled"."""
        train = np.asarray(train).astype(np.int64, copy=False)
        if train.size and (train.min() < 0 or train.max() > 255):
            raise ValueError(f"to_raw: training indices must be in [0, 255], got [{train.min()}, {train.max()}]")
        out = self.train_to_raw_lut[train]
        return np.where(train < self.num_classes, out, 0).astype(np.uint16)

    def colors_rgb(self, raw: np.ndarray) -> np.ndarray:
        """uint8 ``[..., 3]`` RGB colour of raw ids (the YAML stores BGR; unknown ids are black)."""
        return self.raw_rgb_lut[np.asarray(raw).astype(np.int64, copy=False)]


def _validate(doc: Mapping, source: str) -> LabelConfig:
    if not isinstance(doc, Mapping):
        raise LabelConfigError(f"{source}: top level must be a mapping, got {type(doc).__name__}")
    missing = [k for k in _REQUIRED_KEYS if k not in doc]
    if missing:
        raise LabelConfigError(f"{source}: missing keys {missing}")
    names = {k: str(v) for k, v in _int_keyed(doc, "labels", source).items()}
    colors: dict[int, tuple[int, int, int]] = {}
    for k, v in _int_keyed(doc, "color_map", source).items():
        if not (isinstance(v, list | tuple) and len(v) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in v)):
            raise LabelConfigError(f"{source}: color_map[{k}] must be 3 ints in 0..255 (BGR), got {v!r}")
        colors[k] = (int(v[0]), int(v[1]), int(v[2]))
    lmap = _int_keyed(doc, "learning_map", source)
    linv = _int_keyed(doc, "learning_map_inv", source)
    lign = _int_keyed(doc, "learning_ignore", source)
    content = ({k: float(v) for k, v in _int_keyed(doc, "content", source).items()}
               if "content" in doc else {})
    for raw in names:
        if raw >= RAW_ID_LIMIT:
            raise LabelConfigError(f"{source}: labels id {raw} does not fit in 16 bits")
        if raw not in lmap:
            raise LabelConfigError(f"{source}: raw id {raw} ({names[raw]}) has no learning_map entry")
        if raw not in colors:
            raise LabelConfigError(f"{source}: raw id {raw} ({names[raw]}) has no color_map entry")
    for raw, cls in lmap.items():
        if raw not in names:
            raise LabelConfigError(f"{source}: learning_map has raw id {raw} that is not in labels")
        if not isinstance(cls, int) or cls not in linv:
            raise LabelConfigError(f"{source}: learning_map[{raw}] = {cls!r} is not a learning_map_inv class")
    for cls, raw in linv.items():
        if not isinstance(raw, int) or raw not in lmap:
            raise LabelConfigError(f"{source}: learning_map_inv[{cls}] = {raw!r} is not a raw id in learning_map")
        if lmap[raw] != cls:
            raise LabelConfigError(f"{source}: inverse inconsistent: learning_map_inv[{cls}] = {raw} but "
                                   f"learning_map[{raw}] = {lmap[raw]}")
    if set(lign) != set(linv):
        raise LabelConfigError(f"{source}: learning_ignore classes {sorted(lign)} differ from "
                               f"learning_map_inv classes {sorted(linv)}")
    for cls, ign in lign.items():
        if not isinstance(ign, bool):
            raise LabelConfigError(f"{source}: learning_ignore[{cls}] must be true/false, got {ign!r}")
    kept = sum(1 for v in lign.values() if not v)
    if not 0 < kept < IGNORE_INDEX:
        raise LabelConfigError(f"{source}: need 1..254 non-ignored classes, got {kept}")
    split: dict[str, list[int]] = {}
    for name, seqs in (doc.get("split") or {}).items():
        if not isinstance(seqs, list) or not all(isinstance(s, int) and s >= 0 for s in seqs):
            raise LabelConfigError(f"{source}: split '{name}' must be a list of sequence numbers, got {seqs!r}")
        split[str(name)] = list(seqs)
    return LabelConfig(source=source, names=names, color_map_bgr=colors, content=content,
                       learning_map={k: int(v) for k, v in lmap.items()},
                       learning_map_inv={k: int(v) for k, v in linv.items()},
                       learning_ignore={k: bool(v) for k, v in lign.items()}, split=split)


_CACHE: dict[tuple[str, float], LabelConfig] = {}


def load_label_config(path: str | os.PathLike | None = None) -> LabelConfig:
    """Load and validate a semantic-kitti-api style YAML (default: the package's semantic-kitti.yaml).

    Results are cached per (path, mtime); a LabelConfig is immutable, so sharing it is safe.
    """
    p = Path(path) if path is not None else default_label_config_path()
    if not p.is_file():
        raise FileNotFoundError(f"label config {p} does not exist")
    key = (str(p.resolve()), p.stat().st_mtime)
    if key not in _CACHE:
        try:
            doc = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise LabelConfigError(f"{p}: not valid YAML: {exc}") from exc
        _CACHE[key] = _validate(doc, str(p))
    return _CACHE[key]
