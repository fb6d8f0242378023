"""One scan, three front ends, a real (untrained) lite0 model: the node, ``i2p-segment`` and the pipeline
give identical labels."""

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) not installed")
pytest.importorskip("diagnostic_msgs", reason="diagnostic_msgs wheel (ros-kilted-diagnostic-msgs) not installed")
from node_helpers import Probe, ros_cloud, ros_context, save_untrained_lite0, sim_scan, spinning, wait_for  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from i2p_ros import segment_cli  # noqa: E402
from i2p_ros.data.semantic_kitti import read_label_file, write_points  # noqa: E402
from i2p_ros.pipeline import SegmentationPipeline  # noqa: E402
from i2p_ros.ros import pointcloud2 as pc  # noqa: E402
from i2p_ros.ros.bag_write import POINT_DTYPE  # noqa: E402
from i2p_ros.ros.params import NodeParams  # noqa: E402
from i2p_ros.ros.segment_node import SegmentNode  # noqa: E402

pytestmark = pytest.mark.ros


def test_node_cli_and_pipeline_agree_on_a_real_model(tmp_path):
    ckpt = save_untrained_lite0(tmp_path / "lite0.pt", seed=1)
    scan = sim_scan(azimuth_steps=32, seed=5)
    xyzi = scan.points.copy()
    xyzi[0, :3] = np.nan                                  # labeled 0 by every front end
    xyzi[1, :3] = [0.0, 70.0, 0.0]                        # outside the default range box
    bin_path = write_points(tmp_path / "seq" / "velodyne" / "000000.bin", xyzi)

    pipeline = SegmentationPipeline.from_checkpoint(ckpt, device="cpu", bounds=NodeParams.defaults().bounds,
                                                    num_threads=2, warmup=False)
    ref = pipeline.segment(xyzi).labels
    assert ref[0] == 0 and ref[1] == 0
    assert len(np.unique(ref[2:])) >= 2, "untrained model gives one class: comparison would be weak"

    assert segment_cli.main(["--checkpoint", str(ckpt), "--input", str(tmp_path / "seq"),
                             "--output", str(tmp_path / "pred"), "--device", "cpu", "--quiet"]) == 0
    cli, _ = read_label_file(tmp_path / "pred" / "000000.label", len(xyzi), points_path=bin_path)

    overrides = [Parameter("checkpoint", value=str(ckpt)), Parameter("device", value="cpu"),
                 Parameter("warmup", value=False), Parameter("qos_reliability", value="reliable"),
                 Parameter("log_period_s", value=0.0)]
    with ros_context() as ctx:
        node = SegmentNode(context=ctx, parameter_overrides=overrides)
        probe = Probe(ctx)
        with spinning(ctx, node, probe.node):
            probe.wait_matched()
            probe.pub.publish(ros_cloud(xyzi.view(POINT_DTYPE).reshape(-1)))
            assert wait_for(lambda: probe.clouds, 120.0), "no labeled cloud within 120 s"
    node_labels = pc.read_points(probe.clouds[0])["label"]

    np.testing.assert_array_equal(cli, ref)
    np.testing.assert_array_equal(node_labels, ref)
