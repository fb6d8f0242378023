"""i2p_ros: Image2Point LiDAR semantic segmentation for ROS 2.

The package is importable without ROS; only :mod:`i2p_ros.ros` needs rclpy.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("i2p_ros")
except _metadata.PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"
