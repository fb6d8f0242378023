"""PointCloud2 <-> numpy codec, importable without ROS.

Every function takes any object with the ``sensor_msgs/PointCloud2`` attributes (``header, height,
width, fields[name, offset, datatype, count], is_bigendian, point_step, row_step, data, is_dense``):
rclpy messages, rosbags messages or a ``SimpleNamespace``. ``data`` may be anything exposing the
buffer protocol (``array.array('B')`` from rclpy, ``np.ndarray[uint8]`` from rosbags, ``bytes``);
decoding never copies it unless the rows carry padding. Output messages are built by a *factory*
(:class:`RosFactory` lazily imports ``sensor_msgs``; :class:`PlainFactory` and
:class:`RosbagsFactory` need no ROS), so the codec is unit-testable without rclpy.

Behaviour, relative to ``sensor_msgs_py.point_cloud2`` (``read_points`` / ``create_cloud``):

* Datatypes 1..8 map to int8, uint8, int16, uint16, int32, uint32, float32, float64 in the byte
  order of ``is_bigendian`` (the values equal ``read_points``, which byte-swaps to native order).
* ``count > 1``: :func:`decode` gives one subarray field of shape ``(count,)``; :func:`read_points`
  and ``fields_dtype(..., expand_count=True)`` follow ``sensor_msgs_py`` and give scalar fields
  ``name_0 .. name_{count-1}``. Empty names become ``unnamed_field_<index>`` in both.
* ``row_step`` is honoured (``sensor_msgs_py`` ignores it and misreads clouds with row padding);
  with no row padding both agree exactly. Organised clouds reshape to ``(height, width)``
  (current ``sensor_msgs_py`` reshapes to ``(width, height)``, which mis-orders the rows).
* NaN/Inf are returned, never errors; ``read_points(skip_nans=True)`` drops points with a NaN in
  any selected field when ``is_dense`` is false, like ``sensor_msgs_py``.
* Malformed clouds raise :class:`CloudFormatError` (a ``ValueError``) naming the problem: empty
  cloud, more points than ``max_points``, no fields, unsupported datatype, ``count < 1``, a field
  past ``point_step``, duplicate names, ``row_step < width * point_step``, or a data length other
  than ``row_step * height``. Missing x/y/z is raised by the extraction helpers.

The labeled output (:func:`encode_labeled`, DESIGN.md section 2): every input point in order; each
point's first ``P = ceil4(end of the last kept input field)`` bytes (at most ``point_step``) copied
verbatim (fields and interior padding; a big-endian input has its fields byte-swapped instead); ``label`` (uint16,
raw SemanticKITTI id) at ``P`` and ``rgb`` (float32 whose bits are ``0x00RRGGBB``, the ROS/PCL
convention) at ``P + 4``; ``point_step = P + 8`` rounded up to the widest input datatype (8 with
float64 fields). Trailing input padding past ``P`` is not carried; every other byte is zero. Input
fields named ``label`` or ``rgb`` are *replaced*: their entries are dropped, their bytes zeroed (or
not carried) and the new fields appended, so relabelling a labeled cloud keeps its layout. The output
is little-endian, keeps ``height``/``width`` (an organised cloud stays organised), has no row padding
(``row_step = width * point_step``), and copies ``header`` (same object) and ``is_dense`` (no point is
dropped). ``sensor_msgs_py.read_points`` on the output returns the input values plus ``label`` and
``rgb``; its bytes equal ``create_cloud`` of those values wherever a field lives.
"""

from __future__ import annotations

import array
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, NamedTuple, Protocol

import numpy as np

INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
# PointField datatype -> numpy type code (byte order added per cloud).
DATATYPE_CODES: dict[int, str] = {
    INT8: "i1", UINT8: "u1", INT16: "i2", UINT16: "u2",
    INT32: "i4", UINT32: "u4", FLOAT32: "f4", FLOAT64: "f8",
}
_CODE_TO_DATATYPE = {np.dtype(code).str[1:]: dt for dt, code in DATATYPE_CODES.items()}
DATATYPE_NAMES = {INT8: "INT8", UINT8: "UINT8", INT16: "INT16", UINT16: "UINT16",
                  INT32: "INT32", UINT32: "UINT32", FLOAT32: "FLOAT32", FLOAT64: "FLOAT64"}

DEFAULT_MAX_POINTS = 4_000_000
DEFAULT_INTENSITY_NAMES: tuple[str, ...] = ("intensity", "i", "reflectivity")
DUMMY_FIELD_PREFIX = "unnamed_field"
LABEL_FIELD = "label"
RGB_FIELD = "rgb"
LUT_SIZE = 1 << 16  # one colour per possible uint16 label


class CloudFormatError(ValueError):
    """A PointCloud2 that cannot be decoded; ``reason`` says why (the node logs and counts it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Field(NamedTuple):
    """A PointField as plain values (hashable, so layouts can be cached per field list)."""

    name: str
    offset: int
    datatype: int
    count: int


@dataclass(frozen=True)
class CloudLayout:
    """Validated geometry of one cloud (what :func:`cloud_layout` checked)."""

    fields: tuple[Field, ...]
    height: int
    width: int
    point_step: int
    row_step: int
    is_bigendian: bool
    is_dense: bool

    @property
    def n_points(self) -> int:
        return self.height * self.width

    @property
    def has_row_padding(self) -> bool:
        return self.height > 1 and self.row_step != self.width * self.point_step

    @property
    def dtype(self) -> np.dtype:
        """One point as :func:`decode` sees it (subarrays for count > 1, itemsize = point_step)."""
        return _fields_dtype(self.fields, self.point_step, self.is_bigendian, False)


# --------------------------------------------------------------------------- layout + dtype


def _as_int(value: Any, what: str) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise CloudFormatError(f"{what} is not an integer: {value!r}") from None
    if out < 0:
        raise CloudFormatError(f"{what} is negative: {out}")
    return out


def _fields_of(cloud: Any) -> tuple[Field, ...]:
    return tuple(
        Field(str(f.name), _as_int(f.offset, f"field {f.name!r} offset"),
              _as_int(f.datatype, f"field {f.name!r} datatype"),
              _as_int(f.count, f"field {f.name!r} count"))
        for f in cloud.fields
    )


def _data_buffer(data: Any) -> np.ndarray:
    """The message's bytes as a flat uint8 array, sharing memory whenever ``data`` is a buffer."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise CloudFormatError(f"data array has dtype {data.dtype}, expected uint8")
        return data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:  # a plain sequence of ints
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def validate_fields(fields: Sequence[Field], point_step: int) -> None:
    """Raise :class:`CloudFormatError` unless every field is decodable inside ``point_step``."""
    if not fields:
        raise CloudFormatError("cloud has no fields")
    seen: set[str] = set()
    for i, f in enumerate(fields):
        if f.datatype not in DATATYPE_CODES:
            raise CloudFormatError(
                f"field {f.name!r} has unsupported datatype {f.datatype} "
                "(PointField datatypes are 1..8 = INT8..FLOAT64)")
        if f.count < 1:
            raise CloudFormatError(f"field {f.name!r} has count {f.count}; expected >= 1")
        end = f.offset + np.dtype(DATATYPE_CODES[f.datatype]).itemsize * f.count
        if end > point_step:
            raise CloudFormatError(
                f"field {f.name!r} (offset {f.offset}, {DATATYPE_NAMES[f.datatype]} x{f.count}) "
                f"ends at byte {end}, past point_step {point_step}")
        name = f.name or f"{DUMMY_FIELD_PREFIX}_{i}"
        if name in seen:
            raise CloudFormatError(f"duplicate field name {name!r}")
        seen.add(name)


def cloud_layout(cloud: Any, *, max_points: int = DEFAULT_MAX_POINTS) -> CloudLayout:
    """Validate a cloud's header fields and data length (cheap checks first, before any view)."""
    height = _as_int(cloud.height, "height")
    width = _as_int(cloud.width, "width")
    point_step = _as_int(cloud.point_step, "point_step")
    row_step = _as_int(cloud.row_step, "row_step")
    n = height * width
    if n == 0:
        raise CloudFormatError(f"empty cloud (width={width}, height={height})")
    if n > max_points:
        raise CloudFormatError(
            f"cloud has {n} points (width={width}, height={height}), above max_points={max_points}")
    if point_step == 0:
        raise CloudFormatError("point_step is 0")
    if row_step < width * point_step:
        raise CloudFormatError(
            f"row_step {row_step} < width*point_step = {width}*{point_step} = {width * point_step}")
    fields = _fields_of(cloud)
    validate_fields(fields, point_step)
    n_bytes = len(_data_buffer(cloud.data))
    if n_bytes != row_step * height:
        raise CloudFormatError(
            f"data has {n_bytes} bytes, expected row_step*height = {row_step}*{height} = "
            f"{row_step * height}")
    return CloudLayout(fields, height, width, point_step, row_step,
                       bool(cloud.is_bigendian), bool(cloud.is_dense))


@functools.lru_cache(maxsize=128)
def _fields_dtype(fields: tuple[Field, ...], point_step: int, is_bigendian: bool,
                  expand_count: bool) -> np.dtype:
    order = ">" if is_bigendian else "<"
    names, formats, offsets = [], [], []
    for i, f in enumerate(fields):
        base = np.dtype(order + DATATYPE_CODES[f.datatype])
        name = f.name or f"{DUMMY_FIELD_PREFIX}_{i}"
        if f.count > 1 and expand_count:
            names += [f"{name}_{k}" for k in range(f.count)]
            formats += [base] * f.count
            offsets += [f.offset + k * base.itemsize for k in range(f.count)]
        else:
            names.append(name)
            formats.append(base if f.count == 1 else (base, (f.count,)))
            offsets.append(f.offset)
    if len(set(names)) != len(names):
        raise CloudFormatError(f"duplicate field names after expanding counts: {names}")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": point_step})


def fields_dtype(fields: Iterable[Any], point_step: int, is_bigendian: bool = False, *,
                 expand_count: bool = False) -> np.dtype:
    """Structured dtype of one point: explicit offsets, ``itemsize = point_step``.

    ``expand_count=True`` names ``count > 1`` fields like ``sensor_msgs_py.dtype_from_fields``.
    """
    fs = tuple(Field(str(f.name), int(f.offset), int(f.datatype), int(f.count)) for f in fields)
    validate_fields(fs, point_step)
    return _fields_dtype(fs, int(point_step), bool(is_bigendian), bool(expand_count))


def fields_from_dtype(dtype: np.dtype) -> tuple[list[Field], bool]:
    """PointFields (and is_bigendian) describing a structured dtype; the inverse of fields_dtype."""
    if dtype.names is None:
        raise ValueError(f"expected a structured dtype, got {dtype}")
    out, orders = [], set()
    for name in dtype.names:
        ftype, offset = dtype.fields[name][:2]
        base, shape = (ftype.subdtype if ftype.subdtype else (ftype, ()))
        datatype = _CODE_TO_DATATYPE.get(base.str[1:])
        if datatype is None or base.names is not None:
            raise ValueError(f"field {name!r} has dtype {ftype}, which no PointField datatype holds")
        if base.itemsize > 1:
            orders.add(base.str[0])
        out.append(Field(name, int(offset), datatype, int(np.prod(shape, dtype=np.int64))))
    if len(orders) > 1:
        raise ValueError(f"fields mix byte orders {sorted(orders)}; a PointCloud2 has one")
    return out, orders == {">"}


# --------------------------------------------------------------------------- decoding


def _grid_view(layout: CloudLayout, buf: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """(height, width) view of the points: rows at row_step, points at point_step, no copy."""
    return np.ndarray((layout.height, layout.width), dtype=dtype, buffer=buf,
                      strides=(layout.row_step, layout.point_step))


def decode(cloud: Any, *, max_points: int = DEFAULT_MAX_POINTS,
           organized: bool = False) -> np.ndarray:
    """Structured array of all points (``count > 1`` fields are subarrays).

    Flat ``(N,)`` in row-major order, or ``(height, width)`` with ``organized=True``. The result
    shares memory with ``cloud.data`` (read-only if the data is) except for a flat view of an
    organised cloud with row padding, which is copied.
    """
    layout = cloud_layout(cloud, max_points=max_points)
    dtype = _fields_dtype(layout.fields, layout.point_step, layout.is_bigendian, False)
    grid = _grid_view(layout, _data_buffer(cloud.data), dtype)
    return grid if organized else grid.reshape(-1)


def read_points(cloud: Any, field_names: Sequence[str] | None = None, skip_nans: bool = False,
                reshape_organized_cloud: bool = False, *,
                max_points: int = DEFAULT_MAX_POINTS) -> np.ndarray:
    """``sensor_msgs_py.point_cloud2.read_points`` semantics without ROS.

    Scalar fields named as ``dtype_from_fields`` names them, values in native byte order, NaN
    points dropped on ``skip_nans`` unless ``is_dense``; differences: see the module docstring.
    """
    layout = cloud_layout(cloud, max_points=max_points)
    dtype = _fields_dtype(layout.fields, layout.point_step, layout.is_bigendian, True)
    points = _grid_view(layout, _data_buffer(cloud.data), dtype)
    if field_names is not None:
        missing = [n for n in field_names if n not in dtype.names]
        if missing:
            raise CloudFormatError(f"fields {missing} not in cloud (has {list(dtype.names)})")
        points = points[list(field_names)]
    points = points.reshape(-1)
    if layout.is_bigendian:
        points = points.astype(points.dtype.newbyteorder("="))
    if skip_nans and not layout.is_dense:
        keep = np.ones(len(points), dtype=bool)
        for name in points.dtype.names:
            keep &= ~np.isnan(points[name])
        if not keep.all():
            if reshape_organized_cloud and layout.height > 1:
                raise ValueError("cannot keep the organised shape after dropping NaN points")
            points = points[keep]
    if reshape_organized_cloud and layout.height > 1:
        points = points.reshape(layout.height, layout.width)
    return points


# --------------------------------------------------------------------------- x/y/z/intensity


def intensity_field(points_or_dtype: np.ndarray | np.dtype,
                    names: Sequence[str] = DEFAULT_INTENSITY_NAMES) -> str | None:
    """First of ``names`` present in the cloud (drivers call it intensity, i or reflectivity)."""
    dtype = getattr(points_or_dtype, "dtype", points_or_dtype)
    present = dtype.names or ()
    return next((n for n in names if n in present), None)


def _scalar_column(points: np.ndarray, name: str) -> np.ndarray:
    if points.dtype.names is None or name not in points.dtype.names:
        have = list(points.dtype.names or ())
        raise CloudFormatError(f"cloud has no {name!r} field (fields: {have})")
    column = points[name]
    if column.shape != points.shape:
        raise CloudFormatError(
            f"field {name!r} has count {column.shape[points.ndim:]}; expected a scalar field")
    return column


def _columns(points: np.ndarray, names: Sequence[str | None], scales: Sequence[float]) -> np.ndarray:
    out = np.empty(points.shape + (len(names),), dtype=np.float32)
    for k, (name, scale) in enumerate(zip(names, scales, strict=True)):
        if name is None:
            out[..., k] = 0.0
            continue
        out[..., k] = _scalar_column(points, name)
        if scale != 1.0:
            out[..., k] *= np.float32(scale)
    return out.reshape(-1, len(names))


def xyz(points: np.ndarray) -> np.ndarray:
    """Contiguous float32 ``[N, 3]`` of x, y, z (NaN/Inf kept; organised input is flattened)."""
    return _columns(points, ("x", "y", "z"), (1.0, 1.0, 1.0))


def xyzi(points: np.ndarray, intensity_names: Sequence[str] = DEFAULT_INTENSITY_NAMES,
         intensity_scale: float = 1.0, missing_intensity: str = "zeros") -> np.ndarray:
    """Contiguous float32 ``[N, 4]``: x, y, z and the first intensity field found, times scale.

    With no intensity field, ``missing_intensity="zeros"`` fills 0 and ``"error"`` raises
    :class:`CloudFormatError`.
    """
    if missing_intensity not in ("zeros", "error"):
        raise ValueError(f"missing_intensity must be 'zeros' or 'error', not {missing_intensity!r}")
    name = intensity_field(points, intensity_names)
    if name is None and missing_intensity == "error":
        raise CloudFormatError(
            f"cloud has none of the intensity fields {list(intensity_names)} "
            f"(fields: {list(points.dtype.names or ())})")
    return _columns(points, ("x", "y", "z", name), (1.0, 1.0, 1.0, intensity_scale))


# --------------------------------------------------------------------------- colours


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint8-valued ``[..., 3]`` (r, g, b) -> float32 whose bits are ``0x00RRGGBB`` (ROS/PCL)."""
    c = np.asarray(rgb)
    if c.shape[-1:] != (3,) or (c.size and (c.min() < 0 or c.max() > 255)):
        raise ValueError(f"expected [..., 3] colours in 0..255, got shape {c.shape}")
    c = c.astype(np.uint32)
    return ((c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]).view(np.float32)


def unpack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_rgb`: float32 -> uint8 ``[..., 3]`` (r, g, b)."""
    bits = np.ascontiguousarray(rgb, dtype=np.float32).view(np.uint32)
    return np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], axis=-1).astype(np.uint8)


def make_rgb_lut(color_map: Mapping[int, Sequence[int]], order: str = "bgr") -> np.ndarray:
    """float32 ``[65536]`` packed colour per raw label; unlisted labels are black (0).

    SemanticKITTI's ``color_map`` is BGR (hence the default); pass ``order="rgb"`` otherwise.
    """
    if order not in ("bgr", "rgb"):
        raise ValueError(f"order must be 'bgr' or 'rgb', not {order!r}")
    lut = np.zeros(LUT_SIZE, dtype=np.float32)
    for label, colour in color_map.items():
        if not 0 <= int(label) < LUT_SIZE or len(colour) != 3:
            raise ValueError(f"color_map entry {label}: {colour} is not uint16 -> 3 channels")
        c = list(colour)[::-1] if order == "bgr" else list(colour)
        lut[int(label)] = pack_rgb(np.array(c))
    return lut


# --------------------------------------------------------------------------- message factories


class CloudFactory(Protocol):
    """Builds output messages, so the codec itself never imports a ROS message package.

    ``buffer`` returns writable memory the codec fills in place and later hands to ``cloud`` as
    ``data``: for rclpy that is the message's own ``array.array``, so the bytes are written once.
    """

    def buffer(self, nbytes: int) -> Any: ...

    def field(self, name: str, offset: int, datatype: int, count: int) -> Any: ...

    def cloud(self, *, header: Any, height: int, width: int, fields: list[Any],
              is_bigendian: bool, point_step: int, row_step: int, data: Any,
              is_dense: bool) -> Any: ...


class PlainFactory:
    """SimpleNamespace messages with ``data`` a uint8 numpy array (no ROS)."""

    def buffer(self, nbytes: int) -> np.ndarray:
        return np.empty(nbytes, dtype=np.uint8)

    def field(self, name: str, offset: int, datatype: int, count: int) -> Any:
        return SimpleNamespace(name=name, offset=offset, datatype=datatype, count=count)

    def cloud(self, **kw: Any) -> Any:
        return SimpleNamespace(**kw)


class RosFactory:
    """rclpy ``sensor_msgs.msg`` messages whose ``data`` is the ``array.array('B')`` we filled.

    Why the care: Kilted's generated setter stores an ``array.array`` as is only when the message
    checks its fields; unchecked (the default) it copies it again, and fresh multi-MB buffers cost
    page faults (measured: 6 ms instead of 0.9 ms per 120k-point cloud). Messages are therefore
    built with ``check_fields=True`` where that exists (older distros always take the no-copy path).
    """

    def __init__(self) -> None:
        try:
            from sensor_msgs.msg import PointCloud2, PointField
        except ImportError as exc:
            raise ImportError(
                "RosFactory needs rclpy's sensor_msgs (source a ROS 2 install or "
                "pip install ros-kilted-sensor-msgs); use PlainFactory/RosbagsFactory otherwise"
            ) from exc
        self._cloud, self._field = PointCloud2, PointField
        self._checked = {"check_fields": True} if "_check_fields" in PointCloud2.__slots__ else {}

    def buffer(self, nbytes: int) -> array.array:
        return array.array("B", b"\0") * nbytes

    def field(self, name: str, offset: int, datatype: int, count: int) -> Any:
        return self._field(name=name, offset=offset, datatype=datatype, count=count, **self._checked)

    def cloud(self, *, data: Any, **kw: Any) -> Any:
        if not (isinstance(data, array.array) and data.typecode == "B"):
            buf = array.array("B")
            buf.frombytes(memoryview(np.ascontiguousarray(data)).cast("B"))
            data = buf
        msg = self._cloud(**kw, **self._checked)
        msg.data = data
        return msg


class RosbagsFactory:
    """``rosbags`` message classes from a typestore (for writing bags without rclpy)."""

    def __init__(self, typestore: Any) -> None:
        self._cloud = typestore.types["sensor_msgs/msg/PointCloud2"]
        self._field = typestore.types["sensor_msgs/msg/PointField"]

    def buffer(self, nbytes: int) -> np.ndarray:
        return np.empty(nbytes, dtype=np.uint8)

    def field(self, name: str, offset: int, datatype: int, count: int) -> Any:
        return self._field(name=name, offset=offset, datatype=datatype, count=count)

    def cloud(self, **kw: Any) -> Any:
        return self._cloud(**kw)


@functools.lru_cache(maxsize=1)
def _default_factory() -> RosFactory:
    return RosFactory()


# --------------------------------------------------------------------------- encoding


def _filled_buffer(factory: CloudFactory, dtype: np.dtype, shape: tuple[int, int]) -> tuple[Any, np.ndarray]:
    """A factory buffer for ``shape`` points of ``dtype`` and a writable numpy view of it."""
    buf = factory.buffer(shape[0] * shape[1] * dtype.itemsize)
    return buf, np.frombuffer(buf, dtype=dtype).reshape(shape)


def cloud_from_points(points: np.ndarray, header: Any, *, is_dense: bool = False,
                      factory: CloudFactory | None = None) -> Any:
    """A PointCloud2 holding a structured array (``(N,)`` or organised ``(height, width)``).

    Fields, offsets and point_step come from the dtype (subarrays -> ``count``), like
    ``sensor_msgs_py.create_cloud`` given a structured array, but the shape is kept as height x width.
    """
    if points.ndim not in (1, 2):
        raise ValueError(f"points must be (N,) or (height, width), got shape {points.shape}")
    fields, big = fields_from_dtype(points.dtype)
    grid = points.reshape(1, -1) if points.ndim == 1 else points
    height, width = grid.shape
    step = grid.dtype.itemsize
    factory = factory or _default_factory()
    buf, view = _filled_buffer(factory, np.dtype(f"V{step}"), grid.shape)
    view[...] = grid.view(f"V{step}") if grid.flags.c_contiguous else np.ascontiguousarray(grid).view(
        f"V{step}")
    return factory.cloud(
        header=header, height=height, width=width,
        fields=[factory.field(*f) for f in fields], is_bigendian=big, point_step=step,
        row_step=width * step, data=buf, is_dense=bool(is_dense))


@dataclass(frozen=True)
class LabeledLayout:
    """Byte layout of the labeled output for one input layout (computed once, cached)."""

    fields: tuple[Field, ...]  # output PointFields: kept input fields, then label, then rgb
    point_step: int
    copy_bytes: int  # leading input bytes copied verbatim into each output point
    zero_ranges: tuple[tuple[int, int], ...]  # output bytes to clear (replaced fields, gaps)
    out_dtype: np.dtype  # 'raw' copied bytes + 'label' (written as <u4: clears 2 gap bytes) + 'rgb'
    swap: tuple[np.dtype, np.dtype] | None  # (big-endian input, little-endian output) field views

    @property
    def label_offset(self) -> int:
        return self.fields[-2].offset

    @property
    def rgb_offset(self) -> int:
        return self.fields[-1].offset


def _ceil(n: int, k: int) -> int:
    return -(-n // k) * k


def _field_bytes(f: Field) -> int:
    return np.dtype(DATATYPE_CODES[f.datatype]).itemsize * f.count


def _runs(mask: np.ndarray) -> tuple[tuple[int, int], ...]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return tuple((int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True))


@functools.lru_cache(maxsize=64)
def labeled_layout(fields: tuple[Field, ...], point_step: int, is_bigendian: bool) -> LabeledLayout:
    """Output layout for an input layout; the rules are in the module docstring.

    ``label`` goes at ``P = ceil4(end of the last kept field)`` (trailing padding is not carried:
    smaller messages, and relabelling a labeled cloud gives the same layout), ``rgb`` at ``P + 4``;
    ``point_step = P + 8`` rounded up to the widest kept datatype so float64 fields stay aligned.
    """
    validate_fields(fields, point_step)
    kept = tuple(f for f in fields if f.name not in (LABEL_FIELD, RGB_FIELD))
    keep_end = max((f.offset + _field_bytes(f) for f in kept), default=0)
    label_offset = _ceil(keep_end, 4)
    align = max([4] + [np.dtype(DATATYPE_CODES[f.datatype]).itemsize for f in kept])
    out_step = _ceil(label_offset + 8, align)
    copy_bytes = min(point_step, label_offset)  # bytes up to P are input padding: copy them too
    clear = np.zeros(out_step, dtype=bool)
    for f in fields:
        if f not in kept:  # replaced label/rgb: drop the entry, clear the bytes
            clear[f.offset:min(f.offset + _field_bytes(f), copy_bytes)] = True
    for f in kept:
        clear[f.offset:f.offset + _field_bytes(f)] = False
    clear[copy_bytes:label_offset] = True
    clear[label_offset + 8:] = True
    formats = {"<u4": label_offset, "<f4": label_offset + 4}
    names = ["label", "rgb"]
    if copy_bytes:
        names.insert(0, "raw")
        formats = {f"V{copy_bytes}": 0, **formats}
    out_dtype = np.dtype({"names": names, "formats": list(formats), "offsets": list(formats.values()),
                          "itemsize": out_step})
    swap = None
    if is_bigendian and kept:
        swap = (_fields_dtype(kept, point_step, True, False),
                _fields_dtype(kept, out_step, False, False))
    out_fields = kept + (Field(LABEL_FIELD, label_offset, UINT16, 1),
                         Field(RGB_FIELD, label_offset + 4, FLOAT32, 1))
    return LabeledLayout(out_fields, out_step, copy_bytes, _runs(clear), out_dtype, swap)


def _labels_u16(labels: Any, n: int) -> np.ndarray:
    lab = np.asarray(labels).reshape(-1)
    if lab.size != n:
        raise ValueError(f"got {lab.size} labels for a cloud of {n} points")
    if lab.dtype == np.uint16:
        return lab
    if lab.dtype.kind not in "ui":
        raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
    if lab.dtype.itemsize > 1 or lab.dtype.kind == "i":
        lo, hi = int(lab.min()), int(lab.max())
        if lo < 0 or hi >= LUT_SIZE:
            raise ValueError(f"labels must fit uint16, got range [{lo}, {hi}]")
    return lab.astype(np.uint16)


def _check_lut(rgb_lut: np.ndarray) -> np.ndarray:
    lut = np.asarray(rgb_lut)
    if lut.dtype == np.uint32:
        lut = lut.view(np.float32)
    if lut.dtype != np.float32 or lut.shape != (LUT_SIZE,):
        raise ValueError(f"rgb_lut must be float32 [{LUT_SIZE}] (see make_rgb_lut), "
                         f"got {lut.dtype} {lut.shape}")
    return lut


def labeled_points(cloud: Any, labels: Any, rgb_lut: np.ndarray, *,
                   max_points: int = DEFAULT_MAX_POINTS,
                   factory: CloudFactory | None = None) -> tuple[Any, np.ndarray, LabeledLayout]:
    """Fill the labeled output: (factory buffer, its ``(height, width)`` out_dtype view, layout).

    Without a factory the buffer is a numpy array.
    """
    layout = cloud_layout(cloud, max_points=max_points)
    lab = _labels_u16(labels, layout.n_points)
    lut = _check_lut(rgb_lut)
    out_layout = labeled_layout(layout.fields, layout.point_step, layout.is_bigendian)
    buf, out = _filled_buffer(factory or PlainFactory(), out_layout.out_dtype,
                              (layout.height, layout.width))
    if out_layout.copy_bytes:
        out["raw"] = _grid_view(layout, _data_buffer(cloud.data),
                                np.dtype(f"V{out_layout.copy_bytes}"))
    if out_layout.zero_ranges or out_layout.swap:
        out_bytes = out.view(np.uint8).reshape(layout.n_points, out_layout.point_step)
        for a, b in out_layout.zero_ranges:
            out_bytes[:, a:b] = 0
        if out_layout.swap:
            big, little = out_layout.swap
            src_fields = _grid_view(layout, _data_buffer(cloud.data), big)
            dst_fields = out.view(little)
            for name in big.names:
                dst_fields[name] = src_fields[name]
    flat = out.reshape(-1)
    flat["label"] = lab
    flat["rgb"] = np.take(lut, lab)
    return buf, out, out_layout


def encode_labeled(cloud: Any, labels: Any, rgb_lut: np.ndarray, *,
                   factory: CloudFactory | None = None,
                   max_points: int = DEFAULT_MAX_POINTS) -> Any:
    """The labeled PointCloud2 (layout rules in the module docstring).

    ``labels``: one raw SemanticKITTI id per point in row-major order (any integer dtype within
    uint16, shape ``(N,)`` or ``(height, width)``); ``rgb_lut``: from :func:`make_rgb_lut`.
    ``factory`` defaults to :class:`RosFactory` (rclpy messages).
    """
    factory = factory or _default_factory()
    buf, out, out_layout = labeled_points(cloud, labels, rgb_lut, max_points=max_points,
                                          factory=factory)
    height, width = out.shape
    return factory.cloud(
        header=cloud.header, height=height, width=width,
        fields=[factory.field(*f) for f in out_layout.fields], is_bigendian=False,
        point_step=out_layout.point_step, row_step=width * out_layout.point_step,
        data=buf, is_dense=bool(cloud.is_dense))
