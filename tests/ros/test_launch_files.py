"""Launch files: every argument declared with a description, referenced executables/configs exist.

launch/launch_ros are not on PyPI, so the files are inspected as source (AST); where the real
``launch`` is importable the launch descriptions are also built.
"""
import ast
import importlib.util
import sys
import types

import pytest
from helpers import REPO_ROOT as REPO
from helpers import setup_executables

LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
COMMON_ARGUMENTS = {"params_file", "namespace", "use_sim_time", "log_level", "device", "dds_profile"}
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
    assert executables <= set(setup_executables()), f"{path.name}: unknown executables {executables - set(setup_executables())}"
    packages = {k.value.value for c in _calls(tree, "Node") for k in c.keywords if k.arg == "package"}
    assert packages == {"mentor3ad"}
    configs = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
               and n.value.endswith(".yaml")}
    assert configs, f"{path.name} loads no config/*.yaml"
    for name in configs:
        assert (REPO / "config" / name).is_file(), f"{path.name} references missing config/{name}"
    profiles = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                and n.value.endswith(".xml")}
    assert profiles == {"fastdds_large_shm.xml"}, f"{path.name}: DDS profiles {profiles}"
    assert (REPO / "config" / "fastdds_large_shm.xml").is_file()


def _stub_launch_modules(monkeypatch, share_dir):
    """Minimal stand-ins for launch / launch_ros / ament_index so a launch file's module imports here."""
    class SetEnvironmentVariable:
        def __init__(self, name, value):
            self.name, self.value = name, value

    class Recorder:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    modules = {
        "launch": types.SimpleNamespace(LaunchDescription=Recorder),
        "launch.actions": types.SimpleNamespace(DeclareLaunchArgument=Recorder, OpaqueFunction=Recorder,
                                                SetEnvironmentVariable=SetEnvironmentVariable),
        "launch.substitutions": types.SimpleNamespace(LaunchConfiguration=Recorder),
        "launch_ros": types.SimpleNamespace(),
        "launch_ros.actions": types.SimpleNamespace(Node=Recorder),
        "ament_index_python": types.SimpleNamespace(),
        "ament_index_python.packages": types.SimpleNamespace(get_package_share_directory=lambda _: str(share_dir)),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return SetEnvironmentVariable


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_dds_profile_argument_sets_fastdds_profile_unless_user_set_one(path, monkeypatch, tmp_path):
    set_env_type = _stub_launch_modules(monkeypatch, REPO)
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_") + "_stubbed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.DDS_PROFILE == str(REPO / "config" / "fastdds_large_shm.xml")  # share/config layout
    default_arg = [a for a in module.generate_launch_description().args[0]
                   if getattr(a, "args", None) and a.args[0] == "dds_profile"]
    assert default_arg and default_arg[0].kwargs["default_value"] == module.DDS_PROFILE

    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    actions = module._dds_profile(module.DDS_PROFILE)
    assert len(actions) == 1 and isinstance(actions[0], set_env_type)
    assert (actions[0].name, actions[0].value) == ("FASTDDS_DEFAULT_PROFILES_FILE", module.DDS_PROFILE)
    assert module._dds_profile("") == []  # empty: environment left alone
    with pytest.raises(RuntimeError, match="does not exist"):
        module._dds_profile(str(tmp_path / "missing.xml"))
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "/etc/user_profile.xml")
    assert module._dds_profile(module.DDS_PROFILE) == []  # the user's profile wins


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
