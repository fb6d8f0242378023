"""i2p-bag-eval end to end: bag -> ROS topics -> segment_node -> scores, latency, drops, files.

The expected IoU is computed here by a per-class loop over the pipeline's labels for the same scans,
independently of i2p_ros.metrics and of the ROS path.
"""

import json
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) not installed")
pytest.importorskip("diagnostic_msgs", reason="diagnostic_msgs wheel (ros-kilted-diagnostic-msgs) not installed")
from node_helpers import LinearNet, ros_context, save_untrained_lite0, sim_scan, spinning, stub_pipeline  # noqa: E402

from i2p_ros.data.labels import load_label_config  # noqa: E402
from i2p_ros.data.semantic_kitti import write_scan  # noqa: E402
from i2p_ros.ros import bag_eval  # noqa: E402
from i2p_ros.ros.bag_eval import EvalOptions, run_eval  # noqa: E402
from i2p_ros.ros.bag_write import write_bag  # noqa: E402

pytestmark = pytest.mark.ros
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    root = tmp_path_factory.mktemp("bag_eval")
    scans = [sim_scan(azimuth_steps=40, seed=7, index=i) for i in range(4)]
    for i, s in enumerate(scans):
        write_scan(root / "ds", 0, i, s.points, s.semantic, s.instance)
    path = write_bag(root / "ds" / "sequences" / "00", root / "bag", storage="mcap").path
    return path, scans


def _expected_iou(pipeline, scans):
    lc = load_label_config()
    lut = lc.raw_to_train_lut
    gt = np.concatenate([lut[s.semantic] for s in scans]).astype(np.int64)
    pred = np.concatenate([lut[pipeline.segment(s.points).labels] for s in scans]).astype(np.int64)
    iou = {}
    keep = gt != 255
    for c, name in enumerate(lc.class_names):
        tp = np.sum(keep & (gt == c) & (pred == c))
        fp = np.sum(keep & (gt != c) & (pred == c))
        fn = np.sum((gt == c) & (pred != c))
        iou[name] = None if tp + fp + fn == 0 else tp / (tp + fp + fn)
    defined = [v for v in iou.values() if v is not None]
    return iou, float(np.mean(defined))


def test_launch_node_rate_max_scores_every_frame(bag, tmp_path):
    path, scans = bag
    pipeline = stub_pipeline()
    iou, miou = _expected_iou(pipeline, scans)
    out = tmp_path / "out"
    rep = run_eval(EvalOptions(bag=path, rate=None, out_dir=out, timeout_s=30.0), pipeline=pipeline)
    assert (rep["published"], rep["labeled"], rep["dropped"]) == (4, 4, 0)
    assert rep["points_preserved"] and rep["unexpected_outputs"] == 0
    assert rep["miou"] == pytest.approx(miou, abs=1e-12)
    for name, want in iou.items():
        assert (rep["iou"][name] is None) == (want is None), name
        if want is not None:
            assert rep["iou"][name] == pytest.approx(want, abs=1e-12), name
    lat = rep["latency_ms"]
    for key in ("end_to_end", "decode", "voxelize", "network", "devoxelize", "encode", "total"):
        assert lat[key]["n"] == 4 and lat[key]["p50"] <= lat[key]["p95"] <= lat[key]["p99"] <= lat[key]["max"]
    assert lat["end_to_end"]["p50"] >= lat["network"]["p50"]
    assert rep["node"]["totals"] == {"received": 4, "labeled": 4}
    saved = json.loads((out / "bag_eval.json").read_text())
    assert saved["miou"] == rep["miou"] and saved["labeled"] == 4
    for name in ("latency_hist.png", "latency_timeline.png", "class_iou.png", "bev.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 5000, name


def test_real_time_rate_with_a_slow_model_drops_frames_and_says_so(bag):
    path, _ = bag

    class Slow(LinearNet):
        def __call__(self, x):
            time.sleep(0.3)   # 3 x the 10 Hz frame period
            return super().__call__(x)

    rep = run_eval(EvalOptions(bag=path, rate=1.0, timeout_s=10.0, plots=False), pipeline=stub_pipeline(Slow()))
    assert rep["published"] == 4 and rep["dropped"] >= 1
    assert rep["labeled"] + rep["dropped"] == 4
    assert rep["frames"][-1]["labeled"]                       # latest wins: the last frame is always done
    assert rep["node"]["totals"]["dropped"] == rep["dropped"]  # every loss was a latest-wins replacement
    labeled = [f for f in rep["frames"] if f["labeled"]]
    assert all(f["end_to_end_ms"] >= 300.0 for f in labeled)


def test_external_node_over_dds(bag):
    from rclpy.parameter import Parameter

    from i2p_ros.ros.segment_node import SegmentNode

    path, _ = bag
    with ros_context() as ctx:   # a separate context = a separate DDS participant, like another process
        node = SegmentNode("ext_node", context=ctx, pipeline=stub_pipeline(),
                           parameter_overrides=[Parameter("input_topic", value="/ext/points"),
                                                Parameter("output_topic", value="/ext/labeled"),
                                                Parameter("log_period_s", value=0.0)])
        with spinning(ctx, node):
            rep = run_eval(EvalOptions(bag=path, rate=None, launch_node=False, input_topic="/ext/points",
                                       output_topic="/ext/labeled", node_name="ext_node", timeout_s=30.0,
                                       plots=False))
    assert rep["mode"] == "external" and rep["node"] is None
    assert (rep["labeled"], rep["dropped"]) == (4, 0) and rep["points_preserved"]
    assert rep["latency_ms"]["network"]["n"] == 4


def test_cli_with_a_real_untrained_model(bag, tmp_path, capsys):
    path, _ = bag
    ckpt = save_untrained_lite0(tmp_path / "lite0.pt")
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    warmup: false\n    num_threads: 2\n")
    code = bag_eval.main(["--bag", str(path), "--rate", "max", "--checkpoint", str(ckpt), "--device", "cpu",
                          "--params-file", str(params), "--max-frames", "3", "--out", str(tmp_path / "o"),
                          "--timeout", "120"])
    text = capsys.readouterr().out
    assert code == 0, text
    rep = json.loads((tmp_path / "o" / "bag_eval.json").read_text())
    assert (rep["published"], rep["labeled"]) == (3, 3) and rep["points_preserved"]
    assert 0.0 <= rep["miou"] <= 1.0
    assert "mIoU" in text and "end_to_end" in text and "frames: 3 published, 3 labeled, 0 dropped" in text


def test_cli_reports_a_missing_node_instead_of_hanging(bag, capsys):
    path, _ = bag
    t0 = time.monotonic()
    code = bag_eval.main(["--bag", str(path), "--external", "--input-topic", "/nobody/points",
                          "--discovery-timeout", "1"])
    assert code == 2 and time.monotonic() - t0 < 20
    assert "no segment_node found within 1 s" in capsys.readouterr().err
