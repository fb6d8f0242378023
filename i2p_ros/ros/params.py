"""Parameters of ``segment_node``: one table of names, defaults, descriptions and limits.

The same table serves the node (ROS ``ParameterDescriptor`` per entry), ``i2p-segment`` (its
preprocessing defaults, so the file CLI labels exactly like the node) and a test that keeps
``config/segment.yaml`` equal to it. Validation lives here too (ROS-free), so a bad value is rejected
with the parameter's name whatever front end read it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["BACKENDS", "DYNAMIC", "SPECS", "NodeParams", "ParamError", "ParamSpec", "load_params_file"]

BACKENDS = ("torch", "onnxruntime", "tensorrt")
QOS_RELIABILITY = ("best_effort", "reliable")


class ParamError(ValueError):
    """A parameter value is invalid; the message names the parameter."""


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    read_only: bool = True                            # True: only read at start (a change needs a restart)
    range: tuple[float, float] | None = None          # inclusive numeric range
    choices: tuple[str, ...] | None = None
    constraints: str = ""                             # human-readable, shown by `ros2 param describe`


SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("checkpoint", "", "Model file: an i2p_ros training checkpoint (.pt) or, with a deploy backend, "
              "an exported model. Empty = the shipped demo model (simulated data only: not for real roads)."),
    ParamSpec("backend", "torch", "Inference backend.", choices=BACKENDS),
    ParamSpec("device", "auto", "auto | cpu | cuda | cuda:N (auto = cuda when available).",
              constraints="auto, cpu, cuda or cuda:N"),
    ParamSpec("num_threads", 2, "Intra-op threads on the CPU (0 = library default).", range=(0, 256)),
    ParamSpec("voxel_size", 0.0, "Voxel edge in metres; must equal the checkpoint's (0 = take it from the "
              "checkpoint).", range=(0.0, 10.0)),
    ParamSpec("range_min", [-51.2, -51.2, -4.0], "Lower corner (x, y, z) in metres, sensor frame; points "
              "outside the box are labeled 0.", constraints="3 finite numbers, each < range_max"),
    ParamSpec("range_max", [51.2, 51.2, 4.4], "Upper corner (x, y, z) in metres, sensor frame.",
              constraints="3 finite numbers, each > range_min"),
    ParamSpec("intensity_fields", ["intensity", "i", "reflectivity"], "PointCloud2 field names tried in order "
              "for the intensity; none present = 0.", read_only=False, constraints="non-empty names"),
    ParamSpec("intensity_scale", 1.0, "Factor bringing the cloud's intensity to KITTI's 0..1 (e.g. 1/255).",
              read_only=False, range=(0.0, 1.0e6)),
    ParamSpec("max_points", 2_000_000, "Clouds with more points are rejected (logged and counted).",
              read_only=False, range=(1, 100_000_000)),
    ParamSpec("input_topic", "points", "Input PointCloud2 topic (or remap `points`)."),
    ParamSpec("output_topic", "points_labeled", "Labeled PointCloud2 topic (or remap `points_labeled`)."),
    ParamSpec("qos_reliability", "best_effort", "QoS reliability of the input and output topics "
              "(best_effort = sensor data).", choices=QOS_RELIABILITY),
    ParamSpec("qos_depth", 2, "QoS history depth of the input and output topics.", range=(1, 1000)),
    ParamSpec("publish_confidence", False, "Add a float32 `confidence` field (softmax probability of the "
              "label) to the output.", read_only=False),
    ParamSpec("log_period_s", 10.0, "Period of the one-line summary log and /diagnostics (0 = off).",
              read_only=False, range=(0.0, 3600.0)),
    ParamSpec("label_config", "", "semantic-kitti.yaml giving the output colours (empty = the package's)."),
    ParamSpec("warmup", True, "Run one synthetic scan at start so the first frame is not slow."),
)
SPEC_BY_NAME = {s.name: s for s in SPECS}
DYNAMIC = frozenset(s.name for s in SPECS if not s.read_only)


@dataclass(frozen=True)
class NodeParams:
    """Validated parameter values (field names = parameter names)."""

    checkpoint: str
    backend: str
    device: str
    num_threads: int
    voxel_size: float
    range_min: tuple[float, float, float]
    range_max: tuple[float, float, float]
    intensity_fields: tuple[str, ...]
    intensity_scale: float
    max_points: int
    input_topic: str
    output_topic: str
    qos_reliability: str
    qos_depth: int
    publish_confidence: bool
    log_period_s: float
    label_config: str
    warmup: bool

    @classmethod
    def defaults(cls) -> NodeParams:
        return cls.from_mapping({})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "parameters") -> NodeParams:
        """Defaults overridden by ``values``; unknown names and bad values raise :class:`ParamError`."""
        unknown = sorted(set(values) - set(SPEC_BY_NAME))
        if unknown:
            raise ParamError(f"{source}: unknown parameter(s) {unknown}; known: {sorted(SPEC_BY_NAME)}")
        out = {s.name: _coerce(s, values.get(s.name, s.default), source) for s in SPECS}
        for axis, lo, hi in zip("xyz", out["range_min"], out["range_max"], strict=True):
            if not lo < hi:
                raise ParamError(f"{source}: range_min.{axis} = {lo} must be < range_max.{axis} = {hi}")
        return cls(**out)

    def replace(self, **changes: Any) -> NodeParams:
        merged = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        merged.update(changes)
        return NodeParams.from_mapping(merged)

    @property
    def bounds(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        return self.range_min, self.range_max


def _coerce(spec: ParamSpec, value: Any, source: str) -> Any:
    """Check one value against its spec and return it in the canonical Python type."""
    where = f"{source}: parameter {spec.name!r}"
    default = spec.default
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError
            out: Any = value
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError
            out = value
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError
            out = float(value)
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise TypeError
            out = value
        elif isinstance(default[0], str):
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise TypeError
            out = tuple(value)
            if not out or not all(out):
                raise ParamError(f"{where} must be a non-empty list of non-empty names, got {list(value)}")
        else:
            if isinstance(value, str) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                                 for v in value):
                raise TypeError
            out = tuple(float(v) for v in value)
            if len(out) != 3 or not all(math.isfinite(v) for v in out):
                raise ParamError(f"{where} must be 3 finite numbers (x, y, z), got {list(value)}")
    except TypeError:
        raise ParamError(f"{where} = {value!r} has the wrong type; expected {type(default).__name__} "
                         f"like {default!r}") from None
    if spec.range is not None and not (spec.range[0] <= out <= spec.range[1]):
        raise ParamError(f"{where} = {out} is outside [{spec.range[0]}, {spec.range[1]}]")
    if isinstance(out, float) and not math.isfinite(out):
        raise ParamError(f"{where} must be finite, got {out}")
    if spec.choices is not None and out not in spec.choices:
        raise ParamError(f"{where} = {out!r} is not one of {list(spec.choices)}")
    if spec.name == "device" and not _valid_device(out):
        raise ParamError(f"{where} = {out!r}; expected auto, cpu, cuda or cuda:N")
    return out


def _valid_device(device: str) -> bool:
    if device in ("auto", "cpu", "cuda"):
        return True
    head, _, index = device.partition(":")
    return head == "cuda" and index.isdigit()


def load_params_file(path: str | os.PathLike, node_name: str = "segment_node") -> dict[str, Any]:
    """The ``ros__parameters`` a ROS params YAML gives ``node_name`` (``/**`` first, then the node's own)."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except OSError as err:
        raise ParamError(f"params file {p}: {err}") from err
    except yaml.YAMLError as err:
        raise ParamError(f"params file {p} is not valid YAML: {err}") from err
    if not isinstance(doc, dict):
        raise ParamError(f"params file {p}: top level must be a mapping of node names")
    out: dict[str, Any] = {}
    for key in ("/**", node_name, f"/{node_name}", f"/**/{node_name}"):
        section = doc.get(key)
        if section is None:
            continue
        params = section.get("ros__parameters") if isinstance(section, dict) else None
        if not isinstance(params, dict):
            raise ParamError(f"params file {p}: '{key}' has no 'ros__parameters' mapping")
        out.update(params)
    return out
