"""Where the package's shipped files are: the source tree, the ament index or ``<prefix>/share``.

The source tree comes first so an editable install uses the files being edited; a colcon or pip
install finds the copies setup.py puts under ``share/i2p_ros``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path

__all__ = ["DDS_PROFILE", "config_file", "use_dds_profile"]

PACKAGE = "i2p_ros"
DDS_PROFILE = "fastdds_large_messages.xml"
_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"


def _share_dirs() -> Iterator[Path]:
    """Candidate package share folders, cheapest first (the ament index is only asked when needed)."""
    yield Path(__file__).resolve().parents[2]
    try:
        from ament_index_python.packages import get_package_share_directory

        yield Path(get_package_share_directory(PACKAGE))
    except (ImportError, LookupError, OSError):  # no ament index / package not in it / AMENT_PREFIX_PATH unset
        pass
    yield Path(sys.prefix) / "share" / PACKAGE


def config_file(name: str) -> Path:
    """``config/<name>`` of the package; FileNotFoundError lists where it looked."""
    looked = []
    for d in _share_dirs():
        cand = d / "config" / name
        if cand.is_file():
            return cand
        looked.append(str(cand))
    raise FileNotFoundError(f"config/{name} not found; looked in: " + ", ".join(looked))


def use_dds_profile(env: MutableMapping[str, str] | None = None, path: str | os.PathLike | None = None) -> str:
    """Point Fast DDS at the large-message profile unless the environment already names one.

    Must run before the process's first ``rclpy.init`` (the participant reads it when created).
    Returns the profile in effect.
    """
    env = os.environ if env is None else env
    if not env.get(_ENV):
        env[_ENV] = str(path or config_file(DDS_PROFILE))
    return env[_ENV]
