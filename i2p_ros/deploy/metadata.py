"""What an exported ONNX file says about itself (``metadata_props``), and the checks runners make on it.

An exported graph is only correct with the preprocessing it was exported for (voxel size, input feature
columns), the label map of its classes, and neighbour tables built the way the exporting engine built them.
All of that travels in the file as string properties (JSON where structured), so a runner can rebuild the
pipeline from the ONNX file alone and refuse a file that does not match its configuration:

``i2p_ros.format``        ``i2p_ros-onnx/1``
``model_name``            e.g. ``lite0``
``model_config``          the full :class:`~i2p_ros.models.build.ModelConfig` (JSON)
``class_names``           training index -> SemanticKITTI class name (JSON list)
``raw_ids``               training index -> raw SemanticKITTI id, the label map (JSON list)
``voxel_size``            metres
``in_features``           feature columns of the ``feats`` input (JSON list, e.g. x, y, z, intensity)
``engine_version``        i2p_ros version that exported it
``inputs``                graph input names in order: ``feats`` then every neighbour table (JSON list)
``table_recipe``          conv geometry that rebuilds the tables (JSON, see :mod:`.tables`)
``set_sizes_example``     voxels per coordinate set on a typical full-size scan (TensorRT opt shapes)
``precision``             ``fp32`` | ``fp16`` (graph internals; inputs/outputs are always fp32)
``opset``, ``source_checkpoint_sha256``, ``bn_folded``
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..models.build import ModelConfig, model_config_from_dict
from .tables import RecipeError, TableRecipe


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (identifies checkpoints and ONNX files in metadata/caches)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

__all__ = ["FORMAT", "FEATS_INPUT", "LOGITS_OUTPUT", "DeployError", "ExportMetadata", "MetadataMismatch",
           "read_onnx_metadata", "check_label_config"]

FORMAT = "i2p_ros-onnx/1"
FEATS_INPUT = "feats"
LOGITS_OUTPUT = "logits"


class DeployError(RuntimeError):
    """An exported model file cannot be used (missing, corrupt, not ours); the message names the file."""


class MetadataMismatch(DeployError):
    """The model's metadata contradicts the configuration it is used with (or itself)."""


@dataclass(frozen=True)
class ExportMetadata:
    model_config: ModelConfig
    class_names: list[str]
    raw_ids: list[int]
    engine_version: str
    recipe: TableRecipe
    set_sizes_example: list[int] = field(default_factory=list)
    precision: str = "fp32"
    opset: int = 17
    source_checkpoint_sha256: str = ""
    bn_folded: int = 0

    @property
    def model_name(self) -> str:
        return self.model_config.name

    @property
    def voxel_size(self) -> float:
        return float(self.model_config.voxel_size)

    @property
    def in_features(self) -> list[str]:
        return list(self.model_config.in_features)

    @property
    def table_names(self) -> list[str]:
        return self.recipe.table_names

    @property
    def inputs(self) -> list[str]:
        return [FEATS_INPUT, *self.table_names]

    def to_props(self) -> dict[str, str]:
        from ..config import to_mapping

        return {
            "i2p_ros.format": FORMAT,
            "model_name": self.model_name,
            "model_config": json.dumps(to_mapping(self.model_config)),
            "class_names": json.dumps(list(self.class_names)),
            "raw_ids": json.dumps([int(r) for r in self.raw_ids]),
            "voxel_size": repr(self.voxel_size),
            "in_features": json.dumps(self.in_features),
            "engine_version": self.engine_version,
            "inputs": json.dumps(self.inputs),
            "table_recipe": json.dumps(self.recipe.to_json()),
            "set_sizes_example": json.dumps([int(n) for n in self.set_sizes_example]),
            "precision": self.precision,
            "opset": str(int(self.opset)),
            "source_checkpoint_sha256": self.source_checkpoint_sha256,
            "bn_folded": str(int(self.bn_folded)),
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str) -> ExportMetadata:
        """Parse and cross-check the properties; every problem is a :class:`DeployError` naming ``source``."""
        if props.get("i2p_ros.format") != FORMAT:
            got = props.get("i2p_ros.format")
            raise DeployError(f"{source} is not an i2p_ros export (metadata 'i2p_ros.format' = {got!r}, expected "
                              f"{FORMAT!r}); export it with i2p-export --checkpoint CKPT --out FILE.onnx")

        def get(key: str) -> str:
            if key not in props:
                raise DeployError(f"{source}: metadata lacks {key!r}")
            return props[key]

        def get_json(key: str) -> Any:
            try:
                return json.loads(get(key))
            except json.JSONDecodeError as err:
                raise DeployError(f"{source}: metadata {key!r} is not valid JSON ({err})") from err

        try:
            cfg = model_config_from_dict(get_json("model_config"), source=f"{source}:model_config")
            recipe = TableRecipe.from_json(get_json("table_recipe"), source=f"{source}:table_recipe")
        except (ConfigError, RecipeError) as err:
            raise DeployError(str(err)) from err
        try:
            meta = cls(cfg, [str(n) for n in get_json("class_names")], [int(r) for r in get_json("raw_ids")],
                       get("engine_version"), recipe, [int(n) for n in get_json("set_sizes_example")],
                       get("precision"), int(get("opset")), props.get("source_checkpoint_sha256", ""),
                       int(props.get("bn_folded", "0")))
        except (TypeError, ValueError) as err:
            raise DeployError(f"{source}: malformed metadata value ({err})") from err
        meta._check_consistent(props, source)
        return meta

    def _check_consistent(self, props: Mapping[str, str], source: str) -> None:
        """The redundant, human-readable keys must agree with the model config and the recipe."""
        cfg = self.model_config
        problems = []
        if props.get("model_name") != cfg.name:
            problems.append(f"model_name {props.get('model_name')!r} != model_config.name {cfg.name!r}")
        if not math.isclose(_float(props.get("voxel_size")), cfg.voxel_size, rel_tol=1e-9):
            problems.append(f"voxel_size {props.get('voxel_size')} != model_config.voxel_size {cfg.voxel_size}")
        if _loads(props.get("in_features")) != list(cfg.in_features):
            problems.append(f"in_features {props.get('in_features')} != model_config.in_features "
                            f"{list(cfg.in_features)}")
        if _loads(props.get("inputs")) != self.inputs:
            problems.append(f"inputs {props.get('inputs')} != feats + the recipe's tables {self.inputs}")
        if len(self.class_names) != cfg.num_classes or len(self.raw_ids) != cfg.num_classes:
            problems.append(f"{len(self.class_names)} class names / {len(self.raw_ids)} raw ids for "
                            f"{cfg.num_classes} classes")
        if self.precision not in ("fp32", "fp16"):
            problems.append(f"precision {self.precision!r} is not fp32 or fp16")
        if problems:
            raise MetadataMismatch(f"{source}: inconsistent metadata: " + "; ".join(problems))

    def check_graph(self, inputs: list[tuple[str, list]], outputs: list[tuple[str, list]], source: str) -> None:
        """The graph's inputs/outputs (name, shape) must be what the metadata promises."""
        names = [n for n, _ in inputs]
        if names != self.inputs:
            raise MetadataMismatch(f"{source}: graph inputs {names} differ from metadata 'inputs' {self.inputs}")
        feat_shape = inputs[0][1]
        if len(feat_shape) != 2 or feat_shape[1] != len(self.in_features):
            raise MetadataMismatch(f"{source}: input 'feats' has shape {feat_shape}, metadata says "
                                   f"[N, {len(self.in_features)}] ({self.in_features})")
        if not outputs or outputs[0][0] != LOGITS_OUTPUT:
            raise MetadataMismatch(f"{source}: first output must be {LOGITS_OUTPUT!r}, got {[n for n, _ in outputs]}")
        out_shape = outputs[0][1]
        if len(out_shape) != 2 or out_shape[1] != self.model_config.num_classes:
            raise MetadataMismatch(f"{source}: output 'logits' has shape {out_shape}, metadata says "
                                   f"[N, {self.model_config.num_classes}]")


def _loads(text: str | None) -> Any:
    try:
        return json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        return None


def _float(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


def check_label_config(meta: ExportMetadata, label_config, source: str) -> None:
    """The model's classes and label map must be the label config's (the node colours and publishes by it)."""
    names = list(label_config.class_names)
    raw = [int(r) for r in label_config.train_to_raw_lut[: label_config.num_classes]]
    if meta.class_names != names or meta.raw_ids != raw:
        diff = [f"{i}: model {a}/{b} vs config {c}/{d}"
                for i, (a, b, c, d) in enumerate(zip(meta.class_names, meta.raw_ids, names, raw)) if (a, b) != (c, d)]
        if len(meta.class_names) != len(names):
            diff.insert(0, f"model has {len(meta.class_names)} classes, label config {len(names)}")
        raise MetadataMismatch(f"{source}: classes / label map differ from the label config {label_config.source}: "
                               + "; ".join(diff[:5]) + (" ..." if len(diff) > 5 else ""))


def read_onnx_metadata(path: str | Path) -> tuple[ExportMetadata, Any]:
    """Load an ONNX file (weights included) and parse its metadata; returns ``(metadata, onnx ModelProto)``.

    A missing, truncated or non-ONNX file is a :class:`DeployError` naming the file.
    """
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise DeployError(f"ONNX model {path} does not exist")
    try:
        proto = onnx.load(str(path))
    except (DecodeError, ValueError, OSError, RuntimeError) as err:
        raise DeployError(f"ONNX model {path} is corrupt or not an ONNX file: {err}") from err
    if not proto.graph.node:
        raise DeployError(f"ONNX model {path} is corrupt or not an ONNX file: it has no graph nodes")
    props = {p.key: p.value for p in proto.metadata_props}
    return ExportMetadata.from_props(props, str(path)), proto
