"""Install the package the way colcon's ament_python build does and check what ROS tools look for.

`ros2 launch`/`ros2 run` find a package through the ament index marker, its share/ folder and
executables under lib/<package>/ (set by setup.cfg).
"""

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _console_scripts() -> list[str]:
    dist = importlib.metadata.distribution("i2p_ros")
    return [ep.name for ep in dist.entry_points if ep.group == "console_scripts"]


@pytest.fixture(scope="module")
def prefix(tmp_path_factory) -> Path:
    prefix = tmp_path_factory.mktemp("install")
    build = tmp_path_factory.mktemp("build")
    cmd = [sys.executable, "setup.py", "egg_info", "--egg-base", str(build),
           "build", "--build-base", str(build),
           "install", "--prefix", str(prefix), "--record", str(build / "record.txt"),
           "--single-version-externally-managed"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return prefix


def test_ament_index_marker(prefix):
    assert (prefix / "share/ament_index/resource_index/packages/i2p_ros").is_file()


def test_share_holds_manifest_launch_and_every_config_file(prefix):
    share = prefix / "share/i2p_ros"
    assert (share / "package.xml").read_bytes() == (ROOT / "package.xml").read_bytes()
    assert (share / "launch/segment.launch.py").is_file()
    for src in (ROOT / "config").rglob("*"):
        if src.is_file():
            installed = share / src.relative_to(ROOT)
            assert installed.is_file(), f"{installed} not installed"


def test_executables_under_lib_package(prefix):
    names = _console_scripts()
    assert "segment_node" in names and "i2p-sim" in names
    for name in names:
        exe = prefix / "lib/i2p_ros" / name
        assert exe.is_file() and os.access(exe, os.X_OK), f"{exe} missing or not executable"


def test_installed_package_imports_from_prefix(prefix, tmp_path):
    site = next(prefix.glob("lib/python3*/site-packages"))
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, "-c", "import i2p_ros, sys; print(i2p_ros.__file__)"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip().startswith(str(site))
