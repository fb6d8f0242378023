"""segment_node in its own process (``python -m i2p_ros.ros.segment_node``) with the shipped DDS profile:
a full-size (~110k-point, 4.4 MB) cloud crosses process boundaries both ways, comes back with every
point in order, and SIGINT stops the node cleanly."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from i2p_ros.ros.resources import DDS_PROFILE, config_file

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) not installed")
pytest.importorskip("diagnostic_msgs", reason="diagnostic_msgs wheel (ros-kilted-diagnostic-msgs) not installed")
from node_helpers import (  # noqa: E402
    ROOT,
    Probe,
    raw_ids,
    ros_cloud,
    ros_context,
    save_untrained_lite0,
    sim_scan,
    spinning,
    structured_cloud,
    wait_for,
)

from i2p_ros.ros import pointcloud2 as pc  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture
def node_process(tmp_path):
    ckpt = save_untrained_lite0(tmp_path / "lite0.pt")
    log = open(tmp_path / "node.log", "w+")
    env = dict(os.environ, FASTDDS_DEFAULT_PROFILES_FILE=str(config_file(DDS_PROFILE)), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "i2p_ros.ros.segment_node", "--ros-args", "-r", "__node:=segment_node",
           "-p", f"checkpoint:={ckpt}", "-p", "device:=cpu", "-p", "warmup:=false", "-p", "qos_reliability:=reliable",
           "-p", "log_period_s:=1.0", "-r", "points:=/two_proc/points", "-r", "points_labeled:=/two_proc/labeled"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def _log(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()


def test_full_size_cloud_round_trip_between_processes_and_sigint(node_process):
    proc, log = node_process
    scan = sim_scan(azimuth_steps=2000, seed=2)
    xyzi = scan.points.copy()
    xyzi[::1000, 2] = np.nan
    points = structured_cloud(xyzi)
    assert len(points) > 100_000 and points.nbytes > 4_000_000
    with ros_context() as ctx:
        probe = Probe(ctx, input_topic="/two_proc/points", output_topic="/two_proc/labeled", reliable_out=True)
        with spinning(ctx, probe.node):
            try:
                probe.wait_matched(timeout=90.0)
            except AssertionError:
                pytest.fail(f"node process not discovered; its log:\n{_log(log)[-3000:]}")
            probe.pub.publish(ros_cloud(points, sec=99, nanosec=5))
            ok = wait_for(lambda: probe.clouds and probe.latency, 180.0, step=0.1)
            assert ok, f"no labeled cloud within 180 s; node log:\n{_log(log)[-3000:]}"
    out = probe.clouds[0]
    assert (out.header.stamp.sec, out.header.stamp.nanosec) == (99, 5)
    got = pc.read_points(out)
    assert len(got) == len(points)
    for name in points.dtype.names:
        np.testing.assert_array_equal(got[name], points[name], err_msg=name)
    labels = got["label"]
    assert (labels[::1000] == 0).all()
    assert set(np.unique(labels).tolist()) <= set(raw_ids()) | {0}
    keys = {kv.key: float(kv.value) for kv in probe.latency[0].status[0].values}
    assert keys["points"] == len(points) and keys["network"] > 0

    # the periodic summary (every log_period_s = 1 s) counts the frame
    assert wait_for(lambda: "since start 1 labeled" in _log(log), 10.0), _log(log)[-3000:]
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"node did not stop within 30 s of SIGINT; log:\n{_log(log)[-3000:]}")
    text = _log(log)
    assert code == 0, text[-3000:]
    assert "Traceback" not in text and "terminate called" not in text, text[-3000:]
    assert "ready:" in text
