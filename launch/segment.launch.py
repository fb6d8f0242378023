"""Launch the i2p_ros LiDAR segmentation node.

    ros2 launch i2p_ros segment.launch.py input_topic:=/velodyne_points device:=cuda

Parameters come from ``params_file`` (default: the package's config/segment.yaml); the launch
arguments ``checkpoint``, ``device`` and ``backend`` override it only when given a non-empty value.
With ``use_large_message_profile:=true`` (default) the node's Fast DDS participant loads the shipped
profile for multi-megabyte clouds; give the LiDAR driver the same FASTDDS_DEFAULT_PROFILES_FILE.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

PACKAGE = "i2p_ros"
EXECUTABLE = "segment_node"
OVERRIDABLE = ("checkpoint", "device", "backend")


def _node(context, *args, **kwargs):
    """Build the node once launch arguments are known, so empty overrides keep the YAML values."""
    overrides = {}
    for name in OVERRIDABLE:
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=LaunchConfiguration("node_name"),
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"), overrides],
            remappings=[
                ("points", LaunchConfiguration("input_topic")),
                ("points_labeled", LaunchConfiguration("output_topic")),
            ],
            arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("input_topic", default_value="points",
                              description="PointCloud2 topic to segment"),
        DeclareLaunchArgument("output_topic", default_value="points_labeled",
                              description="labeled PointCloud2 topic"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([share, "config", "segment.yaml"]),
                              description="node parameter file"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="model file (.pt or .onnx); empty: from params_file"),
        DeclareLaunchArgument("device", default_value="",
                              description="auto | cpu | cuda | cuda:N; empty: from params_file"),
        DeclareLaunchArgument("backend", default_value="",
                              description="torch | onnxruntime | tensorrt; empty: from params_file"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("node_name", default_value=EXECUTABLE, description="node name"),
        DeclareLaunchArgument("log_level", default_value="info", description="ROS log level"),
        DeclareLaunchArgument("use_large_message_profile", default_value="true",
                              description="load the shipped Fast DDS profile for large clouds"),
        DeclareLaunchArgument("dds_profile",
                              default_value=PathJoinSubstitution(
                                  [share, "config", "fastdds_large_messages.xml"]),
                              description="Fast DDS XML profile used when the option above is true"),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("dds_profile"),
                               condition=IfCondition(LaunchConfiguration("use_large_message_profile"))),
        OpaqueFunction(function=_node),
    ])
