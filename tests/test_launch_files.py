"""Launch files: every argument declared with a description, referenced executables/configs exist.

launch/launch_ros are not on PyPI, so the files are inspected as source (AST); where the real
``launch`` is importable the launch descriptions are also built.
"""
import ast
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
COMMON_ARGUMENTS = {"params_file", "namespace", "use_sim_time", "log_level", "device"}
REQUIRED = {
    "inspect.launch.py": COMMON_ARGUMENTS | {"model_path", "input_mode", "image_topic", "points_topic",
                                             "depth_topic", "camera_info_topic"},
    "train.launch.py": COMMON_ARGUMENTS | {"input_mode", "image_topic", "points_topic", "depth_topic",
                                           "camera_info_topic", "bag_paths", "output_model_path"},
    "evaluate.launch.py": COMMON_ARGUMENTS | {"model_path", "input_mode", "image_topic", "points_topic",
                                              "depth_topic", "camera_info_topic", "bag", "output_dir"},
}


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def _executables():
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "EXECUTABLES" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no EXECUTABLES dict")


def test_expected_launch_files_exist():
    assert {p.name for p in LAUNCH_FILES} >= set(REQUIRED)


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_arguments_have_descriptions(path):
    tree = ast.parse(path.read_text())
    declared = {}
    for call in _calls(tree, "DeclareLaunchArgument"):
        assert call.args and isinstance(call.args[0], ast.Constant), f"{path.name}: argument name must be a literal"
        kwargs = {k.arg: k.value for k in call.keywords}
        name = call.args[0].value
        desc = kwargs.get("description")
        assert isinstance(desc, ast.Constant) and len(desc.value.strip()) > 10, f"{path.name}: {name} lacks a description"
        assert "default_value" in kwargs, f"{path.name}: {name} lacks a default"
        declared[name] = desc.value
    missing = REQUIRED.get(path.name, COMMON_ARGUMENTS) - set(declared)
    assert not missing, f"{path.name} does not declare {sorted(missing)}"
    # every LaunchConfiguration used refers to a declared argument
    used = {c.args[0].value for c in _calls(tree, "LaunchConfiguration") if c.args and isinstance(c.args[0], ast.Constant)}
    used |= {c.args[0].value for c in _calls(tree, "arg") if c.args and isinstance(c.args[0], ast.Constant)}
    assert used <= set(declared), f"{path.name} uses undeclared {sorted(used - set(declared))}"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_referenced_executables_and_configs_exist(path):
    tree = ast.parse(path.read_text())
    executables = {k.value.value for c in _calls(tree, "Node") for k in c.keywords
                   if k.arg == "executable" and isinstance(k.value, ast.Constant)}
    assert executables, f"{path.name} starts no node"
    assert executables <= _executables(), f"{path.name}: unknown executables {executables - _executables()}"
    packages = {k.value.value for c in _calls(tree, "Node") for k in c.keywords if k.arg == "package"}
    assert packages == {"mentor3ad"}
    configs = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
               and n.value.endswith(".yaml")}
    assert configs, f"{path.name} loads no config/*.yaml"
    for name in configs:
        assert (REPO / "config" / name).is_file(), f"{path.name} references missing config/{name}"


@pytest.mark.skipif(importlib.util.find_spec("launch") is None or importlib.util.find_spec("launch_ros") is None,
                    reason="launch/launch_ros not installed (no ROS install)")
@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_description_builds(path):
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {a.name for a in description.get_launch_arguments()}
    assert REQUIRED.get(path.name, COMMON_ARGUMENTS) <= names
