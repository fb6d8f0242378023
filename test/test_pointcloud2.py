"""PointCloud2 <-> numpy codec, checked against an independent per-point ``struct`` reference.

The reference (``ref_read`` / ``ref_create``) re-implements the *documented* behaviour of
``sensor_msgs_py.point_cloud2`` (not installable here) one point and one value at a time with
``struct``: datatype 1..8 -> b B h H i I f d, ``count > 1`` -> ``name_0..name_{count-1}``, empty
names -> ``unnamed_field_<i>``, values in native order, ``skip_nans`` drops points with any NaN when
``is_dense`` is false. Unlike ``sensor_msgs_py`` it honours ``row_step`` (see the codec docstring).
Clouds are built byte by byte with ``struct.pack_into`` over random garbage, so padding is not zero.
"""

import array
import math
import struct
from types import SimpleNamespace as NS

import numpy as np
import pytest

from i2p_ros.ros import pointcloud2 as pc

STRUCT = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}
SIZE = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 8: 8}
FLOAT_TYPES = (7, 8)


def field(name, offset, datatype, count=1):
    return NS(name=name, offset=offset, datatype=datatype, count=count)


def random_values(rng, datatype, n):
    """Values covering the type's extremes (and NaN/Inf for floats)."""
    if datatype in FLOAT_TYPES:
        v = rng.normal(scale=100.0, size=n)
        v[: min(n, 3)] = [math.nan, math.inf, -math.inf][: min(n, 3)]
        if datatype == 7:
            v = v.astype(np.float32).astype(np.float64)  # exactly representable in float32
        return v.tolist()
    info = np.iinfo(np.dtype(STRUCT[datatype]))
    v = rng.integers(info.min, info.max, size=n, endpoint=True)
    v[:2] = [info.min, info.max][: min(n, 2)]
    return v.tolist()


def build_cloud(rng, fields, height, width, point_step, row_step=None, bigendian=False,
                values=None, is_dense=False, header="hdr"):
    """A cloud packed with struct over random bytes; returns (cloud, values[field_index][point][k])."""
    row_step = width * point_step if row_step is None else row_step
    n = height * width
    if values is None:
        values = [np.reshape(random_values(rng, f.datatype, n * f.count), (n, f.count)).tolist()
                  for f in fields]
    data = bytearray(rng.integers(0, 256, size=row_step * height, dtype=np.uint8).tobytes())
    end = ">" if bigendian else "<"
    for r in range(height):
        for c in range(width):
            base = r * row_step + c * point_step
            for f, vals in zip(fields, values):
                struct.pack_into(end + STRUCT[f.datatype] * f.count, data, base + f.offset,
                                 *vals[r * width + c])
    cloud = NS(header=header, height=height, width=width, fields=list(fields),
               is_bigendian=bigendian, point_step=point_step, row_step=row_step,
               data=bytes(data), is_dense=is_dense)
    return cloud, values


def ref_read(cloud, skip_nans=False):
    """Documented sensor_msgs_py.read_points semantics, one point at a time: list of dicts."""
    end = ">" if cloud.is_bigendian else "<"
    data = bytes(cloud.data)
    points = []
    for r in range(cloud.height):
        for c in range(cloud.width):
            base = r * cloud.row_step + c * cloud.point_step
            point = {}
            for i, f in enumerate(cloud.fields):
                name = f.name or f"unnamed_field_{i}"
                vals = struct.unpack_from(end + STRUCT[f.datatype] * f.count, data, base + f.offset)
                if f.count == 1:
                    point[name] = vals[0]
                else:
                    point.update({f"{name}_{k}": v for k, v in enumerate(vals)})
            points.append(point)
    if skip_nans and not cloud.is_dense:
        points = [p for p in points
                  if not any(isinstance(v, float) and math.isnan(v) for v in p.values())]
    return points


def ref_create(fields, rows, point_step):
    """Documented create_cloud bytes: each point's values packed little-endian at its offsets."""
    data = bytearray(point_step * len(rows))
    for i, row in enumerate(rows):
        for f, vals in zip(fields, row):
            struct.pack_into("<" + STRUCT[f.datatype] * f.count, data, i * point_step + f.offset, *vals)
    return bytes(data)


def column(points, name):
    return np.array([p[name] for p in points])


def assert_matches_reference(got, ref):
    """A structured array (scalar fields) equals the reference list of dicts, NaN == NaN."""
    assert list(got.dtype.names) == list(ref[0].keys())
    assert len(got) == len(ref)
    for name in got.dtype.names:
        np.testing.assert_array_equal(got[name].astype(np.float64), column(ref, name).astype(np.float64))


def mixed_fields(datatype):
    """x/y/z float32, a scalar and a count=3 field of `datatype` at odd (unaligned) offsets."""
    s = SIZE[datatype]
    return [field("x", 0, 7), field("y", 4, 7), field("z", 8, 7),
            field("v", 13, datatype), field("w", 13 + s + 1, datatype, 3)], 13 + s + 1 + 3 * s + 3


# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("datatype", range(1, 9))
def test_decode_every_datatype_and_endianness(datatype, bigendian):
    rng = np.random.default_rng(datatype + 10 * bigendian)
    fields, step = mixed_fields(datatype)
    cloud, values = build_cloud(rng, fields, 1, 17, step, bigendian=bigendian)
    ref = ref_read(cloud)

    points = pc.decode(cloud)
    assert points.dtype["v"].str[0] in ("|", ">" if bigendian else "<")
    assert points["w"].shape == (17, 3)  # count>1 -> subarray field
    np.testing.assert_array_equal(points["v"].astype(np.float64), column(ref, "v").astype(np.float64))
    np.testing.assert_array_equal(points["w"].astype(np.float64),
                                  np.stack([column(ref, f"w_{k}") for k in range(3)], 1).astype(np.float64))
    # sensor_msgs_py-compatible view: expanded names, native byte order
    compat = pc.read_points(cloud)
    assert all(compat.dtype[n].isnative for n in compat.dtype.names)
    assert_matches_reference(compat, ref)


def test_decode_is_zero_copy_and_accepts_any_buffer():
    rng = np.random.default_rng(1)
    fields, step = mixed_fields(7)
    cloud, _ = build_cloud(rng, fields, 2, 5, step)
    ref = ref_read(cloud)
    raw = np.frombuffer(cloud.data, np.uint8)
    for data in (cloud.data, bytearray(cloud.data), array.array("B", cloud.data), raw.copy(),
                 list(cloud.data)):
        c = NS(**{**vars(cloud), "data": data})
        got = pc.read_points(c)
        assert_matches_reference(got, ref)
        if not isinstance(data, list):
            assert np.shares_memory(pc.decode(c), np.frombuffer(data, np.uint8))
    assert not pc.decode(cloud).flags.writeable  # bytes are immutable: the view says so
    with pytest.raises(pc.CloudFormatError, match="dtype int64"):
        pc.decode(NS(**{**vars(cloud), "data": raw.astype(np.int64)}))


@pytest.mark.parametrize("bigendian", [False, True])
def test_organised_cloud_with_row_padding(bigendian):
    rng = np.random.default_rng(2)
    fields, step = mixed_fields(3)
    h, w = 3, 4
    cloud, _ = build_cloud(rng, fields, h, w, step, row_step=w * step + 7, bigendian=bigendian)
    ref = ref_read(cloud)  # row-major: point r*w + c

    grid = pc.decode(cloud, organized=True)
    assert grid.shape == (h, w)
    assert np.shares_memory(grid, np.frombuffer(cloud.data, np.uint8))
    flat = pc.decode(cloud)
    assert flat.shape == (h * w,)
    for r in range(h):
        for c in range(w):
            assert grid[r, c]["v"] == ref[r * w + c]["v"] == flat[r * w + c]["v"]
    compat = pc.read_points(cloud, reshape_organized_cloud=True)
    assert compat.shape == (h, w)
    assert_matches_reference(compat.reshape(-1), ref)


def test_no_row_padding_flat_view_shares_memory():
    rng = np.random.default_rng(3)
    fields, step = mixed_fields(5)
    cloud, _ = build_cloud(rng, fields, 4, 6, step)
    assert np.shares_memory(pc.decode(cloud), np.frombuffer(cloud.data, np.uint8))
    one_row, _ = build_cloud(rng, fields, 1, 6, step, row_step=6 * step + 5)  # single padded row
    assert np.shares_memory(pc.decode(one_row), np.frombuffer(one_row.data, np.uint8))
    assert_matches_reference(pc.read_points(one_row), ref_read(one_row))


def test_unnamed_field_and_field_selection():
    rng = np.random.default_rng(4)
    fields = [field("x", 0, 7), field("y", 4, 7), field("z", 8, 7), field("", 12, 6, 2)]
    cloud, _ = build_cloud(rng, fields, 1, 9, 20)
    ref = ref_read(cloud)
    got = pc.read_points(cloud)
    assert got.dtype.names == ("x", "y", "z", "unnamed_field_3_0", "unnamed_field_3_1")
    assert_matches_reference(got, ref)
    sel = pc.read_points(cloud, field_names=["z", "unnamed_field_3_1"])
    assert_matches_reference(sel, [{k: p[k] for k in ("z", "unnamed_field_3_1")} for p in ref])
    with pytest.raises(pc.CloudFormatError, match="'q'"):
        pc.read_points(cloud, field_names=["q"])


@pytest.mark.parametrize("is_dense", [False, True])
def test_skip_nans_follows_sensor_msgs_py(is_dense):
    rng = np.random.default_rng(5)
    fields = [field("x", 0, 7), field("y", 4, 7), field("z", 8, 7), field("t", 12, 8), field("r", 20, 4)]
    n = 8
    vals = [[[float(i)] for i in range(n)] for _ in range(4)] + [[[i] for i in range(n)]]
    vals[0][1] = [math.nan]  # x NaN
    vals[3][4] = [math.nan]  # NaN in a non-coordinate field also drops the point
    vals[2][6] = [math.inf]  # Inf is kept
    cloud, _ = build_cloud(rng, fields, 1, n, 24, values=vals, is_dense=is_dense)
    ref = ref_read(cloud, skip_nans=True)
    got = pc.read_points(cloud, skip_nans=True)
    assert_matches_reference(got, ref)
    assert len(got) == (n if is_dense else n - 2)
    assert len(pc.decode(cloud)) == n  # decode never drops


# ----------------------------------------------------------------------------- x/y/z/intensity


@pytest.mark.parametrize("name,datatype", [("intensity", 7), ("i", 8), ("reflectivity", 4), ("i", 2)])
def test_xyzi_finds_intensity_and_scales(name, datatype):
    rng = np.random.default_rng(6)
    fields = [field("x", 0, 8), field("y", 8, 3), field("z", 12, 7), field(name, 16, datatype)]
    cloud, _ = build_cloud(rng, fields, 2, 5, 24, bigendian=True)
    ref = ref_read(cloud)
    out = pc.xyzi(pc.decode(cloud), intensity_scale=0.25)
    assert out.dtype == np.float32 and out.shape == (10, 4) and out.flags.c_contiguous
    expected = np.stack([column(ref, "x"), column(ref, "y"), column(ref, "z"),
                         column(ref, name) * 0.25], 1).astype(np.float32)
    np.testing.assert_allclose(out, expected, rtol=1e-6)  # NaN/Inf pass through in place
    assert np.isnan(out[0, 0]) and np.isinf(out[1, 0])
    np.testing.assert_array_equal(pc.xyz(pc.decode(cloud, organized=True)), out[:, :3])
    assert pc.intensity_field(pc.decode(cloud)) == name


def test_intensity_name_list_and_missing_policy():
    rng = np.random.default_rng(7)
    fields = [field("x", 0, 7), field("y", 4, 7), field("z", 8, 7), field("i", 12, 7),
              field("remission", 16, 7)]
    cloud, _ = build_cloud(rng, fields, 1, 4, 20)
    ref = ref_read(cloud)
    pts = pc.decode(cloud)
    np.testing.assert_array_equal(pc.xyzi(pts, ("remission", "i"))[:, 3],
                                  column(ref, "remission").astype(np.float32))
    np.testing.assert_array_equal(pc.xyzi(pts, ("nope",))[:, 3], 0.0)
    with pytest.raises(pc.CloudFormatError, match="none of the intensity fields"):
        pc.xyzi(pts, ("nope",), missing_intensity="error")


@pytest.mark.parametrize("fields,match", [
    ([field("x", 0, 7), field("y", 4, 7)], "no 'z' field"),
    ([field("x", 0, 7, 3), field("y", 12, 7), field("z", 16, 7)], "'x' has count"),
])
def test_xyz_errors(fields, match):
    cloud, _ = build_cloud(np.random.default_rng(8), fields, 1, 3, 20)
    with pytest.raises(pc.CloudFormatError, match=match):
        pc.xyz(pc.decode(cloud))


# ----------------------------------------------------------------------------- malformed input


def _good():
    cloud, _ = build_cloud(np.random.default_rng(9), [field("x", 0, 7), field("y", 4, 7), field("z", 8, 7)],
                           2, 3, 16)
    return cloud


def _with(**kw):
    return NS(**{**vars(_good()), **kw})


MALFORMED = {
    "empty": (lambda: _with(width=0, data=b""), "empty cloud"),
    "empty_height": (lambda: _with(height=0, data=b""), "empty cloud"),
    "too_many_points": (lambda: _with(width=10**7, height=1000), "above max_points"),
    "datatype_0": (lambda: _with(fields=[field("x", 0, 0)]), "unsupported datatype 0"),
    "datatype_9": (lambda: _with(fields=[field("x", 0, 9)]), "unsupported datatype 9"),
    "count_0": (lambda: _with(fields=[field("x", 0, 7, 0)]), "count 0"),
    "field_past_point_step": (lambda: _with(fields=[field("x", 0, 7), field("y", 14, 7)]),
                              "'y'.*ends at byte 18, past point_step 16"),
    "count_past_point_step": (lambda: _with(fields=[field("x", 0, 8, 3)]), "past point_step"),
    "duplicate": (lambda: _with(fields=[field("x", 0, 7), field("x", 4, 7)]), "duplicate field name 'x'"),
    "no_fields": (lambda: _with(fields=[]), "no fields"),
    "short_data": (lambda: _with(data=_good().data[:-1]), "data has 95 bytes, expected .* = 96"),
    "long_data": (lambda: _with(data=_good().data + b"\0"), "data has 97 bytes"),
    "row_step_too_small": (lambda: _with(row_step=47, data=b"\0" * 94), "row_step 47 < width\\*point_step"),
    "point_step_0": (lambda: _with(point_step=0, row_step=0, data=b""), "point_step is 0"),
    "negative_width": (lambda: _with(width=-3), "width is negative"),
    "bad_offset_type": (lambda: _with(fields=[field("x", "a", 7)]), "offset is not an integer"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_clouds_raise_cloud_format_error(case):
    make, match = MALFORMED[case]
    cloud = make()
    lut = np.zeros(pc.LUT_SIZE, np.float32)
    for call in (pc.decode, pc.read_points, lambda c: pc.encode_labeled(c, [0] * 6, lut,
                                                                        factory=pc.PlainFactory())):
        with pytest.raises(pc.CloudFormatError, match=match) as info:
            call(cloud)
        assert info.value.reason == str(info.value)


def test_max_points_is_configurable():
    cloud = _good()
    assert len(pc.decode(cloud, max_points=6)) == 6
    with pytest.raises(pc.CloudFormatError, match="6 points .* above max_points=5"):
        pc.decode(cloud, max_points=5)


def test_duplicate_after_count_expansion_only_breaks_the_compat_reader():
    fields = [field("x", 0, 7), field("y", 4, 7), field("z", 8, 7), field("n", 12, 7, 2), field("n_1", 20, 7)]
    cloud, _ = build_cloud(np.random.default_rng(10), fields, 1, 2, 24)
    assert pc.decode(cloud)["n"].shape == (2, 2)
    with pytest.raises(pc.CloudFormatError, match="duplicate"):
        pc.read_points(cloud)


# ----------------------------------------------------------------------------- colours


def test_pack_rgb_matches_hand_computation():
    # r=255, g=128, b=1 -> 0x00FF8001 = 255*65536 + 128*256 + 1 = 16744449
    got = pc.pack_rgb(np.array([[255, 128, 1], [0, 0, 0], [1, 2, 3]]))
    bits = [16744449, 0, 65536 + 2 * 256 + 3]
    expected = [struct.unpack("<f", struct.pack("<I", b))[0] for b in bits]
    assert got.dtype == np.float32
    assert got.view(np.uint32).tolist() == bits
    np.testing.assert_array_equal(got, np.array(expected, np.float32))
    np.testing.assert_array_equal(pc.unpack_rgb(got), [[255, 128, 1], [0, 0, 0], [1, 2, 3]])
    with pytest.raises(ValueError):
        pc.pack_rgb(np.array([[256, 0, 0]]))


def test_rgb_lut_reads_semantic_kitti_bgr():
    # semantic-kitti.yaml color_map is BGR: car (10) = [245, 150, 100] -> r=100, g=150, b=245
    lut = pc.make_rgb_lut({10: [245, 150, 100], 40: [255, 0, 255]})
    assert lut.shape == (65536,) and lut.dtype == np.float32
    bits = lut.view(np.uint32)
    assert bits[10] == (100 << 16) | (150 << 8) | 245
    assert bits[40] == 0xFF00FF
    assert bits[0] == 0 and bits[65535] == 0
    assert pc.make_rgb_lut({7: [1, 2, 3]}, order="rgb").view(np.uint32)[7] == 0x010203


# ----------------------------------------------------------------------------- encoding


def _check_labeled(cloud, values, labels, lut_bits, out):
    """Output vs the reference: input values, label and rgb, little-endian, dense rows."""
    n = cloud.height * cloud.width
    in_fields = [f for f in cloud.fields if f.name not in ("label", "rgb")]
    assert [f.name for f in out.fields] == [f.name for f in in_fields] + ["label", "rgb"]
    for a, b in zip(out.fields, in_fields):
        assert (a.offset, a.datatype, a.count) == (b.offset, b.datatype, b.count)
    label_f, rgb_f = out.fields[-2:]
    assert (label_f.datatype, label_f.count, rgb_f.datatype, rgb_f.count) == (4, 1, 7, 1)
    kept_end = max(f.offset + SIZE[f.datatype] * f.count for f in in_fields)
    assert label_f.offset == -(-kept_end // 4) * 4 and rgb_f.offset == label_f.offset + 4
    align = max([4] + [SIZE[f.datatype] for f in in_fields])
    assert out.point_step == -(-(label_f.offset + 8) // align) * align
    assert out.row_step == out.width * out.point_step
    assert (out.height, out.width) == (cloud.height, cloud.width)
    assert out.is_bigendian is False and out.is_dense == cloud.is_dense and out.header is cloud.header
    got = ref_read(out)
    want = ref_read(cloud)
    for i in range(n):
        for k, v in want[i].items():
            if k in ("label", "rgb"):
                continue
            assert got[i][k] == v or (isinstance(v, float) and math.isnan(v) and math.isnan(got[i][k]))
        assert got[i]["label"] == labels[i]
        assert struct.unpack("<I", struct.pack("<f", got[i]["rgb"]))[0] == lut_bits[labels[i]]
    # bytes equal the documented create_cloud of those values wherever a field lives
    idx = {f.name: j for j, f in enumerate(cloud.fields)}
    rows = [[values[idx[f.name]][i] for f in in_fields] + [[labels[i]], [got[i]["rgb"]]]
            for i in range(n)]
    ref_bytes = np.frombuffer(ref_create(out.fields, rows, out.point_step), np.uint8)
    mine = np.frombuffer(bytes(out.data), np.uint8).reshape(n, out.point_step)
    covered = np.zeros(out.point_step, bool)
    for f in out.fields:
        covered[f.offset:f.offset + SIZE[f.datatype] * f.count] = True
    np.testing.assert_array_equal(mine[:, covered], ref_bytes.reshape(n, -1)[:, covered])
    return mine


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("datatype", range(1, 9))
def test_encode_every_datatype_and_endianness(datatype, bigendian):
    rng = np.random.default_rng(100 + datatype + 10 * bigendian)
    fields, step = mixed_fields(datatype)
    cloud, values = build_cloud(rng, fields, 1, 13, step, bigendian=bigendian, is_dense=bigendian)
    labels = rng.integers(0, 260, 13)
    lut = pc.make_rgb_lut({int(k): rng.integers(0, 256, 3).tolist() for k in range(0, 260, 3)})
    out = pc.encode_labeled(cloud, labels, lut, factory=pc.PlainFactory())
    mine = _check_labeled(cloud, values, labels, lut.view(np.uint32), out)
    raw_in = np.frombuffer(cloud.data, np.uint8).reshape(13, step)
    p = out.fields[-2].offset
    assert p < step  # these layouts end in padding: bytes up to P come from the input
    assert (mine[:, p + 2:p + 4] == 0).all() and (mine[:, p + 8:] == 0).all()
    if not bigendian:  # every input byte up to P (fields and padding) copied verbatim
        np.testing.assert_array_equal(mine[:, :p], raw_in[:, :p])
    else:  # padding verbatim, fields swapped to little-endian (checked above)
        pad = np.ones(p, bool)
        for f in fields:
            pad[f.offset:f.offset + SIZE[f.datatype] * f.count] = False
        np.testing.assert_array_equal(mine[:, :p][:, pad], raw_in[:, :p][:, pad])


@pytest.mark.parametrize("bigendian", [False, True])
def test_encode_organised_with_row_padding_keeps_shape_and_order(bigendian):
    rng = np.random.default_rng(11)
    fields, step = mixed_fields(8)
    h, w = 3, 5
    cloud, values = build_cloud(rng, fields, h, w, step, row_step=w * step + 9, bigendian=bigendian)
    labels = np.arange(h * w, dtype=np.int64).reshape(h, w) * 7
    lut = pc.make_rgb_lut({int(k): [k % 256, 3, 200] for k in range(0, 100)})
    out = pc.encode_labeled(cloud, labels, lut, factory=pc.PlainFactory())
    _check_labeled(cloud, values, labels.reshape(-1).tolist(), lut.view(np.uint32), out)
    back = pc.decode(out, organized=True)
    np.testing.assert_array_equal(back["label"], labels)


def test_encode_replaces_existing_label_and_rgb_fields():
    rng = np.random.default_rng(12)
    fields = [field("x", 0, 7), field("y", 4, 7), field("z", 8, 7), field("label", 12, 6),
              field("rgb", 16, 7), field("ring", 20, 4)]
    cloud, values = build_cloud(rng, fields, 1, 6, 23)
    labels = [0, 10, 40, 44, 10, 0]
    lut = pc.make_rgb_lut({10: [245, 150, 100], 40: [255, 0, 255]})
    out = pc.encode_labeled(cloud, labels, lut, factory=pc.PlainFactory())
    assert [f.name for f in out.fields] == ["x", "y", "z", "ring", "label", "rgb"]
    mine = _check_labeled(cloud, values, labels, lut.view(np.uint32), out)
    assert (mine[:, 12:20] == 0).all()  # the replaced fields' old bytes are cleared
    assert (mine[:, 23:24] == 0).all()  # past the input's point_step
    assert (out.fields[-2].offset, out.point_step) == (24, 32)
    back = pc.decode(out)
    np.testing.assert_array_equal(back["label"], labels)
    assert back["rgb"].view(np.uint32)[1] == 0x6496F5


def test_encode_pads_short_points_and_aligns_float64():
    rng = np.random.default_rng(15)
    lut = pc.make_rgb_lut({3: [9, 8, 7]})
    # point_step 14 ends mid-word: label at 16, bytes 14..16 zero, point_step 24
    fields = [field("x", 0, 7), field("y", 4, 7), field("z", 8, 7), field("ring", 12, 4)]
    cloud, values = build_cloud(rng, fields, 1, 5, 14)
    out = pc.encode_labeled(cloud, [3] * 5, lut, factory=pc.PlainFactory())
    mine = _check_labeled(cloud, values, [3] * 5, lut.view(np.uint32), out)
    assert (out.fields[-2].offset, out.point_step) == (16, 24)
    assert (mine[:, 14:16] == 0).all() and (mine[:, 18:20] == 0).all()
    # a float64 field: point_step rounded to 8 (label at 12, 12 + 8 = 20 -> 24), tail zero
    fields = [field("x", 0, 8), field("y", 8, 7)]
    cloud, values = build_cloud(rng, fields, 1, 5, 32)
    out = pc.encode_labeled(cloud, [3] * 5, lut, factory=pc.PlainFactory())
    mine = _check_labeled(cloud, values, [3] * 5, lut.view(np.uint32), out)
    assert (out.fields[-2].offset, out.point_step) == (12, 24)
    assert (mine[:, 14:16] == 0).all() and (mine[:, 20:24] == 0).all()
    layout = pc.labeled_layout(tuple(pc.Field(f.name, f.offset, f.datatype, f.count) for f in fields),
                               32, False)
    assert layout.zero_ranges == ((20, 24),)  # np.empty may hand back zeros by luck: check the plan too


def test_encode_label_and_lut_validation():
    cloud = _good()
    lut = np.zeros(pc.LUT_SIZE, np.float32)
    plain = pc.PlainFactory()
    for bad, match in [([1] * 5, "5 labels for a cloud of 6"), ([-1] + [0] * 5, "fit uint16"),
                       ([70000] + [0] * 5, "fit uint16"), ([0.5] * 6, "integers")]:
        with pytest.raises(ValueError, match=match):
            pc.encode_labeled(cloud, np.array(bad), lut, factory=plain)
    with pytest.raises(ValueError, match="rgb_lut"):
        pc.encode_labeled(cloud, [0] * 6, np.zeros(300, np.float32), factory=plain)
    out = pc.encode_labeled(cloud, np.array([1, 2, 3, 4, 5, 6], np.uint8),
                            lut.view(np.uint32), factory=plain)
    assert pc.decode(out)["label"].tolist() == [1, 2, 3, 4, 5, 6]


def test_relabelling_a_labeled_cloud_keeps_its_layout():
    """Encoding an already-labeled output again replaces the labels and keeps the layout."""
    rng = np.random.default_rng(13)
    fields, step = mixed_fields(4)
    cloud, _ = build_cloud(rng, fields, 1, 8, step)
    lut = pc.make_rgb_lut({1: [1, 2, 3], 2: [4, 5, 6]})
    once = pc.encode_labeled(cloud, [1] * 8, lut, factory=pc.PlainFactory())
    twice = pc.encode_labeled(once, [2] * 8, lut, factory=pc.PlainFactory())
    layout = [(f.name, f.offset, f.datatype, f.count) for f in once.fields]
    assert [(f.name, f.offset, f.datatype, f.count) for f in twice.fields] == layout
    assert twice.point_step == once.point_step
    a = np.frombuffer(bytes(once.data), np.uint8).reshape(8, -1)
    b = np.frombuffer(bytes(twice.data), np.uint8).reshape(8, -1)
    p = once.fields[-2].offset
    np.testing.assert_array_equal(a[:, :p], b[:, :p])
    assert [pt["label"] for pt in ref_read(twice)] == [2] * 8


# ----------------------------------------------------------------------------- structured -> cloud


@pytest.mark.parametrize("order", ["<", ">"])
def test_cloud_from_points_round_trip(order):
    dt = np.dtype({"names": ["x", "y", "z", "ring", "normal"],
                   "formats": [order + "f4", order + "f4", order + "f4", order + "u2", (order + "f8", (3,))],
                   "offsets": [0, 4, 8, 14, 16], "itemsize": 48})
    rng = np.random.default_rng(14)
    pts = np.zeros((2, 3), dt)
    for name in ("x", "y", "z"):
        pts[name] = rng.normal(size=(2, 3))
    pts["ring"] = rng.integers(0, 64, (2, 3))
    pts["normal"] = rng.normal(size=(2, 3, 3))
    cloud = pc.cloud_from_points(pts, "hdr", is_dense=True, factory=pc.PlainFactory())
    assert (cloud.height, cloud.width, cloud.point_step, cloud.row_step) == (2, 3, 48, 144)
    assert cloud.is_bigendian == (order == ">") and cloud.is_dense is True
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("ring", 14, 4, 1), ("normal", 16, 8, 3)]
    ref = ref_read(cloud)
    flat = pts.reshape(-1)
    for i, p in enumerate(ref):
        assert p["ring"] == flat[i]["ring"] and p["x"] == flat[i]["x"]
        assert [p[f"normal_{k}"] for k in range(3)] == flat[i]["normal"].tolist()
    np.testing.assert_array_equal(pc.decode(cloud, organized=True), pts)


def test_fields_from_dtype_rejects_unrepresentable_types():
    for fmt in ("<i8", "?", "<f2"):
        with pytest.raises(ValueError, match="'a'"):
            pc.fields_from_dtype(np.dtype([("a", fmt)]))
    with pytest.raises(ValueError, match="byte orders"):
        pc.fields_from_dtype(np.dtype([("a", "<f4"), ("b", ">f4")]))


def test_rosbags_messages_round_trip_through_cdr():
    typesys = pytest.importorskip("rosbags.typesys", reason="rosbags not installed")
    store = typesys.get_typestore(typesys.Stores.ROS2_KILTED)
    rng = np.random.default_rng(16)
    fields, step = mixed_fields(6)
    plain, values = build_cloud(rng, fields, 2, 7, step, row_step=7 * step + 2)
    hdr = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="f")
    factory = pc.RosbagsFactory(store)
    msg_in = factory.cloud(header=hdr, height=2, width=7, fields=[factory.field(*pc.Field(
        f.name, f.offset, f.datatype, f.count)) for f in fields], is_bigendian=False, point_step=step,
        row_step=7 * step + 2, data=np.frombuffer(plain.data, np.uint8), is_dense=False)
    name = "sensor_msgs/msg/PointCloud2"
    msg_in = store.deserialize_cdr(store.serialize_cdr(msg_in, name), name)
    assert_matches_reference(pc.read_points(msg_in), ref_read(plain))
    labels = np.arange(14) % 5
    lut = pc.make_rgb_lut({k: [k, k, k] for k in range(5)})
    out = store.deserialize_cdr(store.serialize_cdr(
        pc.encode_labeled(msg_in, labels, lut, factory=factory), name), name)
    assert out.header.frame_id == "f" and (out.height, out.width) == (2, 7)
    _check_labeled(plain, values, labels.tolist(), lut.view(np.uint32), NS(**{
        k: getattr(out, k) for k in ("height", "width", "point_step", "row_step", "is_bigendian",
                                     "is_dense", "data")}, header=plain.header, fields=out.fields))


def test_codec_works_without_ros_installed():
    """With rclpy and sensor_msgs unimportable the codec still imports and runs; RosFactory says why."""
    import subprocess
    import sys
    code = (
        "import sys\n"
        "for m in ('rclpy', 'sensor_msgs', 'sensor_msgs.msg', 'std_msgs'): sys.modules[m] = None\n"
        "import numpy as np\n"
        "import i2p_ros.ros, i2p_ros.ros.pointcloud2 as pc\n"
        "pts = np.zeros(4, [('x', '<f4'), ('y', '<f4'), ('z', '<f4')])\n"
        "pts['x'] = [1, 2, 3, 4]\n"
        "c = pc.cloud_from_points(pts, 'h', factory=pc.PlainFactory())\n"
        "o = pc.encode_labeled(c, [1, 2, 3, 4], np.zeros(65536, np.float32), factory=pc.PlainFactory())\n"
        "assert pc.decode(o)['label'].tolist() == [1, 2, 3, 4]\n"
        "assert pc.xyz(pc.decode(o))[:, 0].tolist() == [1, 2, 3, 4]\n"
        "try:\n"
        "    pc.encode_labeled(c, [0] * 4, np.zeros(65536, np.float32))\n"
        "except ImportError as e:\n"
        "    assert 'PlainFactory' in str(e), e\n"
        "    print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
