"""package.xml is the single source of the version and description; everything else must agree."""

import ast
import importlib.metadata
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import i2p_ros

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ET.parse(ROOT / "package.xml").getroot()

# Python import name -> ROS package key that must be an exec_depend.
ROS_IMPORTS = {
    "rclpy": "rclpy",
    "sensor_msgs": "sensor_msgs",
    "std_msgs": "std_msgs",
    "builtin_interfaces": "builtin_interfaces",
    "diagnostic_msgs": "diagnostic_msgs",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "numpy": "python3-numpy",
    "yaml": "python3-yaml",
}


def _depends(tag: str) -> set[str]:
    return {e.text.strip() for e in MANIFEST.findall(tag)}


def test_manifest_is_format3_ament_python():
    assert MANIFEST.get("format") == "3"
    assert MANIFEST.findtext("name") == "i2p_ros"
    assert MANIFEST.findtext("export/build_type") == "ament_python"
    assert "ament_python" in _depends("buildtool_depend")
    assert re.fullmatch(r"\d+\.\d+\.\d+", MANIFEST.findtext("version"))
    assert {"rclpy", "sensor_msgs", "std_msgs", "python3-numpy", "python3-yaml"} <= _depends("exec_depend")
    assert "python3-pytest" in _depends("test_depend")


def test_version_and_description_agree_everywhere():
    version = MANIFEST.findtext("version")
    description = " ".join(MANIFEST.findtext("description").split())
    meta = importlib.metadata.metadata("i2p_ros")
    assert meta["Version"] == version
    assert meta["Summary"] == description
    assert i2p_ros.__version__ == version
    # setup.py itself, asked directly (what colcon sees)
    out = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[-1] == version


def _imported_top_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_ros_package_the_code_imports_is_declared():
    sources = [*ROOT.joinpath("i2p_ros").rglob("*.py"), *ROOT.joinpath("launch").glob("*.py")]
    used = set().union(*(_imported_top_modules(p) for p in sources))
    needed = {ROS_IMPORTS[m] for m in used if m in ROS_IMPORTS}
    missing = needed - _depends("exec_depend")
    assert not missing, f"package.xml lacks exec_depend for {sorted(missing)}"
