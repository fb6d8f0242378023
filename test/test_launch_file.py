"""launch/segment.launch.py: parses, names an executable setup.py installs, refers to existing config files,
declares the launch arguments issue 7 asks for, and loads with real launch_ros where that is installed."""

import ast
import importlib.util
from pathlib import Path

import pytest
from node_helpers import ROOT

from i2p_ros.ros.params import SPECS

LAUNCH = ROOT / "launch" / "segment.launch.py"


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _constants(tree: ast.Module) -> dict[str, object]:
    """Module-level NAME = literal assignments."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def _calls(tree: ast.Module, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _console_scripts() -> dict[str, str]:
    scripts = {}
    for node in ast.walk(_tree(ROOT / "setup.py")):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and " = " in node.value \
                and ":" in node.value:
            name, target = (s.strip() for s in node.value.split("=", 1))
            scripts[name] = target
    return scripts


def test_executable_is_a_console_script_with_a_main():
    consts = _constants(_tree(LAUNCH))
    assert consts["PACKAGE"] == "i2p_ros"
    target = _console_scripts()[consts["EXECUTABLE"]]
    module, func = target.split(":")
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"{module} not importable"
    functions = {n.name for n in _tree(Path(spec.origin)).body if isinstance(n, ast.FunctionDef)}
    assert func in functions


def test_config_files_it_refers_to_exist():
    tree = _tree(LAUNCH)
    referenced = []
    for call in _calls(tree, "PathJoinSubstitution"):
        parts = [e.value for e in call.args[0].elts if isinstance(e, ast.Constant)]
        if parts and parts[0] == "config":
            referenced.append(ROOT.joinpath(*parts))
    names = {p.name for p in referenced}
    assert {"segment.yaml", "fastdds_large_messages.xml"} <= names
    for path in referenced:
        assert path.is_file(), f"{path} referenced by the launch file does not exist"


def test_launch_arguments_remappings_and_overrides():
    tree = _tree(LAUNCH)
    declared = {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")}
    assert {"input_topic", "output_topic", "params_file", "checkpoint", "device", "backend",
            "use_large_message_profile"} <= declared
    remapped = set()
    for call in _calls(tree, "Node"):
        for kw in call.keywords:
            if kw.arg == "remappings":
                remapped |= {t.elts[0].value for t in kw.value.elts}
    assert remapped == {"points", "points_labeled"}
    overridable = _constants(tree)["OVERRIDABLE"]
    assert set(overridable) <= {s.name for s in SPECS}
    used = {c.args[0].value for c in _calls(tree, "LaunchConfiguration") if isinstance(c.args[0], ast.Constant)}
    assert used <= declared, f"launch configurations never declared: {used - declared}"


def test_loads_with_launch_ros():
    launch_ros = pytest.importorskip("launch_ros", reason="launch_ros is not installable from PyPI here")
    import launch

    if not hasattr(launch, "LaunchDescription"):
        pytest.skip("`launch` resolves to the repo's launch/ folder, not the ROS launch package")
    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    desc = module.generate_launch_description()
    assert isinstance(desc, launch.LaunchDescription)
    args = {a.name: a for a in desc.entities if isinstance(a, launch.actions.DeclareLaunchArgument)}
    context = launch.LaunchContext()
    for name, arg in args.items():
        if name != "params_file":
            context.launch_configurations[name] = launch.utilities.perform_substitutions(context, arg.default_value)
    context.launch_configurations["params_file"] = str(ROOT / "config" / "segment.yaml")
    context.launch_configurations["device"] = "cpu"
    (node,) = module._node(context)
    assert isinstance(node, launch_ros.actions.Node)
    assert node.node_executable == "segment_node" and node.node_package == "i2p_ros"
