"""Shared pytest setup.

Every test session gets its own ROS domain on loopback, so parallel runs (CI, developers) never
see each other's topics, and the shipped Fast DDS profile for large clouds.
"""

import os
from pathlib import Path

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("MPLBACKEND", "Agg")
# Fast DDS reads its XML profile once per process, when the first participant is created: every ROS test
# of the session (and the node subprocesses, which inherit it) uses the shipped large-message profile.
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE",
                      str(Path(__file__).resolve().parents[1] / "config" / "fastdds_large_messages.xml"))
