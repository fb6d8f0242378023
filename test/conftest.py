"""Shared pytest setup.

Every test session gets its own ROS domain on loopback, so parallel runs (CI, developers) never
see each other's topics.
"""

import os

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("MPLBACKEND", "Agg")
