"""The ROS-free parts of the node: parameter table and validation, latest-wins worker, frame processing."""

import threading
import time

import numpy as np
import pytest
import yaml
from node_helpers import ROOT, stub_pipeline, wait_for

from i2p_ros.data.labels import load_label_config
from i2p_ros.ros import pointcloud2 as pc
from i2p_ros.ros.backends import BackendError, PipelineRequest, create_pipeline, resolve_checkpoint
from i2p_ros.ros.params import SPECS, NodeParams, ParamError, load_params_file
from i2p_ros.ros.processor import FramePipeline, FrameRejected, ProcessorSettings, encode_with_confidence
from i2p_ros.ros.worker import LatestWinsWorker

# ----------------------------------------------------------------------------- parameters


def test_segment_yaml_matches_the_declared_parameters():
    doc = yaml.safe_load((ROOT / "config/segment.yaml").read_text())
    values = doc["/**"]["ros__parameters"]
    assert list(values) == [s.name for s in SPECS], "config/segment.yaml and params.SPECS list different names"
    for spec in SPECS:
        assert values[spec.name] == spec.default, spec.name
        assert type(values[spec.name]) is type(spec.default), f"{spec.name}: YAML type differs (10 vs 10.0?)"
    assert NodeParams.from_mapping(values) == NodeParams.defaults()


@pytest.mark.parametrize("name, value, text", [
    ("num_threads", 2.5, "wrong type"),
    ("num_threads", -1, "outside"),
    ("qos_reliability", "sometimes", "not one of"),
    ("backend", "jax", "not one of"),
    ("device", "cuda:x", "cuda:N"),
    ("range_min", [0.0, 0.0], "3 finite numbers"),
    ("range_max", [1.0, 1.0, float("nan")], "3 finite numbers"),
    ("range_max", [60.0, 60.0, -5.0], "range_min.z"),
    ("intensity_fields", [], "non-empty"),
    ("intensity_fields", "intensity", "wrong type"),
    ("publish_confidence", 1, "wrong type"),
    ("voxel_size", 11.0, "outside"),
    ("no_such_parameter", 1, "unknown parameter"),
])
def test_bad_parameter_values_are_rejected_by_name(name, value, text):
    with pytest.raises(ParamError, match=text) as err:
        NodeParams.from_mapping({name: value})
    assert name in str(err.value)


def test_numbers_are_coerced_and_params_files_merge_wildcard_and_node_sections(tmp_path):
    p = NodeParams.from_mapping({"voxel_size": 1, "range_min": [-10, -10, -2]})
    assert p.voxel_size == 1.0 and p.range_min == (-10.0, -10.0, -2.0) and p.bounds[1] == (51.2, 51.2, 4.4)
    f = tmp_path / "p.yaml"
    f.write_text("/**:\n  ros__parameters:\n    device: cpu\n    qos_depth: 5\n"
                 "segment_node:\n  ros__parameters:\n    qos_depth: 7\nother:\n  ros__parameters:\n    x: 1\n")
    assert load_params_file(f) == {"device": "cpu", "qos_depth": 7}
    f.write_text("segment_node: [1, 2]\n")
    with pytest.raises(ParamError, match="ros__parameters"):
        load_params_file(f)


def test_backend_factory_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(BackendError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope.pt")
    monkeypatch.setattr("i2p_ros.ros.backends.default_checkpoint_path", lambda: tmp_path / "demo.pt")
    with pytest.raises(BackendError, match="demo model .* is missing"):
        resolve_checkpoint("")
    with pytest.raises(BackendError, match="unknown backend 'jax'"):
        create_pipeline("jax", PipelineRequest(tmp_path / "x.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BackendError, match="could not load"):
        create_pipeline("torch", PipelineRequest(bad))


# ----------------------------------------------------------------------------- latest-wins worker


def test_worker_runs_one_at_a_time_and_the_newest_waiting_item_wins():
    gate, started, seen = threading.Event(), threading.Event(), []

    def handler(item):
        seen.append(item)
        started.set()
        gate.wait(10)

    w = LatestWinsWorker(handler)
    try:
        assert w.submit(1) is False
        assert started.wait(5)
        assert [w.submit(i) for i in (2, 3, 4)] == [False, True, True]   # 2 waits; 3 replaces it; 4 replaces 3
        gate.set()
        assert w.wait_idle(5)
        assert seen == [1, 4] and (w.submitted, w.replaced, w.completed) == (4, 2, 2)
    finally:
        assert w.stop(5)


def test_worker_survives_handler_errors_and_stops_cleanly():
    errors, done = [], []

    def handler(item):
        if item == "bad":
            raise RuntimeError("boom")
        done.append(item)

    w = LatestWinsWorker(handler, on_error=lambda item, exc: errors.append((item, str(exc))))
    w.submit("bad")
    assert wait_for(lambda: errors, 5)
    w.submit("good")
    assert w.wait_idle(5) and done == ["good"] and errors == [("bad", "boom")]
    assert w.stop(5) and w.submit("late") is False
    time.sleep(0.05)
    assert done == ["good"]


# ----------------------------------------------------------------------------- frame processing


def _cloud(points):
    return pc.cloud_from_points(points, header=object(), factory=pc.PlainFactory())


def test_frame_pipeline_labels_every_point_and_times_each_stage():
    dt = np.dtype({"names": ["x", "y", "z", "i", "t"], "formats": ["<f4"] * 4 + ["<f8"], "offsets": [0, 4, 8, 12, 16],
                   "itemsize": 24})
    rng = np.random.default_rng(1)
    pts = np.zeros(500, dt)
    for name in ("x", "y"):
        pts[name] = rng.uniform(-30, 30, 500)
    pts["z"], pts["i"], pts["t"] = rng.uniform(-2, 2, 500), rng.uniform(0, 255, 500), rng.random(500)
    pipeline = stub_pipeline()
    lut = pc.make_rgb_lut(load_label_config().color_map_bgr)
    fp = FramePipeline(pipeline, lut, ProcessorSettings(intensity_fields=("i",), intensity_scale=0.5),
                       factory=pc.PlainFactory())
    res = fp.process(_cloud(pts))
    xyzi = np.column_stack([pts["x"], pts["y"], pts["z"], pts["i"] * np.float32(0.5)]).astype(np.float32)
    np.testing.assert_array_equal(res.labels, pipeline.segment(xyzi).labels)
    out = pc.read_points(res.cloud)
    np.testing.assert_array_equal(out["t"], pts["t"])
    np.testing.assert_array_equal(out["label"], res.labels)
    assert {"decode", "voxelize", "network", "devoxelize", "encode", "total"} <= set(res.timings_ms)
    assert res.timings_ms["total"] >= res.timings_ms["network"]


def test_confidence_field_is_the_pipeline_confidence_after_label_and_rgb():
    pts = np.zeros(300, np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("w", "<f8")]))
    rng = np.random.default_rng(2)
    for name in ("x", "y", "z", "w"):
        pts[name] = rng.normal(scale=5, size=300)
    cloud = _cloud(pts)
    pipeline = stub_pipeline()
    xyzi = np.column_stack([pts["x"], pts["y"], pts["z"], np.zeros(300)]).astype(np.float32)
    res = pipeline.segment(xyzi, confidence=True)
    lut = pc.make_rgb_lut(load_label_config().color_map_bgr)
    out = encode_with_confidence(cloud, res.labels, res.confidence, lut, factory=pc.PlainFactory())
    plain = pc.encode_labeled(cloud, res.labels, lut, factory=pc.PlainFactory())
    assert [f.name for f in out.fields] == [f.name for f in plain.fields] + ["confidence"]
    assert out.point_step % 8 == 0 and out.point_step >= plain.point_step + 4   # float64 input stays aligned
    got = pc.read_points(out)
    ref = pc.read_points(plain)
    for name in ref.dtype.names:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    np.testing.assert_array_equal(got["confidence"], res.confidence)
    pad = np.frombuffer(out.data, np.uint8).reshape(300, out.point_step)[:, plain.point_step + 4:]
    assert not pad.any()


@pytest.mark.parametrize("category, cloud", [
    ("empty", lambda: _cloud(np.zeros(0, [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]))),
    ("missing_xyz", lambda: _cloud(np.zeros(3, [("x", "<f4"), ("y", "<f4")]))),
])
def test_frame_pipeline_rejects_with_a_category(category, cloud):
    fp = FramePipeline(stub_pipeline(), np.zeros(1 << 16, np.float32), factory=pc.PlainFactory())
    with pytest.raises(FrameRejected) as err:
        fp.process(cloud())
    assert err.value.category == category


def test_organized_cloud_with_row_padding_keeps_its_shape_and_row_major_labels():
    from types import SimpleNamespace

    h, w, step, row_step = 3, 50, 16, 16 * 50 + 8          # 8 padding bytes after each row
    rng = np.random.default_rng(3)
    xyzi = np.column_stack([rng.uniform(-20, 20, (h * w, 2)), rng.uniform(-2, 2, h * w),
                            rng.random(h * w)]).astype(np.float32)
    buf = np.zeros(h * row_step, np.uint8)
    for r in range(h):
        buf[r * row_step:r * row_step + w * step] = xyzi[r * w:(r + 1) * w].view(np.uint8).reshape(-1)
    fields = [SimpleNamespace(name=n, offset=4 * k, datatype=pc.FLOAT32, count=1)
              for k, n in enumerate(("x", "y", "z", "intensity"))]
    cloud = SimpleNamespace(header="hdr", height=h, width=w, fields=fields, is_bigendian=False, point_step=step,
                            row_step=row_step, data=buf, is_dense=True)
    pipeline = stub_pipeline()
    fp = FramePipeline(pipeline, pc.make_rgb_lut(load_label_config().color_map_bgr), factory=pc.PlainFactory())
    res = fp.process(cloud)
    assert (res.cloud.height, res.cloud.width, res.cloud.header) == (h, w, "hdr")
    out = pc.decode(res.cloud, organized=True)
    np.testing.assert_array_equal(out["label"].reshape(-1), pipeline.segment(xyzi).labels)
    np.testing.assert_array_equal(out["x"].reshape(-1), xyzi[:, 0])
