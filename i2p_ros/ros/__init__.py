"""ROS 2 adapters: PointCloud2 <-> numpy codec, the segmentation node, bag replay and evaluation."""
